//! The log: stock parts. tracing-subscriber's JSON formatter with the event's fields at the
//! top level (`flatten_event`), so a review line reads `{"timestamp":…,"level":"INFO",
//! "message":"review","uid":…,"verdict":…,"elapsed_us":…,"target":…}`, or its text
//! formatter for people; written to stderr by tracing-appender's non-blocking writer, so a
//! slow reader of the log never stalls a review.
//!
//! The writer is lossless (a line waits for room rather than being dropped) and its queue is
//! bounded to about 4 MiB of review lines; the guard [`init`] returns writes out what is
//! queued when it is dropped, at the end of `serve` (after the SIGTERM drain), so the last
//! lines are not lost. What the line costs a review: BENCHMARKS.md ("The log line").

use clap::ValueEnum;
use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::util::SubscriberInitExt;

/// `--log-format`: JSON for collectors, text for people.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Json,
    Text,
}

/// Lines queued for the writer thread before a new line waits: a review line is ~350
/// bytes, so ~4 MiB at most. tracing-appender's default, 128,000, allocates its queue's
/// slots up front (+4 MiB idle RSS when this webhook used it before, BENCHMARKS.md) and
/// could hold ~45 MiB of lines, a third of the Deployment's memory limit.
const QUEUED_LINES: usize = 12_000;

/// The filter when `RUST_LOG` is not set. kube-client logs an ERROR for every failed
/// request, without the server's address: a watch retrying against an unreachable API
/// server wrote ~4 a second. The watches report their own failures instead, once per streak
/// and naming the server (facts::cache); RUST_LOG set by hand shows kube-client's lines.
fn default_filter() -> EnvFilter {
    EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,kube_client::client::builder=off"))
}

/// The subscriber of `--log-format json`, writing to `writer` (the benchmarks price the
/// review line with it).
pub fn json_subscriber<W>(filter: EnvFilter, writer: W) -> impl tracing::Subscriber + Send + Sync
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .json()
        .flatten_event(true)
        .finish()
}

/// Installs the process's subscriber. Keep the guard for the life of the process: dropping
/// it writes out the lines still queued.
pub fn init(format: LogFormat) -> WorkerGuard {
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(QUEUED_LINES)
        .thread_name("log-writer")
        .finish(std::io::stderr());
    match format {
        LogFormat::Json => json_subscriber(default_filter(), writer).init(),
        LogFormat::Text => tracing_subscriber::fmt()
            .with_env_filter(default_filter())
            .with_writer(writer)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
    guard
}
