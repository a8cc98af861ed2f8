//! The command line: `serve`, `certs` and `sleep`. Every flag can also be set from an
//! environment variable `PVC_CLONE_GUARD_<FLAG>`.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::certs::{self, CertsRequest};
use crate::config::Policy;
use crate::facts::WatchOptions;
use crate::logging::LogFormat;
use crate::server::{self, Limits, Timeouts, Webhook, WebhookConfig};
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
    /// Create a CA (or reuse the one in --out-dir, checked) and issue a serving certificate.
    Certs(CertsArgs),
    /// Judge the claims and StatefulSet templates with a data source in manifests, before
    /// they reach a cluster. Exit 0: nothing refused; 1: something refused; 2: could not check.
    Check(CheckArgs),
    /// Say what keeps claims with a data source Pending: the rules' lines, the provisioner's
    /// latest ProvisioningFailed event, or that no rule refuses it.
    Explain(ExplainArgs),
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
    /// Time a client has to finish the TLS handshake, from its connection (at most
    /// --header-read-timeout).
    #[arg(long, env = "PVC_CLONE_GUARD_TLS_HANDSHAKE_TIMEOUT", value_parser = humantime::parse_duration, default_value = "3s")]
    tls_handshake_timeout: Duration,
    /// Time a client has to send its first request once connected, and each request's
    /// headers once they have begun.
    #[arg(long, env = "PVC_CLONE_GUARD_HEADER_READ_TIMEOUT", value_parser = humantime::parse_duration, default_value = "10s")]
    header_read_timeout: Duration,
    /// Time a kept-alive connection may stay idle between requests (longer than the API
    /// server keeps a connection for reuse, 90s).
    #[arg(long, env = "PVC_CLONE_GUARD_IDLE_TIMEOUT", value_parser = humantime::parse_duration, default_value = "120s")]
    idle_timeout: Duration,
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
    /// Established (TLS-handshaken) connections on the review port; at the limit, the one
    /// idle longest is closed to make room.
    #[arg(long, env = "PVC_CLONE_GUARD_MAX_CONNECTIONS", default_value_t = 128, value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: u32,
    /// Connections still in their TLS handshake; at the limit, the oldest is closed to
    /// make room.
    #[arg(long, env = "PVC_CLONE_GUARD_MAX_PENDING_CONNECTIONS", default_value_t = 2048, value_parser = clap::value_parser!(u32).range(1..))]
    max_pending_connections: u32,
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
    /// Validity of the serving certificate, in days: at least 1, at most what the CA has left.
    #[arg(long, env = "PVC_CLONE_GUARD_DAYS", default_value_t = 365)]
    days: u32,
    /// Validity of a new CA, in days.
    #[arg(long, env = "PVC_CLONE_GUARD_CA_DAYS", default_value_t = 3650)]
    ca_days: u32,
}

#[derive(Debug, Args)]
struct CheckArgs {
    /// Manifests: a file, a directory (read recursively) or - for standard input (e.g.
    /// `kubectl kustomize DIR | pvc-clone-guard check -f -`). Repeatable.
    #[arg(short = 'f', long = "filename", required = true)]
    files: Vec<PathBuf>,
    /// YAML file of rule actions and options, as the webhook's --config.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Read facts from files of objects (`kubectl get pvc,pv,sc,... -A -o yaml`) instead of
    /// the cluster of the usual kubeconfig. Repeatable.
    #[arg(long)]
    state: Vec<PathBuf>,
    /// One line per finding (text), or one JSON document for CI annotations.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Text)]
    output: OutputFormat,
}

