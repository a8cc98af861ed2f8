//! The command line: `serve`, `certs` and `sleep`. Every flag can also be set from an
//! environment variable `PVC_CLONE_GUARD_<FLAG>`.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use tokio::sync::watch;

use crate::certs::{self, CertsRequest};
use crate::config::Policy;
use crate::facts::{ClusterFacts, WatchOptions};
use crate::metrics::Metrics;
use crate::review::Reviewer;
use crate::server::{self, Health};
use crate::tls::ReloadingCert;

#[derive(Debug, Parser)]
#[command(
    name = "pvc-clone-guard",
    version,
    about = "Validating admission webhook that refuses PersistentVolumeClaim clones the CSI provisioner would leave Pending"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve AdmissionReviews over HTTPS, and health and metrics over HTTP.
    Serve(ServeArgs),
    /// Create a CA (or reuse the one in --out-dir) and issue a serving certificate.
    Certs(CertsArgs),
    /// Sleep, then exit 0: a preStop hook for images without a shell.
    Sleep {
        #[arg(value_parser = humantime::parse_duration, help = "How long, e.g. 5s")]
        duration: Duration,
    },
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// PEM certificate (chain) served on --listen.
    #[arg(long, env = "PVC_CLONE_GUARD_TLS_CERT")]
    tls_cert: PathBuf,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "PVC_CLONE_GUARD_TLS_KEY")]
    tls_key: PathBuf,
    /// Address of the HTTPS review endpoint (POST /validate).
    #[arg(long, env = "PVC_CLONE_GUARD_LISTEN", default_value = "0.0.0.0:8443")]
    listen: SocketAddr,
    /// Address of the plain HTTP admin endpoints (/livez, /readyz, /metrics).
    #[arg(
        long,
        env = "PVC_CLONE_GUARD_ADMIN_LISTEN",
        default_value = "0.0.0.0:8080"
    )]
    admin_listen: SocketAddr,
    /// YAML file of rule actions and options (see README); defaults apply without it.
    #[arg(long, env = "PVC_CLONE_GUARD_CONFIG")]
    config: Option<PathBuf>,
    /// Log lines as JSON (for collectors) or as text (for people).
    #[arg(long, env = "PVC_CLONE_GUARD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Json)]
    log_format: LogFormat,
    /// Time a client has for the TLS handshake, then again for the request headers.
    #[arg(long, env = "PVC_CLONE_GUARD_HEADER_READ_TIMEOUT", value_parser = humantime::parse_duration, default_value = "10s")]
    header_read_timeout: Duration,
    /// Time a client has to send the body once the headers are in.
    #[arg(long, env = "PVC_CLONE_GUARD_BODY_READ_TIMEOUT", value_parser = humantime::parse_duration, default_value = "10s")]
    body_read_timeout: Duration,
    /// After SIGTERM, time open connections keep being served as usual before they are
    /// asked to close.
    #[arg(long, env = "PVC_CLONE_GUARD_SHUTDOWN_GRACE", value_parser = humantime::parse_duration, default_value = "1s")]
    shutdown_grace: Duration,
    /// Time in-flight reviews then have to finish.
    #[arg(long, env = "PVC_CLONE_GUARD_DRAIN_TIMEOUT", value_parser = humantime::parse_duration, default_value = "20s")]
    drain_timeout: Duration,
    /// Readiness waits at most this long for the first sync of the caches; after it the
    /// webhook is ready anyway, and lookups of caches not yet listed go to the API server.
    #[arg(long, env = "PVC_CLONE_GUARD_CACHE_SYNC_TIMEOUT", value_parser = humantime::parse_duration, default_value = "10s")]
    cache_sync_timeout: Duration,
    /// Objects per page when the caches list a resource (bounds start-up memory).
    #[arg(long, env = "PVC_CLONE_GUARD_LIST_PAGE_SIZE", default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..))]
    list_page_size: u32,
    /// Open connections on the review port; more wait in the listen backlog.
    #[arg(long, env = "PVC_CLONE_GUARD_MAX_CONNECTIONS", default_value_t = 128, value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: u32,
    /// Reviews of ordinary size (up to 64 KiB) read and parsed at once; more wait their turn.
    #[arg(long, env = "PVC_CLONE_GUARD_MAX_INFLIGHT_REVIEWS", default_value_t = 128, value_parser = clap::value_parser!(u32).range(1..))]
    max_inflight_reviews: u32,
    /// Larger reviews (up to 4 MiB) read and parsed at once; more wait their turn.
    #[arg(long, env = "PVC_CLONE_GUARD_MAX_INFLIGHT_LARGE_REVIEWS", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..))]
    max_inflight_large_reviews: u32,
    /// Concurrent HTTP/2 streams per connection.
    #[arg(long, env = "PVC_CLONE_GUARD_MAX_H2_STREAMS", default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..))]
    max_h2_streams: u32,
    /// How often the certificate files are checked for a change.
    #[arg(long, env = "PVC_CLONE_GUARD_CERT_RELOAD_INTERVAL", value_parser = humantime::parse_duration, default_value = "2s")]
    cert_reload_interval: Duration,
}

