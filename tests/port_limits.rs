//! The review port is bounded: the real binary, flooded with more connections and more
//! concurrent 4 MiB bodies than its limits allow, stays within a stated memory, keeps
//! answering the reviews of a client that behaves like the API server, and exits 0 on
//! SIGTERM afterwards. (A test binary of its own: the flood takes both cores for a while.)

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use common::binary::*;
use common::*;

/// What the default limits let a flood add to the idle process: 4 large bodies of 4 MiB,
/// 128 ordinary ones of 64 KiB, and 128 connections' TLS and HTTP buffers (see README,
/// Security); and the peak that leaves under the Deployment's 128 Mi limit.
const STATED_FLOOD_GROWTH_MIB: u64 = 48;
const STATED_PEAK_RSS_MIB: u64 = 96;
const FLOODERS: usize = 320;

/// The floods take both cores and measure latency, CPU and memory: one at a time, whatever
/// the test harness's thread count.
static ONE_FLOOD_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// A review just under the 4 MiB limit: a plain claim whose oldObject carries padding.
fn big_review() -> Vec<u8> {
    let mut review = create(claim("big", None, "1Gi"));
    review["request"]["oldObject"] = json!({"padding": "x".repeat(4 * 1024 * 1024 - 4096)});
    serde_json::to_vec(&review).expect("json")
}

