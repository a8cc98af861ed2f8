//! Thin HTTP: the review endpoint over TLS, and the admin endpoints over plain HTTP.

use std::convert::Infallible;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http_body_util::{BodyExt, Either, Full};
use hyper::body::{Body as HttpBody, Bytes, Incoming};
use hyper::service::service_fn;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tower::ServiceExt;

use crate::facts::FactSource;
use crate::listener::stopped;
use crate::review::{self, Reviewer};

/// Reviews carry the object and the old object, each up to ~1.5 MiB.
pub const MAX_REVIEW_BYTES: usize = 4 * 1024 * 1024;

pub use crate::listener::{Limits, Timeouts};

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

/// The review endpoint: `POST /validate`, as an axum [`Router`] (what the in-process tests
/// drive; the TLS port answers the same way, see [`Reviews`]).
pub fn router<F: FactSource>(reviewer: Arc<Reviewer<F>>) -> Router {
    router_with(reviewer, Timeouts::default(), Limits::default())
}

/// The review endpoint with explicit client timeouts and limits.
pub fn router_with<F: FactSource>(
    reviewer: Arc<Reviewer<F>>,
    timeouts: Timeouts,
    limits: Limits,
) -> Router {
    Reviews::new(reviewer, timeouts, limits).router
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

/// What the review port serves. `POST /validate`, the request every review makes, is
/// handed by hyper straight to [`validate`]: no routing, no boxed request and response
/// bodies, no copy of the headers (the largest single gain of issue 12's second round,
/// 16.6 to 13.7 µs of CPU per plain review: BENCHMARKS.md). Every other request goes to the axum
/// [`Router`], which routes `/validate` to the same [`validate`], so 404, 405 and the like
/// stay axum's and the in-process tests, which drive the router, test the same handler.
pub struct Reviews<F> {
    state: ReviewState<F>,
    router: Router,
}

impl<F: FactSource> Reviews<F> {
    pub fn new(reviewer: Arc<Reviewer<F>>, timeouts: Timeouts, limits: Limits) -> Self {
        let state = ReviewState {
            reviewer,
            body_read_timeout: timeouts.body_read,
            ordinary_bodies: Arc::new(Semaphore::new(limits.max_inflight_reviews.max(1))),
            large_bodies: Arc::new(Semaphore::new(limits.max_inflight_large_reviews.max(1))),
        };
        let router = Router::new()
            .route("/validate", post(validate_route::<F>))
            .with_state(state.clone());
        Reviews { state, router }
    }

    /// Answers one request of the review port.
    async fn serve(
        self: Arc<Self>,
        request: Request<Incoming>,
    ) -> Result<hyper::Response<Either<Full<Bytes>, Body>>, Infallible> {
        if request.method() == Method::POST && request.uri().path() == "/validate" {
            return Ok(validate(&self.state, request).await.map(Either::Left));
        }
        let response = self.router.clone().oneshot(request.map(Body::new)).await;
        Ok(match response {
            Ok(response) => response.map(Either::Right),
            Err(never) => match never {},
        })
    }
}

async fn validate_route<F: FactSource>(
    State(state): State<ReviewState<F>>,
    request: Request<Body>,
) -> Response {
    validate(&state, request).await.map(Body::new)
}

async fn validate<F: FactSource, B>(
    state: &ReviewState<F>,
    request: Request<B>,
) -> hyper::Response<Full<Bytes>>
where
    B: HttpBody<Data = Bytes>,
    B::Error: fmt::Display,
{
    let (parts, body) = request.into_parts();
    if !is_json(&parts.headers) {
        return text(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send the AdmissionReview as Content-Type: application/json\n",
        );
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
    let body = match read {
        Ok(Ok(body)) => body,
        Ok(Err(BodyError::TooLarge)) => return body_too_large(),
        Ok(Err(BodyError::Read(error))) => {
            return text(
                StatusCode::BAD_REQUEST,
                format!("cannot read the body: {error}\n"),
            );
        }
        Err(_) if turn.is_none() => {
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "too many reviews in flight: no turn to read the body within {}\n",
                    humantime::format_duration(state.body_read_timeout)
                ),
            );
        }
        Err(_) => {
            return text(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the body was not received within {}\n",
                    humantime::format_duration(state.body_read_timeout)
                ),
            );
        }
    };
    let parsed = state.reviewer.parse(&body);
    // The body (up to 4 MiB) and its turn are given back before the facts are gathered.
    drop(body);
    drop(turn);
    match parsed {
        Ok(parsed) => {
            let answer = review::to_body(state.reviewer.answer(parsed).await);
            let mut response = hyper::Response::new(Full::new(Bytes::from(answer)));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            response
        }
        Err(error) => text(StatusCode::BAD_REQUEST, format!("{error}\n")),
    }
}

/// A plain-text answer, as axum makes one of a `(StatusCode, String)`.
fn text(status: StatusCode, message: impl Into<String>) -> hyper::Response<Full<Bytes>> {
    let mut response = hyper::Response::new(Full::new(Bytes::from(message.into())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
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
async fn read_body<B>(body: B, declared: Option<usize>) -> Result<Bytes, BodyError>
where
    B: HttpBody<Data = Bytes>,
    B::Error: fmt::Display,
{
    let mut body = std::pin::pin!(body);
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

fn body_too_large() -> hyper::Response<Full<Bytes>> {
    text(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!(
            "the review is larger than {} MiB\n",
            MAX_REVIEW_BYTES / (1024 * 1024)
        ),
    )
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

/// The admin endpoints: `/livez`, `/readyz`, `/metrics`.
pub fn admin_router<F: FactSource>(reviewer: Arc<Reviewer<F>>, health: Arc<Health>) -> Router {
    Router::new()
        .route("/livez", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz::<F>))
        .route("/metrics", get(metrics::<F>))
        .with_state(AdminState { reviewer, health })
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

/// Serves the review port over TLS until `shutdown` turns true, then drains (see
/// [`crate::listener`] for who may hold the port and for how long).
pub async fn serve_tls<F: FactSource>(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    reviews: Reviews<F>,
    timeouts: Timeouts,
    limits: Limits,
    shutdown: watch::Receiver<bool>,
) {
    let metrics = reviews.state.reviewer.metrics().listener().clone();
    let reviews = Arc::new(reviews);
    let service = service_fn(move |request| Arc::clone(&reviews).serve(request));
    crate::listener::serve(listener, tls, service, timeouts, limits, metrics, shutdown).await;
}

/// Serves the admin endpoints over plain HTTP until `shutdown` turns true.
pub async fn serve_admin(
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
