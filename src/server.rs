//! The webhook as a value: [`Webhook`] holds the reviewer, its readiness and the port's
//! limits; [`Webhook::router`] is the review port's one axum [`Router`], and
//! [`Webhook::service`] what production serves through [`crate::listener`] and the
//! in-process contract tests drive (that router, `POST /validate` handed straight to its
//! handler); [`Webhook::admin_router`] is the admin port's.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http_body_util::BodyExt;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tower::ServiceExt;

use crate::config::Policy;
use crate::facts::{ClusterFacts, FactSource, WatchOptions};
use crate::listener::stopped;
use crate::metrics::Metrics;
use crate::review::{self, Reviewer};

pub use crate::listener::{Limits, Timeouts};

/// The review port's one route.
const VALIDATE: &str = "/validate";

/// Reviews carry the object and the old object, each up to ~1.5 MiB.
pub const MAX_REVIEW_BYTES: usize = 4 * 1024 * 1024;

/// A review body up to this size is "ordinary": a claim with its managedFields and
/// last-applied annotation is 5-15 KiB. Larger ones (or ones of undeclared length) wait in
/// a queue of their own, so a flood of large bodies never holds up ordinary reviews.
pub const ORDINARY_REVIEW_BYTES: usize = 64 * 1024;

/// Readiness: certificates loaded, caches synced, not shutting down.
#[derive(Debug, Default)]
pub struct Health {
    shutting_down: AtomicBool,
}

impl Health {
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Release);
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }
}

/// What [`Webhook::new_from_config`] is built from: the policy (the config file) and the
/// flags of `serve`.
#[derive(Default)]
pub struct WebhookConfig {
    pub policy: Policy,
    pub watch: WatchOptions,
    pub timeouts: Timeouts,
    pub limits: Limits,
}

/// The webhook: reviews on one port, health and metrics on the other.
pub struct Webhook<F> {
    reviews: ReviewState<F>,
    health: Arc<Health>,
    timeouts: Timeouts,
    limits: Limits,
}

impl Webhook<ClusterFacts> {
    /// The webhook of `config`, reading the cluster through `client`: starts the watches
    /// the policy needs (it is ready once they sync).
    pub fn new_from_config(config: WebhookConfig, client: kube::Client) -> Self {
        let metrics = Metrics::new();
        let facts = ClusterFacts::start(client, metrics.clone(), &config.policy, config.watch);
        let reviewer = Reviewer::new(config.policy, facts, metrics);
        Webhook::new(Arc::new(reviewer), config.timeouts, config.limits)
    }
}

impl<F: FactSource> Webhook<F> {
    /// The webhook around `reviewer` (tests hand in one with facts of their own).
    pub fn new(reviewer: Arc<Reviewer<F>>, timeouts: Timeouts, limits: Limits) -> Self {
        Webhook {
            reviews: ReviewState {
                reviewer,
                body_read_timeout: timeouts.body_read,
                ordinary_bodies: Arc::new(Semaphore::new(limits.max_inflight_reviews.max(1))),
                large_bodies: Arc::new(Semaphore::new(limits.max_inflight_large_reviews.max(1))),
            },
            health: Arc::new(Health::default()),
            timeouts,
            limits,
        }
    }

    /// The review port's routes: `POST /validate`; anything else is axum's 404 or 405.
    pub fn router(&self) -> Router {
        Router::new()
            .route(VALIDATE, post(validate::<F>))
            .with_state(self.reviews.clone())
    }

    /// What the review port serves, and what the in-process contract tests drive: the
    /// [`Webhook::router`], with `POST /validate` handed to its handler directly.
    pub fn service(&self) -> ReviewPort<F> {
        ReviewPort {
            reviews: self.reviews.clone(),
            router: self.router(),
        }
    }

    /// The admin port's routes: `/livez`, `/readyz`, `/metrics`.
    pub fn admin_router(&self) -> Router {
        Router::new()
            .route("/livez", get(|| async { "ok\n" }))
            .route("/readyz", get(readyz::<F>))
            .route("/metrics", get(metrics::<F>))
            .with_state(AdminState {
                reviewer: Arc::clone(&self.reviews.reviewer),
                health: Arc::clone(&self.health),
            })
    }

    pub fn metrics(&self) -> &Metrics {
        self.reviews.reviewer.metrics()
    }

    pub fn health(&self) -> &Health {
        &self.health
    }