fn request(body: &[u8], keep_alive: bool) -> Vec<u8> {
    let connection = if keep_alive { "keep-alive" } else { "close" };
    let mut request = format!(
        "POST /validate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: {connection}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    request
}

/// Reads one HTTP/1.1 response with a Content-Length; returns its status.
async fn read_response<S: AsyncReadExt + Unpin>(stream: &mut S) -> Option<u16> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await.ok()? == 0 {
            return None;
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await.ok()?;
    Some(status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_beyond_the_limits_is_held_in_bounded_memory_while_reviews_are_answered() {
    let _one_flood = ONE_FLOOD_AT_A_TIME.lock().await;
    let (mut webhook, _log) = start_logged().await;
    let pid = webhook.child.id();
    let config = tls_client(&webhook.ca(), &[&rustls::version::TLS13]);
    let connect = |config: Arc<rustls::ClientConfig>, addr: String| async move {
        let tcp = TcpStream::connect(&addr).await.ok()?;
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").ok()?;
        tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .ok()
    };

    // The API server's client, on a thread and runtime of its own as the API server is a
    // process of its own (the flood's tasks must not delay it), its kept-alive connection
    // open and answered before the flood, as a real one would be.
    let (first_answered, answered_once) = tokio::sync::oneshot::channel();
    let api_server = api_server_client(
        webhook.addr.clone(),
        webhook.ca(),
        ApiServerLoad {
            for_how_long: Duration::from_secs(9),
            new_connections: false,
            pause: Duration::from_millis(100),
            first_answered: Some(first_answered),
        },
    );
    answered_once
        .await
        .expect("the API server's first review is answered");
    let idle_rss = status_kib(pid, "VmRSS:");
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, answered) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let big = Arc::new(big_review());
    let flooders: Vec<_> = (0..FLOODERS)
        .map(|_| {
            let (config, addr, big) = (Arc::clone(&config), webhook.addr.clone(), Arc::clone(&big));
            let (stop, sent, answered) =
                (Arc::clone(&stop), Arc::clone(&sent), Arc::clone(&answered));
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let Ok(Some(mut tls)) = tokio::time::timeout(
                        Duration::from_secs(5),
                        connect(Arc::clone(&config), addr.clone()),
                    )
                    .await
                    else {
                        continue;
                    };
                    while !stop.load(Ordering::Relaxed) {
                        sent.fetch_add(1, Ordering::Relaxed);
                        if tls.write_all(&request(&big, true)).await.is_err() {
                            break;
                        }
                        match read_response(&mut tls).await {
                            Some(_) => answered.fetch_add(1, Ordering::Relaxed),
                            None => break,
                        };
                    }
                }
            })
        })
        .collect();

    // The API server's reviews during the flood: every one answered, allowed.
    let mut peak_connections = 0;
    // The established connections, sampled beside the API server's reviews.
    let sampler = {
        let (admin, stop) = (webhook.admin.clone(), Arc::clone(&stop));
        tokio::spawn(async move {
            let mut peak = 0;
            while !stop.load(Ordering::Relaxed) {
                peak = peak.max(gauge(&admin, "established").await);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            peak
        })
    };
    while !api_server.is_finished() {
        peak_connections = peak_connections.max(sockets_of(pid));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The API server's reviews during the flood: every one answered, allowed.
    let (latencies, reconnects) = api_server.await.expect("the API server's client");
    let (ok, slowest) = (latencies.len(), percentile(&latencies, 1.0));
    stop.store(true, Ordering::Relaxed);
    let peak_established = sampler.await.expect("sampler");
    let peak_rss = status_kib(pid, "VmHWM:");
    let evicted = metric(
        &webhook.admin,
        "pvc_clone_guard_connections_closed_total{reason=\"idle-evicted\"}",
    )
    .await;
    for flooder in flooders {
        flooder.abort();
    }
    eprintln!(
        "[limits] {FLOODERS} flooding clients, {} bodies of 4 MiB sent, {} answered; \
         {ok} API-server reviews answered (slowest {slowest:?}, {reconnects} kept-alive reconnects; \
         closed to make room: {evicted}); sockets held by the server at most {peak_connections}, established at most {peak_established}; \
         RSS idle {} MiB, peak {} MiB",
        sent.load(Ordering::Relaxed),
        answered.load(Ordering::Relaxed),
        idle_rss / 1024,
        peak_rss / 1024
    );
    assert!(
        ok >= 10,
        "the API server's reviews were answered during the flood"
    );
    assert!(
        answered.load(Ordering::Relaxed) > 8,
        "the flood was served, not just refused"
    );
    // Sockets still in their handshake no longer take a slot (issue 17): what
    // --max-connections bounds is the established connections, and the pending ones have
    // an allowance of their own.
    assert!(
        peak_established <= 128,
        "at most --max-connections established ({peak_established})"
    );
    assert!(
        peak_connections <= 128 + 2048 + 8,
        "at most --max-connections established and --max-pending-connections pending, plus the listeners ({peak_connections} sockets)"
    );
    assert!(
        peak_rss.saturating_sub(idle_rss) / 1024 <= STATED_FLOOD_GROWTH_MIB,
        "the flood added {} MiB, over the stated {STATED_FLOOD_GROWTH_MIB} MiB",
        peak_rss.saturating_sub(idle_rss) / 1024
    );
    assert!(
        peak_rss / 1024 <= STATED_PEAK_RSS_MIB,
        "peak RSS {} MiB over the stated {STATED_PEAK_RSS_MIB} MiB",
        peak_rss / 1024
    );

    assert_eq!(
        webhook.terminate_and_wait().await,
        Some(0),
        "exit status after the flood"
    );
}

/// Sockets the server process holds: the connections it has accepted (plus its two
/// listeners and a few of its own), not those still waiting in the listen backlog.
fn sockets_of(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| {
                    std::fs::read_link(e.path())
                        .is_ok_and(|target| target.to_string_lossy().starts_with("socket:"))
                })
                .count()
        })
        .unwrap_or(0)
}

/// The value of `pvc_clone_guard_connections{state="..."}` on the admin port (0 if absent).
async fn gauge(admin: &str, state: &str) -> u64 {
    metric(
        admin,
        &format!("pvc_clone_guard_connections{{state=\"{state}\"}}"),
    )
    .await
}

/// The value of one series on the admin port's /metrics (0 if absent).
async fn metric(admin: &str, series: &str) -> u64 {
    let (_, text) = admin_get(admin, "/metrics").await;
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse::<f64>().ok())
        .map_or(0, |value| value as u64)
}