#[derive(Debug, Args)]
struct CertsArgs {
    /// Directory for ca.crt, ca.key, tls.crt, tls.key and cabundle-patch.yaml.
    #[arg(long, env = "PVC_CLONE_GUARD_OUT_DIR")]
    out_dir: PathBuf,
    /// DNS name of the serving certificate (repeatable) [default: the Service names of manifests/].
    #[arg(long = "dns", env = "PVC_CLONE_GUARD_DNS", value_delimiter = ',')]
    dns_names: Vec<String>,
    /// IP address of the serving certificate (repeatable), e.g. 127.0.0.1 for local use.
    #[arg(long = "ip", env = "PVC_CLONE_GUARD_IP", value_delimiter = ',')]
    ip_addresses: Vec<IpAddr>,
    /// Validity of the serving certificate, in days.
    #[arg(long, env = "PVC_CLONE_GUARD_DAYS", default_value_t = 365)]
    days: u32,
    /// Validity of a new CA, in days.
    #[arg(long, env = "PVC_CLONE_GUARD_CA_DAYS", default_value_t = 3650)]
    ca_days: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Json,
    Text,
}

/// Parses the command line and runs it; the whole of `main`.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => run_serve(args),
        Command::Certs(args) => run_certs(args),
        Command::Sleep { duration } => {
            std::thread::sleep(duration);
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("pvc-clone-guard: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_certs(args: CertsArgs) -> Result<()> {
    let dns_names = if args.dns_names.is_empty() {
        certs::DEFAULT_DNS_NAMES.map(String::from).to_vec()
    } else {
        args.dns_names
    };
    let outcome = certs::generate(&CertsRequest {
        out_dir: args.out_dir,
        dns_names,
        ip_addresses: args.ip_addresses,
        days: args.days,
        ca_days: args.ca_days,
    })?;
    if !outcome.created_ca {
        eprintln!("kept the existing CA; issued a new serving certificate");
    }
    for file in outcome.files {
        println!("{}", file.display());
    }
    Ok(())
}

fn run_serve(args: ServeArgs) -> Result<()> {
    crate::memory::return_large_buffers_to_the_system();
    // Lines are written by a background thread, in batches: one write(2) per review on the
    // request path cost more than the rest of a review's logging (see BENCHMARKS.md). The
    // guard flushes what is left when serve returns.
    let _flush_on_exit = init_logging(args.log_format)?;
    // kube and the server share one TLS library; name its crypto provider once.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(args))
}

fn init_logging(format: LogFormat) -> Result<crate::logging::LogGuard> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    // Lossless, written by a thread of its own in batches (see `LogWriter`).
    let (writer, guard) =
        crate::logging::stderr_writer().context("cannot start the log writer thread")?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(ansi);
    match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .event_format(crate::logging::JsonLine::default())
            .init(),
        LogFormat::Text => builder.init(),
    }
    Ok(guard)
}

/// Runs the webhook until SIGTERM or SIGINT, then drains and returns.
pub async fn serve(args: ServeArgs) -> Result<()> {
    let policy = match &args.config {
        Some(path) => Policy::from_file(path)?,
        None => Policy::default(),
    };
    let cert = ReloadingCert::load(&args.tls_cert, &args.tls_key)?;
    let tls = cert
        .server_config()
        .context("cannot build the TLS configuration")?;
    cert.spawn_watch(args.cert_reload_interval);

    let client = kube::Client::try_default().await.context(
        "no usable Kubernetes client configuration (KUBECONFIG, ~/.kube/config or in-cluster)",
    )?;
    let metrics = Metrics::new();
    let facts = ClusterFacts::start(
        client,
        metrics.clone(),
        &policy,
        WatchOptions {
            page_size: args.list_page_size,
            sync_wait: args.cache_sync_timeout,
        },
    );
    let reviewer = Arc::new(Reviewer::new(policy, facts, metrics));
    let health = Arc::new(Health::default());

    let listener = server::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let admin_listener = server::bind(args.admin_listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.admin_listen))?;
    tracing::info!(listen = %args.listen, admin_listen = %args.admin_listen, "serving");

    let (stop_reviews, reviews_stopped) = watch::channel(false);
    let (stop_admin, admin_stopped) = watch::channel(false);
    let admin = tokio::spawn(server::serve_admin(
        admin_listener,
        server::admin_router(Arc::clone(&reviewer), Arc::clone(&health)),
        admin_stopped,
    ));
    let timeouts = server::Timeouts {
        header_read: args.header_read_timeout,
        body_read: args.body_read_timeout,
        shutdown_grace: args.shutdown_grace,
        drain: args.drain_timeout,
    };
    let limits = server::Limits {
        max_connections: args.max_connections as usize,
        max_inflight_reviews: args.max_inflight_reviews as usize,
        max_inflight_large_reviews: args.max_inflight_large_reviews as usize,
        max_h2_streams: args.max_h2_streams,
    };
    let reviews = tokio::spawn(server::serve_tls(
        listener,
        tls,
        server::Reviews::new(reviewer, timeouts, limits),
        timeouts,
        limits,
        reviews_stopped,
    ));

    shutdown_signal().await;
    tracing::info!("shutting down: unready, draining in-flight reviews");
    health.begin_shutdown();
    let _ = stop_reviews.send(true);
    let _ = reviews.await;
    // The admin port stays up (and unready) until the reviews are drained.
    let _ = stop_admin.send(true);
    let _ = admin.await;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = terminate => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