#[derive(Debug, Args)]
struct ExplainArgs {
    /// The claim to explain; every Pending claim with a data source without it.
    #[arg(conflicts_with = "all_namespaces")]
    claim: Option<String>,
    /// Namespace of the claims [default: the kubeconfig context's].
    #[arg(short = 'n', long)]
    namespace: Option<String>,
    /// Claims of every namespace.
    #[arg(short = 'A', long, conflicts_with = "namespace")]
    all_namespaces: bool,
    /// YAML file of rule actions and options, as the webhook's --config.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Read claims, events and facts from files of objects instead of the cluster.
    #[arg(long)]
    state: Vec<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum OutputFormat {
    Text,
    Json,
}

/// Parses the command line and runs it; the whole of `main`.
pub fn main() -> ExitCode {
    let cli = parse();
    let result = match cli.command {
        Command::Check(args) => {
            return crate::offline::check::run(crate::offline::check::CheckOptions {
                files: args.files,
                config: args.config,
                state: args.state,
                json: args.output == OutputFormat::Json,
            });
        }
        Command::Explain(args) => {
            return crate::offline::explain::run(crate::offline::explain::ExplainOptions {
                namespace: args.namespace,
                all_namespaces: args.all_namespaces,
                claim: args.claim,
                config: args.config,
                state: args.state,
            });
        }
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
            eprintln!("pvc-clone-guard: {}", error_text(&error));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, each said once: a cause whose text an outer
/// message already quotes (a `thiserror` message that formats its source, for one) is not
/// repeated.
pub fn error_text(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let cause = cause.to_string();
        if text.contains(&cause) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&cause);
    }
    text
}

/// The registration's `timeoutSeconds` (both webhooks of
/// `manifests/base/validatingwebhookconfiguration.yaml`, held equal by a test). The webhook
/// cannot read its own registration (that would take RBAC on
/// validatingwebhookconfigurations, beyond what the rules read), so it knows the shipped
/// value; an overlay that changes `timeoutSeconds` keeps `lookupTimeout` below it.
pub const REGISTRATION_TIMEOUT: Duration = Duration::from_secs(5);

/// The policy file, with an error that names it (some of the parser's errors do not).
fn load_policy(path: &std::path::Path) -> Result<Policy> {
    Policy::from_file(path).map_err(|error| {
        let text = error.to_string();
        let shown = path.display().to_string();
        if text.contains(&shown) {
            anyhow::anyhow!(text)
        } else {
            anyhow::anyhow!("{shown}: {text}")
        }
    })
}

/// The effective policy, for the start-up log line: every option and every rule's action.
pub fn policy_summary(policy: &Policy) -> String {
    use crate::config::{CrossNamespace, FailureMode};
    let failure_mode = match policy.failure_mode {
        FailureMode::FailClosed => "fail-closed",
        FailureMode::FailOpen => "fail-open",
    };
    let cross_namespace = match policy.cross_namespace {
        CrossNamespace::Deny => "deny",
        CrossNamespace::ReferenceGrant => "reference-grant",
        CrossNamespace::Allow => "allow",
    };
    let rules: Vec<String> = crate::config::RuleId::ALL
        .iter()
        .map(|rule| format!("{}={}", rule.as_str(), policy.action(*rule).as_str()))
        .collect();
    format!(
        "failureMode={failure_mode} lookupTimeout={} crossNamespace={cross_namespace} \
         cloneCapableDrivers=[{}] rules: {}",
        humantime::format_duration(policy.lookup_timeout),
        policy.clone_capable_drivers.join(","),
        rules.join(" ")
    )
}

/// The start-up warning when `failureMode` cannot apply: a `lookupTimeout` not below the
/// registration's `timeoutSeconds` lets the API server give up first.
pub fn lookup_timeout_warning(policy: &Policy) -> Option<String> {
    (policy.lookup_timeout >= REGISTRATION_TIMEOUT).then(|| {
        format!(
            "lookupTimeout {} is not below the webhook registration's timeoutSeconds {}: \
             when the API server is slow it gives up first and applies failurePolicy, \
             not failureMode; set lookupTimeout below {}",
            humantime::format_duration(policy.lookup_timeout),
            REGISTRATION_TIMEOUT.as_secs(),
            humantime::format_duration(REGISTRATION_TIMEOUT),
        )
    })
}

/// One short line for a Kubernetes client that cannot be configured (kube's own error
/// lists every place it tried, with their causes, in several hundred characters).
pub(crate) fn kube_config_error(error: kube::Error) -> anyhow::Error {
    if let Some(paths) = std::env::var_os("KUBECONFIG").filter(|v| !v.is_empty()) {
        for path in std::env::split_paths(&paths) {
            if let Err(io) = std::fs::metadata(&path) {
                return anyhow::anyhow!(
                    "cannot read the kubeconfig {} (KUBECONFIG): {io}",
                    path.display()
                );
            }
        }
        return anyhow::anyhow!(
            "the kubeconfig in KUBECONFIG cannot be used: {}",
            root_cause(&error)
        );
    }
    let home = std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".kube/config"));
    match home {
        Some(path) if path.exists() => anyhow::anyhow!(
            "the kubeconfig {} cannot be used: {}",
            path.display(),
            root_cause(&error)
        ),
        _ if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() => anyhow::anyhow!(
            "the in-cluster Kubernetes configuration cannot be used: {}",
            root_cause(&error)
        ),
        _ => anyhow::anyhow!(
            "no Kubernetes configuration: set KUBECONFIG, create ~/.kube/config, or run in a pod"
        ),
    }
}

