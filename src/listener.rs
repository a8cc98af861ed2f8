//! The review port's listener: who may hold a socket, for how long, and who gives way.
//!
//! Hand-written because no well-kept crate does this job: hyper-util serves one connection,
//! `axum::serve` and hyper-util's `auto` server accept without bounds, and a plain
//! semaphore at `accept` (what this port had) lets anyone hold every slot with sockets that
//! never send a byte (issue 17: 130 silent sockets made every review wait 5 s and fail).
//! Capacity goes to clients that make progress:
//!
//! - A socket that has not finished its TLS handshake is *pending*. It costs little (no TLS
//!   state until its first byte arrives), has [`Timeouts::tls_handshake`] to finish, and
//!   pending sockets have an allowance of their own, [`Limits::max_pending_connections`];
//!   past it, or when the process runs out of file descriptors, the oldest pending socket
//!   is closed, never the newcomer (a real client finishes its handshake in milliseconds).
//! - A handshaken connection is *established* and counted against
//!   [`Limits::max_connections`]. When the limit is reached, the connection that has been
//!   idle longest (HTTP/1.1 with no request in flight, HTTP/2 with no open stream) is
//!   closed to make room, first among those that never sent a request (one that answered
//!   a request within the last second, or whose next request began to arrive within it,
//!   is working, and stays); a newcomer waits (within
//!   the header-read timeout) only when every connection is working.
//! - An established connection must send its first request within the header-read
//!   timeout, and each later request's headers within it once their first byte arrives;
//!   between requests it may stay idle for [`Timeouts::idle`], longer than the API server
//!   keeps a connection for reuse (90 s), so the server is not the side that closes.
//! - Accept errors (EMFILE, ENFILE, ...) are counted and logged once per streak, with a
//!   short back-off instead of a spin; accepting resumes as soon as descriptors free up.
//!
//! Figures (BENCHMARKS.md, `tests/port_limits.rs`): with 1,000 silent sockets, 300 stalled
//! handshakes and 300 idle TLS connections held and renewed, reviews on new and kept-alive
//! connections are all answered, p99 well under 1 s.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::response::Response;
use hyper::Request;
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulConnection;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;
use tower::util::BoxCloneSyncService;

/// A body up to this size is "ordinary" (see `server::ORDINARY_REVIEW_BYTES`); the HTTP
/// buffers are sized for it.
const ORDINARY_BYTES: usize = 64 * 1024;

/// How long a connection asked to close (evicted, idle, shutting down) may take to finish
/// what it has in flight before, once idle, it is dropped: an HTTP/2 client that never
/// acknowledges the GOAWAY does not keep its socket.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// A connection that answered a request this recently is working (the API server sends
/// its reviews over a few kept-alive connections), and is not closed to make room.
const EVICTABLE_AFTER: Duration = Duration::from_secs(1);

/// Back-off after a failed accept: short, so accepting resumes soon after descriptors free
/// up; long enough that a listener out of descriptors costs no CPU to speak of.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(20);

/// How long clients may take, and how long a drain may take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// To finish the TLS handshake, from `accept` (at most `header_read`).
    pub tls_handshake: Duration,
    /// To send the first request, and each request's headers once they have begun.
    pub header_read: Duration,
    /// To send the whole body, once the headers are in.
    pub body_read: Duration,
    /// Between requests on a kept-alive connection (HTTP/1.1 with no request in flight,
    /// HTTP/2 with no open stream).
    pub idle: Duration,
    /// After SIGTERM, how long connections already open keep being served as usual
    /// (a review written on one just before the signal is still answered).
    pub shutdown_grace: Duration,
    /// Then, for in-flight reviews to finish once connections are asked to close.
    pub drain: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            tls_handshake: Duration::from_secs(3),
            header_read: Duration::from_secs(10),
            body_read: Duration::from_secs(10),
            idle: Duration::from_secs(120),
            shutdown_grace: Duration::from_secs(1),
            drain: Duration::from_secs(20),
        }
    }
}