/// CPU time (user + system) the process has used, in clock ticks (1/100 s).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces): state is field 3, utime 14.
    let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
    field(14).unwrap_or(0) + field(15).unwrap_or(0)
}

/// Raises this test process's own open-file limit: the flood needs a descriptor a socket.
fn raise_own_open_files() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        limit.rlim_cur = limit.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
    }
    assert!(
        limit.rlim_cur >= 4096,
        "the test needs at least 4096 open files (hard limit {})",
        limit.rlim_max
    );
}

/// The flood of sockets that make no progress, each held until the server closes it and
/// then opened again.
struct Flood {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Connections opened, by kind: silent, stalled handshake, idle HTTP/1.1, idle HTTP/2.
    opened: [Arc<AtomicUsize>; 4],
}

impl Flood {
    fn start(
        addr: &str,
        ca: &std::path::Path,
        silent: usize,
        stalled: usize,
        idle: usize,
    ) -> Flood {
        let stop = Arc::new(AtomicBool::new(false));
        let opened: [Arc<AtomicUsize>; 4] = Default::default();
        let mut tasks = Vec::new();
        // The flood's own TLS costs as little as it can (no certificate check, one
        // ClientHello for all), so that the test measures the server, not its client.
        let h1 = unverified_client(&[b"http/1.1"]);
        let h2 = unverified_client(&[b"h2"]);
        let hello = Arc::new(client_hello(Arc::clone(&h1)));
        let _ = ca;
        for n in 0..silent + stalled + idle {
            let (addr, stop, hello) = (addr.to_owned(), Arc::clone(&stop), Arc::clone(&hello));
            let kind = if n < silent {
                0
            } else if n < silent + stalled {
                1
            } else if (n - silent - stalled).is_multiple_of(2) {
                2
            } else {
                3
            };
            let counter = Arc::clone(&opened[kind]);
            let config = if kind == 3 {
                Arc::clone(&h2)
            } else {
                Arc::clone(&h1)
            };
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let Ok(tcp) = TcpStream::connect(&addr).await else {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                    match kind {
                        0 => hold_until_closed(tcp).await,
                        1 => stall_in_handshake(tcp, &hello).await,
                        2 => idle_http1(tcp, Arc::clone(&config)).await,
                        _ => idle_http2(tcp, Arc::clone(&config)).await,
                    }
                    if kind >= 2 {
                        // Renewed, but not at the client's full speed: the excess over
                        // --max-connections would otherwise keep evicting each other.
                        tokio::time::sleep(Duration::from_millis(250)).await;
                    }
                }
            }));
        }
        Flood {
            stop,
            tasks,
            opened,
        }
    }

    fn opened(&self) -> [usize; 4] {
        [0, 1, 2, 3].map(|k| self.opened[k].load(Ordering::Relaxed))
    }

    /// Stops renewing, and closes every socket of the flood.
    async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for task in &self.tasks {
            task.abort();
        }
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