/// The innermost cause of an error: what actually went wrong.
fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}

/// The command line, whatever the binary is called; installed as `kubectl-pvc_clone_guard`
/// (a kubectl plugin), usage and errors name it `kubectl pvc-clone-guard`.
fn parse() -> Cli {
    let invoked_as = std::env::args_os()
        .next()
        .and_then(|arg0| {
            std::path::Path::new(&arg0)
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
        })
        .unwrap_or_default();
    let mut command = <Cli as clap::CommandFactory>::command();
    if invoked_as.starts_with("kubectl-") {
        command = command.bin_name("kubectl pvc-clone-guard");
    }
    let matches = command.get_matches();
    <Cli as clap::FromArgMatches>::from_arg_matches(&matches).unwrap_or_else(|error| error.exit())
}

fn run_certs(args: CertsArgs) -> Result<()> {
    let dns_names = if args.dns_names.is_empty() {
        certs::DEFAULT_DNS_NAMES.map(String::from).to_vec()
    } else {
        args.dns_names
    };
    let args_out_dir = args.out_dir.clone();
    let outcome = certs::generate(&CertsRequest {
        out_dir: args.out_dir,
        dns_names,
        ip_addresses: args.ip_addresses,
        days: args.days,
        ca_days: args.ca_days,
    })?;
    if outcome.created_ca {
        println!(
            "created a new CA {} (valid until {}): register it with the API server (caBundle)",
            outcome.ca_cert.display(),
            outcome.ca_not_after.date()
        );
    } else {
        println!(
            "used the existing CA {} (valid until {}): caBundle does not change",
            outcome.ca_cert.display(),
            outcome.ca_not_after.date()
        );
    }
    println!(
        "issued {} (valid until {}), signed by that CA",
        outcome.cert.display(),
        outcome.not_after.date()
    );
    println!("wrote:");
    for file in &outcome.files {
        println!("  {}", file.display());
    }
    println!("next: {}", certs::next_step(&args_out_dir));
    Ok(())
}

fn run_serve(args: ServeArgs) -> Result<()> {
    crate::memory::return_large_buffers_to_the_system();
    crate::listener::raise_open_file_limit();
    // Dropped when serve returns, after the drain: the last lines are written out.
    let _flush_on_exit = crate::logging::init(args.log_format);
    // kube and the server share one TLS library; name its crypto provider once.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(args))
}