    /// Serves [`Webhook::service`] over TLS on `listener` until `shutdown` turns true, then
    /// drains (see [`crate::listener`] for who may hold the port and for how long).
    pub async fn serve_reviews(
        &self,
        listener: TcpListener,
        tls: Arc<rustls::ServerConfig>,
        shutdown: watch::Receiver<bool>,
    ) {
        let metrics = self.metrics().listener().clone();
        crate::listener::serve(
            listener,
            tls,
            tower::util::BoxCloneSyncService::new(self.service()),
            self.timeouts,
            self.limits,
            metrics,
            shutdown,
        )
        .await;
    }

    /// Serves both ports until `stop` resolves (SIGTERM), then turns unready, drains the
    /// reviews in flight, and closes the admin port last.
    pub async fn serve(
        self,
        reviews: TcpListener,
        admin: TcpListener,
        tls: Arc<rustls::ServerConfig>,
        stop: impl Future<Output = ()>,
    ) {
        let (stop_reviews, reviews_stopped) = watch::channel(false);
        let (stop_admin, admin_stopped) = watch::channel(false);
        let admin = tokio::spawn(serve_admin(admin, self.admin_router(), admin_stopped));
        let webhook = Arc::new(self);
        let serving = {
            let webhook = Arc::clone(&webhook);
            tokio::spawn(async move { webhook.serve_reviews(reviews, tls, reviews_stopped).await })
        };
        stop.await;
        tracing::info!("shutting down: unready, draining in-flight reviews");
        webhook.health.begin_shutdown();
        let _ = stop_reviews.send(true);
        let _ = serving.await;
        // The admin port stays up (and unready) until the reviews are drained.
        let _ = stop_admin.send(true);
        let _ = admin.await;
    }
}

struct ReviewState<F> {
    reviewer: Arc<Reviewer<F>>,
    body_read_timeout: Duration,
    ordinary_bodies: Arc<Semaphore>,
    large_bodies: Arc<Semaphore>,
}

// Not derived: a derive would demand `F: Clone`, and only the Arcs are cloned.
impl<F> Clone for ReviewState<F> {
    fn clone(&self) -> Self {
        ReviewState {
            reviewer: Arc::clone(&self.reviewer),
            body_read_timeout: self.body_read_timeout,
            ordinary_bodies: Arc::clone(&self.ordinary_bodies),
            large_bodies: Arc::clone(&self.large_bodies),
        }
    }
}

/// The review port's service: [`Webhook::router`] (the one route table), with the
/// requests its `/validate` route takes (`POST` to that path) handed to the same handler
/// without the router's matching, boxed route and method router in between. Why: served
/// through the router alone, plain reviews measured 0.59× of the limit server, under SPEC
/// §7's 0.6× floor; this saves 2.7k of the router's 11.0k instructions per review
/// (`benches/instructions.sh`: `plain-router` against `plain-service`; BENCHMARKS.md).
pub struct ReviewPort<F> {
    reviews: ReviewState<F>,
    router: Router,
}

// Not derived, for the same reason as ReviewState.
impl<F> Clone for ReviewPort<F> {
    fn clone(&self) -> Self {
        ReviewPort {
            reviews: self.reviews.clone(),
            router: self.router.clone(),
        }
    }
}

impl<F, B> tower::Service<axum::http::Request<B>> for ReviewPort<F>
where
    F: FactSource,
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = futures::future::BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: axum::http::Request<B>) -> Self::Future {
        let request = request.map(Body::new);
        if request.method() == Method::POST && request.uri().path() == VALIDATE {
            let state = self.reviews.clone();
            Box::pin(async move {
                let mut response = validate(State(state), request).await;
                // As the router's route sets it (hyper would too, on the wire).
                if let Some(length) = response.body().size_hint().exact() {
                    response
                        .headers_mut()
                        .insert(header::CONTENT_LENGTH, HeaderValue::from(length));
                }
                Ok(response)
            })
        } else {
            let routed = self.router.clone().oneshot(request);
            Box::pin(routed)
        }
    }
}