fn tls_client_alpn(ca: &std::path::Path, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let mut config = (*tls_client(ca, &[&rustls::version::TLS13])).clone();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// Reads (and drops) what the server sends until it closes the socket.
async fn hold_until_closed<S: AsyncReadExt + Unpin>(mut stream: S) {
    let mut buffer = [0u8; 4096];
    while let Ok(n) = stream.read(&mut buffer).await {
        if n == 0 {
            break;
        }
    }
}

/// The bytes of a ClientHello of `config`.
fn client_hello(config: Arc<rustls::ClientConfig>) -> Vec<u8> {
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
    let mut client = rustls::ClientConnection::new(config, name).expect("client");
    let mut hello = Vec::new();
    while client.wants_write() {
        client.write_tls(&mut hello).expect("client hello");
    }
    hello
}

/// Sends a ClientHello, then nothing: the server has answered and waits for the rest.
async fn stall_in_handshake(mut tcp: TcpStream, hello: &[u8]) {
    if tcp.write_all(hello).await.is_ok() {
        hold_until_closed(tcp).await;
    }
}

/// A TLS client that accepts any certificate: the flood's, which only needs to finish
/// handshakes.
fn unverified_client(alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    #[derive(Debug)]
    struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);
    impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
        fn verify_server_cert(
            &self,
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &[rustls::pki_types::CertificateDer<'_>],
            _: &rustls::pki_types::ServerName<'_>,
            _: &[u8],
            _: rustls::pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            _: &[u8],
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
        }
        fn verify_tls13_signature(
            &self,
            _: &[u8],
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

async fn tls_connect(
    tcp: TcpStream,
    config: Arc<rustls::ClientConfig>,
) -> Option<tokio_rustls::client::TlsStream<TcpStream>> {
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").ok()?;
    tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .ok()
}

/// Finishes the handshake, then sends no request.
async fn idle_http1(tcp: TcpStream, config: Arc<rustls::ClientConfig>) {
    if let Some(tls) = tls_connect(tcp, config).await {
        hold_until_closed(tls).await;
    }
}

/// Finishes the handshake and HTTP/2's own (preface, SETTINGS), then opens no stream.
async fn idle_http2(tcp: TcpStream, config: Arc<rustls::ClientConfig>) {
    let Some(tls) = tls_connect(tcp, config).await else {
        return;
    };
    let Ok((sender, connection)) = hyper::client::conn::http2::handshake::<_, _, String>(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    else {
        return;
    };
    let _ = connection.await;
    drop(sender);
}

/// [`api_server_reviews`] on a thread and runtime of its own, as the API server is a process
/// of its own: a flood's tasks on the test's runtime do not delay it.
fn api_server_client(
    addr: String,
    ca: std::path::PathBuf,
    load: ApiServerLoad,
) -> tokio::task::JoinHandle<(Vec<Duration>, usize)> {
    tokio::task::spawn_blocking(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(api_server_reviews(&addr, &ca, load))
    })
}

/// How the API server's client sends its reviews.
struct ApiServerLoad {
    for_how_long: Duration,
    /// Every other review on a new TLS connection; otherwise all on the kept-alive one.
    new_connections: bool,
    /// Between two reviews.
    pause: Duration,
    /// Told once the first review is answered.
    first_answered: Option<tokio::sync::oneshot::Sender<()>>,
}

/// A client that behaves like the API server: reviews on a kept-alive connection (a new
/// one when the server closed the old one while it was idle, as Go's transport does) and,
/// if asked, every other review on a new TLS connection. Returns the latency of every
/// review, in order, and how often the kept-alive connection was opened again; panics on
/// any review not answered with 200.
async fn api_server_reviews(
    addr: &str,
    ca: &std::path::Path,
    mut load: ApiServerLoad,
) -> (Vec<Duration>, usize) {
    let config = tls_client_alpn(ca, &[b"http/1.1"]);
    let plain = serde_json::to_vec(&create(claim("plain", None, "1Gi"))).expect("json");
    let mut latencies = Vec::new();
    let mut reconnects = 0;
    let mut kept: Option<tokio_rustls::client::TlsStream<TcpStream>> = None;
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed() < load.for_how_long {
        n += 1;
        let begun = Instant::now();
        let new_connection = load.new_connections && n.is_multiple_of(2);
        let status = tokio::time::timeout(Duration::from_secs(5), async {
            if new_connection {
                let tcp = TcpStream::connect(addr).await.ok()?;
                let mut tls = tls_connect(tcp, Arc::clone(&config)).await?;
                tls.write_all(&request(&plain, false)).await.ok()?;
                return read_response(&mut tls).await;
            }
            // A reused connection the server closed while idle: Go's transport retries
            // such a request on a new connection (nothing of it was read).
            for attempt in 0..2 {
                if kept.is_none() {
                    let tcp = TcpStream::connect(addr).await.ok()?;
                    kept = Some(tls_connect(tcp, Arc::clone(&config)).await?);
                    if attempt > 0 || n > 1 {
                        reconnects += 1;
                    }
                }
                let tls = kept.as_mut()?;
                if tls.write_all(&request(&plain, true)).await.is_ok()
                    && let Some(status) = read_response(tls).await
                {
                    return Some(status);
                }
                kept = None;
            }
            None
        })
        .await;
        let status = status.ok().flatten();
        assert_eq!(
            status,
            Some(200),
            "review {n} ({}) answered after {:?}",
            if new_connection {
                "new connection"
            } else {
                "kept-alive connection"
            },
            begun.elapsed()
        );
        latencies.push(begun.elapsed());
        if let Some(first_answered) = load.first_answered.take() {
            let _ = first_answered.send(());
        }
        tokio::time::sleep(load.pause).await;
    }
    (latencies, reconnects)
}

fn percentile(latencies: &[Duration], p: f64) -> Duration {
    let mut sorted = latencies.to_vec();
    sorted.sort();
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

/// Silent sockets, stalled handshakes and idle TLS connections, more of each than the
/// limits, held and renewed: the API server's reviews are all answered, RSS stays within
/// its bound, everything is released when the flood stops, and SIGTERM exits 0.
const SILENT: usize = 1000;
const STALLED: usize = 300;
const IDLE: usize = 300;
/// What the flood may add to the idle process: pending sockets (little before their first
/// byte, ~20 KiB once their handshake has begun) and 128 established connections' TLS and
/// HTTP buffers (measured: 23 MiB for this flood; README, Security).
const STATED_IDLE_FLOOD_GROWTH_MIB: u64 = 32;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_that_make_no_progress_do_not_hold_the_port() {
    let _one_flood = ONE_FLOOD_AT_A_TIME.lock().await;
    raise_own_open_files();
    let (mut webhook, _log) = start_logged().await;
    let pid = webhook.child.id();
    let ca = webhook.ca();
    webhook.assert_answers().await;
    let idle_rss = status_kib(pid, "VmRSS:");
    let cpu_before = cpu_ticks(pid);

    let flood = Flood::start(&webhook.addr, &ca, SILENT, STALLED, IDLE);
    // Let the flood take its places before the API server's reviews are timed.
    let deadline = Instant::now() + Duration::from_secs(20);
    while flood.opened().iter().sum::<usize>() < SILENT + STALLED + IDLE {
        assert!(
            Instant::now() < deadline,
            "the flood opened {:?}",
            flood.opened()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (pending, established) = (
        gauge(&webhook.admin, "pending").await,
        gauge(&webhook.admin, "established").await,
    );
    // The flood's 1,600 tasks must not delay the API server's client.
    let (latencies, reconnects) = api_server_client(
        webhook.addr.clone(),
        ca.clone(),
        ApiServerLoad {
            for_how_long: Duration::from_secs(15),
            new_connections: true,
            pause: Duration::from_millis(20),
            first_answered: None,
        },
    )
    .await
    .expect("the API server's client");
    let (pending_late, established_late) = (
        gauge(&webhook.admin, "pending").await,
        gauge(&webhook.admin, "established").await,
    );
    let peak_rss = status_kib(pid, "VmHWM:");
    let flood_rss = status_kib(pid, "VmRSS:");
    let opened = flood.opened();
    let cpu_flood = cpu_ticks(pid) - cpu_before;
    flood.stop().await;

    // Released: no connection left, and the memory given back.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (p, e) = (
            gauge(&webhook.admin, "pending").await,
            gauge(&webhook.admin, "established").await,
        );
        if p == 0 && e == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after the flood: {p} pending, {e} established"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The listener hands the memory back just after the last socket has left the gauges.
    let released_bound = idle_rss + 12 * 1024;
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut released_rss = status_kib(pid, "VmRSS:");
    while released_rss > released_bound && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        released_rss = status_kib(pid, "VmRSS:");
    }
    let (p50, p99, max) = (
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        percentile(&latencies, 1.0),
    );
    let kept: Vec<Duration> = latencies.iter().step_by(2).copied().collect();
    let new: Vec<Duration> = latencies.iter().skip(1).step_by(2).copied().collect();
    let (kept_p99, new_p99) = (percentile(&kept, 0.99), percentile(&new, 0.99));
    eprintln!(
        "[no-progress flood] held {SILENT} silent, {STALLED} stalled handshakes, {IDLE} idle TLS \
         (h1 and h2); opened over the run {opened:?}; server: {pending}/{pending_late} pending, \
         {established}/{established_late} established; API-server reviews {} (half on new \
         connections, {reconnects} kept-alive reconnects): p50 {p50:?}, p99 {p99:?} (kept-alive \
         {kept_p99:?}, new connections {new_p99:?}), max {max:?}; \
         RSS idle {} KiB, during {} KiB, peak {} KiB, after {} KiB; server CPU {:.1} s",
        latencies.len(),
        idle_rss,
        flood_rss,
        peak_rss,
        released_rss,
        cpu_flood as f64 / 100.0,
    );
    assert!(latencies.len() >= 100, "{} reviews", latencies.len());
    assert!(p99 <= Duration::from_secs(1), "p99 {p99:?}");
    assert!(
        peak_rss.saturating_sub(idle_rss) / 1024 <= STATED_IDLE_FLOOD_GROWTH_MIB,
        "the flood added {} MiB, over the stated {STATED_IDLE_FLOOD_GROWTH_MIB} MiB",
        peak_rss.saturating_sub(idle_rss) / 1024
    );
    assert!(
        // The gauges are at 0; what stays is the runtime's own tables (its I/O slab) and
        // allocator arenas, not sockets.
        released_rss <= released_bound,
        "after the flood RSS is {released_rss} KiB, idle was {idle_rss} KiB"
    );
    webhook.assert_answers().await;
    assert_eq!(
        webhook.terminate_and_wait().await,
        Some(0),
        "exit after the flood"
    );
}

/// The release binary, as it ships: the floods measure the server, and a debug build's
/// TLS is ten times slower. Built here (once per run) if older than the test's own build.
fn release_binary() -> std::path::PathBuf {
    static BUILT: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let own = std::path::PathBuf::from(env!("CARGO_BIN_EXE_pvc-clone-guard"));
            if own.parent().and_then(|dir| dir.file_name()) == Some("release".as_ref()) {
                return own;
            }
            let release = own
                .parent()
                .and_then(|dir| dir.parent())
                .expect("target directory")
                .join("release/pvc-clone-guard");
            let modified =
                |path: &std::path::Path| std::fs::metadata(path).and_then(|m| m.modified()).ok();
            // Fresh when newer than every source it is built from.
            fn newest(path: &std::path::Path) -> Option<std::time::SystemTime> {
                let meta = std::fs::metadata(path).ok()?;
                if !meta.is_dir() {
                    return meta.modified().ok();
                }
                std::fs::read_dir(path)
                    .ok()?
                    .filter_map(Result::ok)
                    .filter_map(|entry| newest(&entry.path()))
                    .max()
            }
            let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
            let sources = ["src", "Cargo.toml", "Cargo.lock"]
                .iter()
                .filter_map(|path| newest(&manifest.join(path)))
                .max();
            if modified(&release) < sources {
                let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
                let built = std::process::Command::new(cargo)
                    .args(["build", "--release", "--quiet", "--bin", "pvc-clone-guard"])
                    .current_dir(env!("CARGO_MANIFEST_DIR"))
                    .status()
                    .expect("cargo runs");
                assert!(built.success(), "the release binary builds");
            }
            release
        })
        .clone()
}

/// The release binary with its log (warnings and above, JSON) in a file of the test's.
async fn start_logged() -> (Webhook, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    issue_certs(dir.path());
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\nclusters: [{name: none, cluster: {server: 'https://127.0.0.1:1', insecure-skip-tls-verify: true}}]\n\
         users: [{name: none, user: {token: none}}]\ncontexts: [{name: none, context: {cluster: none, user: none}}]\ncurrent-context: none\n",
    )
    .expect("kubeconfig");
    let log = dir.path().join("stderr.log");
    let addr = format!("127.0.0.1:{}", free_port());
    let admin = format!("127.0.0.1:{}", free_port());
    let child = std::process::Command::new(release_binary())
        .arg("serve")
        .arg("--tls-cert")
        .arg(dir.path().join("tls.crt"))
        .arg("--tls-key")
        .arg(dir.path().join("tls.key"))
        .args(["--listen", &addr, "--admin-listen", &admin])
        .env("KUBECONFIG", &kubeconfig)
        .env("RUST_LOG", "warn,kube=off,tower=off,hyper=off")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("pvc-clone-guard starts");
    let webhook = Webhook {
        child,
        dir,
        addr,
        admin,
    }
    .live()
    .await;
    (webhook, log)
}

/// Descriptors run out (the process's open-file limit set below the flood): the failed
/// accepts are logged and counted, the listener does not spin, and reviews are answered
/// again as soon as descriptors free up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_descriptors_the_listener_backs_off_and_resumes() {
    let _one_flood = ONE_FLOOD_AT_A_TIME.lock().await;
    const OPEN_FILES: u32 = 200;
    const FLOOD: usize = 600;
    raise_own_open_files();
    let (mut webhook, log) = start_logged().await;
    let pid = webhook.child.id();
    webhook.assert_answers().await;
    // Both limits, so the process cannot raise its own again.
    let limited = std::process::Command::new("prlimit")
        .arg(format!("--pid={pid}"))
        .arg(format!("--nofile={OPEN_FILES}:{OPEN_FILES}"))
        .status()
        .expect("prlimit runs");
    assert!(limited.success(), "prlimit lowered the open-file limit");

    let flood = Flood::start(&webhook.addr, &webhook.ca(), FLOOD, 0, 0);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cpu_before = cpu_ticks(pid);
    let measured = Instant::now();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let cpu = (cpu_ticks(pid) - cpu_before) as f64 / 100.0 / measured.elapsed().as_secs_f64();
    let opened = flood.opened()[0];
    eprintln!("[out of descriptors] stopping the flood after {opened} sockets");
    flood.stop().await;

    // Descriptors free up as the flood's sockets close: reviews are answered again.
    let freed = Instant::now();
    let resumed = loop {
        let answered = tokio::time::timeout(
            Duration::from_secs(2),
            https_post(
                &webhook.addr,
                &webhook.ca(),
                &serde_json::to_vec(&create(claim("plain", None, "1Gi"))).expect("json"),
            ),
        )
        .await;
        if matches!(answered, Ok((200, _))) {
            break freed.elapsed();
        }
        assert!(
            freed.elapsed() < Duration::from_secs(10),
            "no review answered after the flood"
        );
    };
    eprintln!("[out of descriptors] resumed after {resumed:?}");
    let accept_errors = metric(&webhook.admin, "pvc_clone_guard_accept_errors_total").await;
    let logged = std::fs::read_to_string(&log).unwrap_or_default();
    eprintln!(
        "[out of descriptors] limit {OPEN_FILES} open files, {FLOOD} silent sockets held \
         ({opened} opened): {accept_errors} accept errors counted; server CPU {:.1}% of a core \
         while out of descriptors; first review answered {resumed:?} after the flood stopped",
        cpu * 100.0
    );
    assert!(accept_errors > 0, "the failed accepts are counted");
    assert!(
        logged.contains("cannot accept connections on the review port"),
        "the failed accepts are logged: {logged}"
    );
    assert!(cpu < 0.25, "no busy loop: {:.1}% of a core", cpu * 100.0);
    assert!(
        resumed < Duration::from_secs(3),
        "resumed after {resumed:?}"
    );
    assert_eq!(
        webhook.terminate_and_wait().await,
        Some(0),
        "exit after the flood"
    );
}