/// Runs the webhook until SIGTERM or SIGINT, then drains and returns.
pub async fn serve(args: ServeArgs) -> Result<()> {
    let policy = match &args.config {
        Some(path) => load_policy(path)?,
        None => Policy::default(),
    };
    let effective_policy = policy_summary(&policy);
    if let Some(warning) = lookup_timeout_warning(&policy) {
        tracing::warn!("{warning}");
    }
    let cert = ReloadingCert::load(&args.tls_cert, &args.tls_key)?;
    let tls = cert
        .server_config()
        .context("cannot build the TLS configuration")?;
    cert.spawn_watch(args.cert_reload_interval);

    let kube_config = kube::Config::infer()
        .await
        .map_err(|error| kube_config_error(kube::Error::InferConfig(error)))?;
    // Named in the lines that report failing watches; one string for the process's life.
    let api_server: &'static str = Box::leak(kube_config.cluster_url.to_string().into_boxed_str());
    let client = kube::Client::try_from(kube_config).map_err(kube_config_error)?;
    let webhook = Webhook::new_from_config(
        WebhookConfig {
            policy,
            watch: WatchOptions {
                page_size: args.list_page_size,
                sync_wait: args.cache_sync_timeout,
                api_server,
            },
            timeouts: Timeouts {
                tls_handshake: args.tls_handshake_timeout,
                header_read: args.header_read_timeout,
                body_read: args.body_read_timeout,
                idle: args.idle_timeout,
                shutdown_grace: args.shutdown_grace,
                drain: args.drain_timeout,
            },
            limits: Limits {
                max_connections: args.max_connections as usize,
                max_pending_connections: args.max_pending_connections as usize,
                max_inflight_reviews: args.max_inflight_reviews as usize,
                max_inflight_large_reviews: args.max_inflight_large_reviews as usize,
                max_h2_streams: args.max_h2_streams,
            },
        },
        client,
    );
    cert.report_expiry_to(webhook.metrics());

    let listener = server::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let admin_listener = server::bind(args.admin_listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.admin_listen))?;
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        listen = %args.listen,
        admin_listen = %args.admin_listen,
        api_server,
        config = %args.config.as_ref().map_or("none (the defaults)".into(), |p| p.display().to_string()),
        policy = %effective_policy,
        "serving"
    );
    webhook
        .serve(listener, admin_listener, tls, shutdown_signal())
        .await;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registration_timeout_is_the_shipped_one() {
        let manifest: serde_yaml_ng::Value = serde_yaml_ng::from_str(include_str!(
            "../manifests/base/validatingwebhookconfiguration.yaml"
        ))
        .expect("the shipped webhook configuration parses");
        for webhook in manifest["webhooks"].as_sequence().expect("webhooks") {
            assert_eq!(
                webhook["timeoutSeconds"].as_u64(),
                Some(REGISTRATION_TIMEOUT.as_secs()),
                "{:?}",
                webhook["name"]
            );
        }
    }

    #[test]
    fn a_lookup_timeout_not_below_the_registrations_is_warned_about() {
        let mut policy = Policy::default();
        assert_eq!(lookup_timeout_warning(&policy), None);
        policy.lookup_timeout = Duration::from_millis(4900);
        assert_eq!(lookup_timeout_warning(&policy), None);
        policy.lookup_timeout = Duration::from_secs(5);
        assert_eq!(
            lookup_timeout_warning(&policy).as_deref(),
            Some(
                "lookupTimeout 5s is not below the webhook registration's timeoutSeconds 5: when \
                 the API server is slow it gives up first and applies failurePolicy, not \
                 failureMode; set lookupTimeout below 5s"
            )
        );
    }

    #[test]
    fn the_effective_policy_names_every_option_and_rule() {
        let summary = policy_summary(&Policy::default());
        assert!(
            summary.starts_with(
                "failureMode=fail-closed lookupTimeout=3s crossNamespace=deny cloneCapableDrivers=[] rules: same-namespace=deny "
            ),
            "{summary}"
        );
        for rule in crate::config::RuleId::ALL {
            assert!(
                summary.contains(&format!(" {}=", rule.as_str())),
                "{rule:?}"
            );
        }
        assert!(summary.contains(" clone-capable-driver=off "), "{summary}");
    }

    #[test]
    fn each_cause_is_said_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file or directory");
        let error = anyhow::Error::new(io).context("cannot read /x.crt");
        assert_eq!(
            error_text(&error),
            "cannot read /x.crt: No such file or directory"
        );

        #[derive(Debug, thiserror::Error)]
        #[error("cannot read /x.crt: {source}")]
        struct Quoting {
            source: std::io::Error,
        }
        let error = anyhow::Error::new(Quoting {
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "gone"),
        });
        assert_eq!(format!("{error:#}"), "cannot read /x.crt: gone: gone");
        assert_eq!(error_text(&error), "cannot read /x.crt: gone");
    }
}