/// How much of the review port clients can take at once. With the defaults, what clients
/// can make the server hold is bounded, whatever they send: 2,048 pending sockets (little
/// before their first byte, ~20 KiB once the handshake has begun), 128 established connections (at
/// most 64 KiB of HTTP/1.1 buffer or 256 KiB of HTTP/2 flow-control window each: 8 or
/// 32 MiB), 128 ordinary bodies (8 MiB) and 4 large ones (16 MiB) being read and parsed:
/// well under the Deployment's 128 Mi limit with the caches of a large cluster beside them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Established (TLS-handshaken) connections. At the limit, the longest-idle one is
    /// closed to make room.
    pub max_connections: usize,
    /// Sockets accepted whose TLS handshake has not finished. At the limit, the oldest is
    /// closed to make room.
    pub max_pending_connections: usize,
    /// Ordinary reviews (up to 64 KiB) read and parsed at once. Lookups are not counted: a
    /// slow API server must not hold up plain claims.
    pub max_inflight_reviews: usize,
    /// Larger reviews (up to the 4 MiB limit) read and parsed at once.
    pub max_inflight_large_reviews: usize,
    /// Concurrent HTTP/2 streams per connection.
    pub max_h2_streams: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 128,
            max_pending_connections: 2048,
            max_inflight_reviews: 128,
            max_inflight_large_reviews: 4,
            max_h2_streams: 32,
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

/// The listener's metrics, registered with the others.
#[derive(Clone, Debug)]
pub struct ListenerMetrics {
    pending: Gauge,
    established: Gauge,
    accept_errors: Counter,
    closed: Family<ReasonLabels, Counter>,
}

impl ListenerMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let connections = Family::<StateLabels, Gauge>::default();
        registry.register(
            "connections",
            "Connections of the review port: pending (TLS handshake not finished, bounded by --max-pending-connections) and established (bounded by --max-connections)",
            connections.clone(),
        );
        let pending = connections
            .get_or_create(&StateLabels { state: "pending" })
            .clone();
        let established = connections
            .get_or_create(&StateLabels {
                state: "established",
            })
            .clone();
        let accept_errors = Counter::default();
        registry.register(
            "accept_errors",
            "Failed accepts on the review port (EMFILE: out of file descriptors, and the like); the listener backs off briefly and retries",
            accept_errors.clone(),
        );
        let closed = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "connections_closed",
            "Connections of the review port the server closed, by reason (handshake-timeout, handshake-failed, pending-evicted, header-timeout, idle-timeout, idle-evicted, no-slot)",
            closed.clone(),
        );
        ListenerMetrics {
            pending,
            established,
            accept_errors,
            closed,
        }
    }

    fn closed(&self, reason: &'static str) {
        self.closed.get_or_create(&ReasonLabels { reason }).inc();
    }
}

/// What one established connection is doing, shared by its task, its requests (HTTP/2
/// serves them on tasks of their own) and the eviction that may pick it.
struct Activity {
    epoch: Instant,
    established_ms: u64,
    in_flight: AtomicUsize,
    served: AtomicBool,
    /// When the last request ended (ms since `epoch`).
    idle_since_ms: AtomicU64,
    /// When the first byte arrived since then (ms since `epoch`, plus one; 0: none yet).
    bytes_since_idle_ms: AtomicU64,
    /// Whether bytes read while idle start the header-read clock (HTTP/1.1; an HTTP/2
    /// client may ping an idle connection).
    watch_idle_bytes: bool,
    evicted: CancellationToken,
    wake: Notify,
}

impl Activity {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn at(&self, ms: u64) -> Instant {
        self.epoch + Duration::from_millis(ms)
    }

    fn is_idle(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0
    }

    /// When the connection, idle, has waited too long, and why; `None` while a request is
    /// in flight (the handler's body-read timeout applies then).
    fn deadline(&self, timeouts: &Timeouts) -> Option<(Instant, &'static str)> {
        if !self.is_idle() {
            return None;
        }
        let bytes = self.bytes_since_idle_ms.load(Ordering::Acquire);
        if bytes != 0 {
            return Some((self.at(bytes - 1) + timeouts.header_read, "header-timeout"));
        }
        if !self.served.load(Ordering::Acquire) {
            return Some((
                self.at(self.established_ms) + timeouts.header_read,
                "header-timeout",
            ));
        }
        Some((
            self.at(self.idle_since_ms.load(Ordering::Acquire)) + timeouts.idle,
            "idle-timeout",
        ))
    }
}

/// A request in flight on a connection; the connection is idle again when the last one ends.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn begin(activity: &Arc<Activity>) -> InFlight {
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(Arc::clone(activity))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let activity = &self.0;
        activity.served.store(true, Ordering::Release);
        activity
            .idle_since_ms
            .store(activity.now_ms(), Ordering::Release);
        activity.bytes_since_idle_ms.store(0, Ordering::Release);
        activity.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What the port serves (`server::ReviewPort`, or any router), boxed: the listener stays
