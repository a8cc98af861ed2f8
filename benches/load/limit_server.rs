//! The limit server of the load benchmark (SPEC §7): the least a TLS HTTP/1.1 admission
//! webhook can do. It reads the whole body, takes only `request.uid` out of it (serde with
//! a struct that has nothing but the uid; every other field is skipped as `IgnoredAny`,
//! never built), and answers `allowed: true` with that uid. No routing, no content-type
//! check, no logging, no metrics.
//!
//! Same stack and runtime as pvc-clone-guard so that the ratio measures the webhook's own
//! work: rustls (ring, TLS 1.3 and 1.2) over tokio-rustls, hyper 1 HTTP/1.1 keep-alive,
//! TCP_NODELAY, and tokio's multi-thread runtime with the default number of worker threads
//! (one per CPU the process may run on: 1 when pinned with `taskset -c 0`), exactly as the
//! webhook builds its runtime. `--current-thread` switches to tokio's single-threaded
//! runtime, to see what the multi-thread scheduler costs on one core.
//!
//! ```text
//! cargo build --release --example limit-server
//! taskset -c 0 target/release/examples/limit-server \
//!     --tls-cert DIR/tls.crt --tls-key DIR/tls.key --listen 127.0.0.1:8443
//! ```

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// Bodies larger than the webhook's limit are refused as it refuses them.
const MAX_BODY: usize = 4 * 1024 * 1024;

struct Args {
    tls_cert: PathBuf,
    tls_key: PathBuf,
    listen: SocketAddr,
    current_thread: bool,
}

fn usage() -> String {
    "usage: limit-server --tls-cert FILE --tls-key FILE --listen ADDR [--current-thread]".into()
}

fn parse_args() -> Result<Args, String> {
    let mut cert = None;
    let mut key = None;
    let mut listen = None;
    let mut current_thread = false;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--tls-cert" => cert = Some(PathBuf::from(value()?)),
            "--tls-key" => key = Some(PathBuf::from(value()?)),
            "--listen" => {
                let text = value()?;
                listen = Some(
                    text.parse()
                        .map_err(|e| format!("--listen {text:?}: {e}"))?,
                );
            }
            "--current-thread" => current_thread = true,
            "-h" | "--help" => return Err(usage()),
            other => return Err(format!("unknown argument {other:?}\n{}", usage())),
        }
    }
    Ok(Args {
        tls_cert: cert.ok_or_else(usage)?,
        tls_key: key.ok_or_else(usage)?,
        listen: listen.ok_or_else(usage)?,
        current_thread,
    })
}

fn tls_config(args: &Args) -> Result<Arc<rustls::ServerConfig>, String> {
    let certs = CertificateDer::pem_file_iter(&args.tls_cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {e}", args.tls_cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(&args.tls_key)
        .map_err(|e| format!("{}: {e}", args.tls_key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("certificate and key: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[path = "uid_only.rs"]
mod uid_only;
use uid_only::UidOnly;

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Answer<'a> {
    api_version: &'static str,
    kind: &'static str,
    response: AnswerResponse<'a>,
}

#[derive(serde::Serialize)]
struct AnswerResponse<'a> {
    uid: &'a str,
    allowed: bool,
}

async fn handle(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let body = match http_body_util::Limited::new(request.into_body(), MAX_BODY)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return Ok(plain(StatusCode::PAYLOAD_TOO_LARGE, "body too large\n")),
    };
    let review: UidOnly = match serde_json::from_slice(&body) {
        Ok(review) => review,
        Err(_) => return Ok(plain(StatusCode::BAD_REQUEST, "not an AdmissionReview\n")),
    };
    let answer = Answer {
        api_version: "admission.k8s.io/v1",
        kind: "AdmissionReview",
        response: AnswerResponse {
            uid: &review.request.uid,
            allowed: true,
        },
    };
    let bytes = serde_json::to_vec(&answer).unwrap_or_default();
    let mut response = Response::new(Full::new(Bytes::from(bytes)));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(response)
}

fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = status;
    response
}

async fn serve(listener: TcpListener, acceptor: TlsAcceptor) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                eprintln!("limit-server: accept: {error}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(stream).await else {
                return;
            };
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(tls), service_fn(handle))
                .await;
        });
    }
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let config = match tls_config(&args) {
        Ok(config) => config,
        Err(message) => {
            eprintln!("limit-server: {message}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = if args.current_thread {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("limit-server: runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let listener = match TcpListener::bind(args.listen).await {
            Ok(listener) => listener,
            Err(error) => {
                eprintln!("limit-server: cannot listen on {}: {error}", args.listen);
                return ExitCode::FAILURE;
            }
        };
        eprintln!(
            "limit-server: listening on https://{} ({} runtime)",
            args.listen,
            if args.current_thread {
                "current-thread"
            } else {
                "multi-thread"
            }
        );
        serve(listener, TlsAcceptor::from(config)).await;
        ExitCode::SUCCESS
    })
}