async fn validate<F: FactSource>(
    State(state): State<ReviewState<F>>,
    request: Request,
) -> Response {
    let (parts, body) = request.into_parts();
    if !is_json(&parts.headers) {
        return (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send the AdmissionReview as Content-Type: application/json\n",
        )
            .into_response();
    }
    let declared = declared_length(&parts.headers);
    if declared.is_some_and(|length| length > MAX_REVIEW_BYTES) {
        return body_too_large();
    }
    let ordinary = declared.is_some_and(|length| length <= ORDINARY_REVIEW_BYTES);
    let turns = if ordinary {
        &state.ordinary_bodies
    } else {
        &state.large_bodies
    };
    // The header-read timeout stops at the headers: a body trickled byte by byte is cut
    // off here, and a body over the limit is refused without reading the rest. Waiting for
    // a turn to read counts in that time.
    let mut turn = None;
    let read = async {
        turn = Some(turns.acquire().await);
        read_body(body, declared).await
    };
    let read = {
        let mut read = std::pin::pin!(read);
        // A body already received (the usual case over HTTP/1.1) is read at the first
        // poll, and no timer is set for it.
        match futures::FutureExt::now_or_never(read.as_mut()) {
            Some(read) => Ok(read),
            None => tokio::time::timeout(state.body_read_timeout, read).await,
        }
    };
    let waited = humantime::format_duration(state.body_read_timeout);
    let body = match read {
        Ok(Ok(body)) => body,
        Ok(Err(BodyError::TooLarge)) => return body_too_large(),
        Ok(Err(BodyError::Read(error))) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("cannot read the body: {error}\n"),
            )
                .into_response();
        }
        Err(_) if turn.is_none() => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("too many reviews in flight: no turn to read the body within {waited}\n"),
            )
                .into_response();
        }
        Err(_) => {
            return (
                StatusCode::REQUEST_TIMEOUT,
                format!("the body was not received within {waited}\n"),
            )
                .into_response();
        }
    };
    let parsed = state.reviewer.parse(&body);
    // The body (up to 4 MiB) and its turn are given back before the facts are gathered.
    drop(body);
    drop(turn);
    match parsed {
        Ok(parsed) => {
            let answer = review::to_body(state.reviewer.answer(parsed).await);
            ([(header::CONTENT_TYPE, "application/json")], answer).into_response()
        }
        Err(error) => (StatusCode::BAD_REQUEST, format!("{error}\n")).into_response(),
    }
}

fn declared_length(headers: &HeaderMap) -> Option<usize> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

enum BodyError {
    TooLarge,
    Read(String),
}

/// Reads the body, stopping at [`MAX_REVIEW_BYTES`]. A body that arrives in one piece (an
/// ordinary review over HTTP/1.1 usually does) is kept as that piece, not copied; one in
/// several is gathered into one buffer of the declared size.
async fn read_body(mut body: Body, declared: Option<usize>) -> Result<Bytes, BodyError> {
    let mut first: Option<Bytes> = None;
    let mut buffer: Vec<u8> = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|error| BodyError::Read(error.to_string()))?;
        let Ok(chunk) = frame.into_data() else {
            continue; // trailers
        };
        let read = first.as_ref().map_or(buffer.len(), Bytes::len);
        if read + chunk.len() > MAX_REVIEW_BYTES {
            return Err(BodyError::TooLarge);
        }
        if let Some(first) = first.take() {
            buffer.reserve_exact(
                declared
                    .unwrap_or(ORDINARY_REVIEW_BYTES)
                    .max(first.len() + chunk.len()),
            );
            buffer.extend_from_slice(&first);
            buffer.extend_from_slice(&chunk);
        } else if buffer.is_empty() {
            first = Some(chunk);
        } else {
            buffer.extend_from_slice(&chunk);
        }
    }
    Ok(first.unwrap_or_else(|| Bytes::from(buffer)))
}

fn body_too_large() -> Response {
    (
        StatusCode::PAYLOAD_TOO_LARGE,
        format!(
            "the review is larger than {} MiB\n",
            MAX_REVIEW_BYTES / (1024 * 1024)
        ),
    )
        .into_response()
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"))
}

struct AdminState<F> {
    reviewer: Arc<Reviewer<F>>,
    health: Arc<Health>,
}

// Not derived, for the same reason as ReviewState.
impl<F> Clone for AdminState<F> {
    fn clone(&self) -> Self {
        AdminState {
            reviewer: Arc::clone(&self.reviewer),
            health: Arc::clone(&self.health),
        }
    }
}

async fn readyz<F: FactSource>(State(state): State<AdminState<F>>) -> Response {
    if state.health.is_shutting_down() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
    }
    if !state.reviewer.facts().ready() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "waiting for the first sync of the caches (bounded by --cache-sync-timeout)\n",
        )
            .into_response();
    }
    "ok\n".into_response()
}

async fn metrics<F: FactSource>(State(state): State<AdminState<F>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.reviewer.metrics().encode(),
    )
        .into_response()
}

/// Serves the admin endpoints over plain HTTP until `shutdown` turns true.
async fn serve_admin(
    listener: TcpListener,
    app: Router,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { stopped(&mut shutdown).await })
        .await
}

pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}