/// one plain type.
pub type PortService = BoxCloneSyncService<Request<Incoming>, Response, Infallible>;

/// The service of one connection: the port's, with each request counted in flight.
#[derive(Clone)]
struct Tracked {
    service: PortService,
    activity: Arc<Activity>,
}

impl hyper::service::Service<Request<Incoming>> for Tracked {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let in_flight = InFlight::begin(&self.activity);
        let response = self.service.clone().oneshot(request);
        Box::pin(async move {
            let response = response.await;
            drop(in_flight);
            response
        })
    }
}

/// The TLS stream of a connection, noting the first byte that arrives while it is idle
/// (the start of the next request's headers, over HTTP/1.1).
struct Watched<T> {
    inner: T,
    activity: Arc<Activity>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let activity = &self.activity;
        if activity.watch_idle_bytes
            && buf.filled().len() > before
            && activity.is_idle()
            && activity.bytes_since_idle_ms.load(Ordering::Acquire) == 0
        {
            activity
                .bytes_since_idle_ms
                .store(activity.now_ms() + 1, Ordering::Release);
            activity.wake.notify_one();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Every socket of the port, pending or established.
struct Connections {
    tables: Mutex<Tables>,
    slot_freed: Notify,
    limits: Limits,
    metrics: ListenerMetrics,
    epoch: Instant,
}

#[derive(Default)]
struct Tables {
    next_id: u64,
    /// Oldest first (ids grow).
    pending: BTreeMap<u64, CancellationToken>,
    established: HashMap<u64, Arc<Activity>>,
    /// The most sockets held since memory was last handed back.
    busiest: usize,
    /// Memory was handed back while a flood ebbed and sockets are still held: it is handed
    /// back once more when the last has gone.
    ebbing: bool,
}

impl Tables {
    fn held(&self) -> usize {
        self.pending.len() + self.established.len()
    }
}

impl Connections {
    fn lock(&self) -> MutexGuard<'_, Tables> {
        // A panic while holding the lock leaves the tables consistent (each change is one
        // insert or remove), so a poisoned lock is still usable.
        self.tables
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A new socket, pending; the oldest pending one gives way if the allowance is used up.
    fn enter_pending(&self) -> (u64, CancellationToken) {
        let mut tables = self.lock();
        while tables.pending.len() >= self.limits.max_pending_connections.max(1) {
            if !self.evict_oldest_pending_locked(&mut tables) {
                break;
            }
        }
        let id = tables.next_id;
        tables.next_id += 1;
        let evicted = CancellationToken::new();
        tables.pending.insert(id, evicted.clone());
        tables.busiest = tables.busiest.max(tables.held());
        self.metrics.pending.inc();
        (id, evicted)
    }

    fn evict_oldest_pending(&self) -> bool {
        self.evict_oldest_pending_locked(&mut self.lock())
    }

    fn evict_oldest_pending_locked(&self, tables: &mut Tables) -> bool {
        let Some((_, evicted)) = tables.pending.pop_first() else {
            return false;
        };
        self.evicted(&evicted, &self.metrics.pending, "pending-evicted");
        true
    }

    /// Tells the task of a socket taken out of the tables to close it, and counts it.
    fn evicted(&self, evicted: &CancellationToken, held: &Gauge, reason: &'static str) {
        evicted.cancel();
        held.dec();
        self.metrics.closed(reason);
    }

    fn leave_pending(&self, id: u64) {
        let mut tables = self.lock();
        if tables.pending.remove(&id).is_some() {
            self.metrics.pending.dec();
        }
        self.after_leaving(tables);
    }

    /// As a flood of sockets goes (each time it is down to a quarter of the most held, if
    /// that was many, and once more when the last has gone), hands the memory their tasks
    /// and buffers used back to the system: glibc would keep it for reuse, and RSS is what
    /// the memory limit counts. Without the last trim the final quarter's memory stayed held:
    /// after the no-progress flood of `tests/port_limits.rs`, RSS 26.0 MiB against 13.6 idle
    /// (18.4 with it).
    fn after_leaving(&self, mut tables: MutexGuard<'_, Tables>) {
        let held = tables.held();
        let ebbed = tables.busiest >= 256 && held <= tables.busiest / 4;
        let gone = tables.ebbing && held == 0;
        if !(ebbed || gone) {
            return;
        }
        tables.busiest = held;
        tables.ebbing = held > 0;
        drop(tables);
        crate::memory::trim();
    }

    /// Moves a handshaken socket from pending to established, closing the longest-idle
    /// connection if there is no room; waits (until `deadline`) while every connection is
    /// busy. `None`: no room in time, or evicted while pending.
    async fn establish(
        &self,
        id: u64,
        evicted: &CancellationToken,
        deadline: Instant,
        watch_idle_bytes: bool,
    ) -> Option<Arc<Activity>> {
        loop {
            let freed = self.slot_freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            {
                let mut tables = self.lock();
                // Gone from the table: evicted meanwhile.
                tables.pending.remove(&id)?;
                let room = tables.established.len() < self.limits.max_connections.max(1)
                    || self.evict_idle_locked(&mut tables);
                if room {
                    self.metrics.pending.dec();
                    self.metrics.established.inc();
                    let now_ms = self.epoch.elapsed().as_millis() as u64;
                    let activity = Arc::new(Activity {
                        epoch: self.epoch,
                        established_ms: now_ms,
                        in_flight: AtomicUsize::new(0),
                        served: AtomicBool::new(false),
                        // Idle since established: the newest is the last to give way.
                        idle_since_ms: AtomicU64::new(now_ms),
                        bytes_since_idle_ms: AtomicU64::new(0),
                        watch_idle_bytes,
                        evicted: CancellationToken::new(),
                        wake: Notify::new(),
                    });
                    tables.established.insert(id, Arc::clone(&activity));
                    return Some(activity);
                }
                tables.pending.insert(id, evicted.clone());
            }
            // Every connection has a request in flight: wait for one to end or close. A
            // connection going idle does not notify, so look again now and then.
            tokio::select! {
                () = freed => {}
                () = tokio::time::sleep(Duration::from_millis(50)) => {}
                () = evicted.cancelled() => return None,
                () = tokio::time::sleep_until(deadline) => {
                    self.leave_pending(id);
                    self.metrics.closed("no-slot");
                    return None;
                }
            }
        }
    }

    /// Closes the established connection that has been idle longest, preferring those
    /// that never sent a request; false if every one is busy (a request in flight, or one
    /// that began to arrive or was answered less than [`EVICTABLE_AFTER`] ago).
    fn evict_idle_locked(&self, tables: &mut Tables) -> bool {
        let now_ms = self.epoch.elapsed().as_millis() as u64;
        let recent = EVICTABLE_AFTER.as_millis() as u64;
        let victim = tables
            .established
            .iter()
            .filter(|(_, activity)| {
                // A request that began to arrive this recently is on its way (one whose
                // headers trickle in for longer gives way, as an idle connection does).
                let arriving = match activity.bytes_since_idle_ms.load(Ordering::Acquire) {
                    0 => false,
                    since => now_ms.saturating_sub(since - 1) < recent,
                };
                activity.is_idle()
                    && !arriving
                    && (!activity.served.load(Ordering::Acquire)
                        || now_ms.saturating_sub(activity.idle_since_ms.load(Ordering::Acquire))
                            >= recent)
            })
            .min_by_key(|(_, activity)| {
                (
                    activity.served.load(Ordering::Acquire),
                    activity.idle_since_ms.load(Ordering::Acquire),
                )
            })
            .map(|(id, _)| *id);
        let Some(victim) = victim else {
            return false;
        };
        if let Some(activity) = tables.established.remove(&victim) {
            self.evicted(&activity.evicted, &self.metrics.established, "idle-evicted");
        }
        true
    }

    fn leave_established(&self, id: u64) {
        let mut tables = self.lock();
        if tables.established.remove(&id).is_some() {
            self.metrics.established.dec();
        }
        self.slot_freed.notify_waiters();
        self.after_leaving(tables);
    }
}

/// What every connection task shares.
struct Port {
    service: PortService,
    acceptor: TlsAcceptor,
    http1: http1::Builder,
    http2: http2::Builder<TokioExecutor>,
    connections: Connections,
    timeouts: Timeouts,
    /// Cancelled when the drain asks every connection to close.
    close: CancellationToken,
}

/// Serves `service` over TLS until `shutdown` turns true, then drains: no new connections,
/// open ones served as usual for `shutdown_grace`, then asked to close (HTTP/1.1 after the
/// response in progress, HTTP/2 with GOAWAY), idle ones dropped within a second, and
/// every connection task awaited for up to `drain`.
#[allow(clippy::too_many_arguments)]
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    service: PortService,
    timeouts: Timeouts,
    limits: Limits,
    metrics: ListenerMetrics,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut http1 = http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        // The header-read timeout is this listener's (it tells idle from slow).
        .header_read_timeout(None)
        // Headers must fit (they are small); the body is read by the handler in chunks.
        .max_buf_size(ORDINARY_BYTES)
        .keep_alive(true);
    let mut http2 = http2::Builder::new(TokioExecutor::new());
    http2
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_h2_streams)
        // What a client may send ahead of our reading it: one ordinary review per stream,
        // four per connection (the default would be 1 MiB each).
        .initial_stream_window_size(ORDINARY_BYTES as u32)
        .initial_connection_window_size(4 * ORDINARY_BYTES as u32)
        .max_header_list_size(ORDINARY_BYTES as u32);
    let port = Arc::new(Port {
        service,
        acceptor: TlsAcceptor::from(tls),
        http1,
        http2,
        connections: Connections {
            tables: Mutex::new(Tables::default()),
            slot_freed: Notify::new(),
            limits,
            metrics: metrics.clone(),
            epoch: Instant::now(),
        },
        timeouts,
        close: CancellationToken::new(),
    });
    let tasks = TaskTracker::new();
    let mut failures = AcceptFailures::default();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stopped(&mut shutdown) => break,
        };
        match accepted {
            Ok((stream, peer)) => {
                failures.recovered();
                let _ = stream.set_nodelay(true);
                tasks.spawn(connection(stream, peer, Arc::clone(&port)));
            }
            Err(error) => {
                metrics.accept_errors.inc();
                failures.failed(&error);
                if out_of_descriptors(&error) {
                    // The cheapest socket to give up is the oldest one still pending.
                    port.connections.evict_oldest_pending();
                }
                tokio::select! {
                    () = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                    () = stopped(&mut shutdown) => break,
                }
            }
        }
    }
    drop(listener);
    tasks.close();
    tokio::time::sleep(timeouts.shutdown_grace).await;
    port.close.cancel();
    tokio::select! {
        () = tasks.wait() => tracing::info!("all connections drained"),
        () = tokio::time::sleep(timeouts.drain) => tracing::warn!("drain timeout: closing the remaining connections"),
    }
}

fn out_of_descriptors(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// One log line when accepting starts failing, one every 10 s while it goes on, and one
/// when it works again: an exhausted descriptor table fails thousands of accepts.
#[derive(Default)]
struct AcceptFailures {
    streak: u64,
    since: Option<Instant>,
    logged: Option<Instant>,
}

impl AcceptFailures {
    fn failed(&mut self, error: &io::Error) {
        self.streak += 1;
        let now = Instant::now();
        let since = *self.since.get_or_insert(now);
        if self
            .logged
            .is_none_or(|logged| now - logged >= Duration::from_secs(10))
        {
            self.logged = Some(now);
            tracing::warn!(
                %error,
                failures = self.streak,
                for_ms = (now - since).as_millis() as u64,
                "cannot accept connections on the review port; retrying",
            );
        }
    }

    fn recovered(&mut self) {
        if self.streak == 0 {
            return;
        }
        let since = self.since.map(|since| since.elapsed()).unwrap_or_default();
        tracing::warn!(
            failures = self.streak,
            for_ms = since.as_millis() as u64,
            "accepting connections on the review port again",
        );
        *self = AcceptFailures::default();
    }
}

/// One accepted socket. Until its first byte it is a small task holding the socket and
/// no TLS state (a thousand silent sockets cost a few MiB); the handshake and the
/// connection, tens of KiB, are allocated when that byte arrives.
async fn connection(stream: TcpStream, peer: SocketAddr, port: Arc<Port>) {
    let connections = &port.connections;
    let accepted = Instant::now();
    let (id, evicted) = connections.enter_pending();
    let deadline = accepted + port.timeouts.tls_handshake.min(port.timeouts.header_read);
    tokio::select! {
        readable = stream.readable() => {
            if readable.is_err() {
                connections.leave_pending(id);
                return;
            }
        }
        () = tokio::time::sleep_until(deadline) => {
            connections.leave_pending(id);
            connections.metrics.closed("handshake-timeout");
            return;
        }
        // Nor does a silent socket delay the drain.
        () = port.close.cancelled() => {
            connections.leave_pending(id);
            return;
        }
        () = evicted.cancelled() => {
            connections.after_leaving(connections.lock());
            return;
        }
    }
    Box::pin(handshake_and_serve(
        stream, peer, id, evicted, accepted, deadline, port,
    ))
    .await;
}

async fn handshake_and_serve(
    stream: TcpStream,
    peer: SocketAddr,
    id: u64,
    evicted: CancellationToken,
    accepted: Instant,
    deadline: Instant,
    port: Arc<Port>,
) {
    let connections = &port.connections;
    let metrics = &connections.metrics;
    let tls_stream = tokio::select! {
        handshake = tokio::time::timeout_at(deadline, port.acceptor.accept(stream)) => match handshake {
            Ok(Ok(tls_stream)) => tls_stream,
            Ok(Err(error)) => {
                tracing::debug!(%peer, %error, "TLS handshake failed");
                connections.leave_pending(id);
                metrics.closed("handshake-failed");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "TLS handshake timed out");
                connections.leave_pending(id);
                metrics.closed("handshake-timeout");
                return;
            }
        },
        () = evicted.cancelled() => return,
    };
    // The protocol is the one ALPN agreed on (the server offers h2 and http/1.1): served
    // by hyper's own connection of that protocol, without hyper-util's `auto` reading the
    // first bytes to guess it. A client that asked for no protocol speaks HTTP/1.1: h2
    // over TLS requires ALPN (RFC 9113 §3.2).
    let h2 = tls_stream.get_ref().1.alpn_protocol() == Some(b"h2".as_slice());
    let Some(activity) = connections
        .establish(id, &evicted, accepted + port.timeouts.header_read, !h2)
        .await
    else {
        return;
    };
    let service = Tracked {
        service: port.service.clone(),
        activity: Arc::clone(&activity),
    };
    let io = TokioIo::new(Watched {
        inner: tls_stream,
        activity: Arc::clone(&activity),
    });
    let result = if h2 {
        supervise(port.http2.serve_connection(io, service), &activity, &port).await
    } else {
        supervise(port.http1.serve_connection(io, service), &activity, &port).await
    };
    connections.leave_established(id);
    if let Err(error) = result {
        tracing::debug!(%peer, %error, "connection ended with an error");
    }
}

/// Serves one established connection until it ends; closes it when it stays idle too
/// long, when it is evicted, or when the drain begins (gracefully: HTTP/1.1 after the
/// response in progress, HTTP/2 with GOAWAY; dropped once idle after [`CLOSE_GRACE`]).
async fn supervise<C: GracefulConnection>(
    connection: C,
    activity: &Activity,
    port: &Port,
) -> Result<(), C::Error> {
    tokio::pin!(connection);
    let mut closing: Option<Instant> = None;
    loop {
        let deadline = match closing {
            Some(at) => at,
            None => activity
                .deadline(&port.timeouts)
                // A request in flight: look again after a while.
                .map_or_else(|| Instant::now() + port.timeouts.header_read, |(at, _)| at),
        };
        tokio::select! {
            result = connection.as_mut() => return result,
            () = port.close.cancelled(), if closing.is_none() => {
                connection.as_mut().graceful_shutdown();
                closing = Some(Instant::now() + CLOSE_GRACE);
            }
            () = activity.evicted.cancelled(), if closing.is_none() => {
                connection.as_mut().graceful_shutdown();
                closing = Some(Instant::now() + CLOSE_GRACE);
            }
            () = activity.wake.notified() => {}
            () = tokio::time::sleep_until(deadline) => {
                if closing.is_some() {
                    if activity.is_idle() {
                        return Ok(());
                    }
                    closing = Some(Instant::now() + Duration::from_millis(100));
                } else if let Some((at, reason)) = activity.deadline(&port.timeouts)
                    && at <= Instant::now()
                {
                    port.connections.metrics.closed(reason);
                    if reason == "header-timeout" {
                        // Half a request's headers (or none): nothing to finish.
                        return Ok(());
                    }
                    connection.as_mut().graceful_shutdown();
                    closing = Some(Instant::now() + CLOSE_GRACE);
                }
            }
        }
    }
}

/// Resolves once the shutdown flag is set (or its sender is gone).
pub(crate) async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    // Map the borrowed value away at once: the guard must not live across an await.
    let _ = shutdown.wait_for(|stop| *stop).await.map(|_| ());
}

/// Raises the soft limit on open files to the hard limit (as Go programs do at start):
/// each socket of the review port is a descriptor, and a soft limit of 1,024 would be
/// the first bound a flood of sockets meets. Returns the limit now in force.
pub fn raise_open_file_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return None;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                return Some(raised.rlim_cur);
            }
        }
    }
    Some(limit.rlim_cur)
}
