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
//!
//! Two small pieces are plugged into the stock parts, for the CPU of a review under load
//! (BENCHMARKS.md, "Issue 18"): [`Gathering`], the `io::Write` the appender's worker thread
//! writes to, so that lines are written in batches and the worker is not woken for each
//! line; and [`CachedSecondTimer`], the timestamp of each line.

use std::cell::Cell;
use std::fmt;
use std::io::{self, BufWriter, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::ValueEnum;
use tracing_appender::non_blocking::{NonBlocking, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;
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
        .with_timer(CachedSecondTimer)
        .finish()
}

/// The process's log writer: tracing-appender's non-blocking writer (lossless, its queue
/// bounded) in front of `out`, written in batches (see [`Gathering`]). Keep the guard: dropping
/// it writes out the lines still queued.
pub fn writer<W: Write + Send + 'static>(out: W) -> (NonBlocking, WorkerGuard) {
    NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(QUEUED_LINES)
        .thread_name("log-writer")
        .finish(Gathering::new(out))
}

/// Installs the process's subscriber. Keep the guard for the life of the process: dropping
/// it writes out the lines still queued.
pub fn init(format: LogFormat) -> WorkerGuard {
    let (writer, guard) = writer(io::stderr());
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

/// How long the lines of a busy moment gather in the appender's queue after a batch is
/// written (at 30,000 reviews/s, ~300 lines, ~100 KiB, well within [`QUEUED_LINES`]).
const GATHER: Duration = Duration::from_millis(10);

/// What tracing-appender's worker thread writes the lines to: `out` behind a buffer, in
/// batches.
///
/// The worker blocks on its queue when the queue is empty, writes what it finds there, then
/// flushes its writer. Written to as is, stderr took one `write(2)` per line; and while the
/// worker keeps up, each line finds it blocked and wakes it: a futex wake and two context
/// switches per review on the one core the server is pinned to, CPU that callgrind's counts
/// do not show. Here the lines are buffered, written out when the worker flushes (its queue
/// drained), and the worker then lingers for [`GATHER`], so the lines of a busy moment wait
/// in the queue (a send to a queue whose reader is not blocked wakes nobody) and are
/// written in one go. A lone line, the worker idle, is written at once. The queue stays
/// bounded and lossless. Figure: BENCHMARKS.md ("Issue 18", the writer).
pub struct Gathering<W: Write> {
    out: BufWriter<W>,
    /// Lines written since the last flush.
    pending: bool,
}

impl<W: Write> Gathering<W> {
    pub fn new(out: W) -> Self {
        Gathering {
            out: BufWriter::with_capacity(64 * 1024, out),
            pending: false,
        }
    }
}

impl<W: Write> Write for Gathering<W> {
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        self.pending = true;
        self.out.write(line)
    }

    fn write_all(&mut self, line: &[u8]) -> io::Result<()> {
        self.pending = true;
        self.out.write_all(line)
    }

    fn flush(&mut self) -> io::Result<()> {
        let result = self.out.flush();
        if std::mem::take(&mut self.pending) {
            std::thread::sleep(GATHER);
        }
        result
    }
}

/// The timestamp of each line, written as tracing-subscriber's default timer writes it
/// (`2026-11-30T22:15:03.123456Z`, UTC, microseconds), with the date and time of day worked
/// out once a second (per thread) instead of for every line. Figure: BENCHMARKS.md ("Issue
/// 18", the timer).
#[derive(Debug, Clone, Copy, Default)]
pub struct CachedSecondTimer;

/// Seconds since the epoch of year 10000: the stock timer writes those years differently.
const YEAR_10000: u64 = 253_402_300_800;

impl FormatTime for CachedSecondTimer {
    fn format_time(&self, w: &mut Writer<'_>) -> fmt::Result {
        thread_local! {
            /// The second last formatted and its `YYYY-MM-DDTHH:MM:SS`.
            static SECOND: Cell<(u64, [u8; 19])> = const { Cell::new((u64::MAX, [0; 19])) };
        }
        let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH);
        let Some(now) = since_epoch.ok().filter(|now| now.as_secs() < YEAR_10000) else {
            return tracing_subscriber::fmt::time::SystemTime.format_time(w);
        };
        let seconds = now.as_secs();
        let (cached, mut text) = SECOND.get();
        if cached != seconds {
            let whole =
                humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(seconds));
            text.copy_from_slice(&whole.to_string().as_bytes()[..19]);
            SECOND.set((seconds, text));
        }
        let mut line = [0u8; 27];
        line[..19].copy_from_slice(&text);
        line[19] = b'.';
        let mut micros = now.subsec_micros();
        for digit in line[20..26].iter_mut().rev() {
            *digit = b'0' + (micros % 10) as u8;
            micros /= 10;
        }
        line[26] = b'Z';
        w.write_str(std::str::from_utf8(&line).map_err(|_| fmt::Error)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cached timer writes what the stock one writes, to the second (the microseconds
    /// of two calls differ).
    #[test]
    fn timer_writes_the_stock_format() {
        for _ in 0..3 {
            let (mut ours, mut stock) = (String::new(), String::new());
            CachedSecondTimer
                .format_time(&mut Writer::new(&mut ours))
                .unwrap();
            tracing_subscriber::fmt::time::SystemTime
                .format_time(&mut Writer::new(&mut stock))
                .unwrap();
            assert_eq!(ours.len(), stock.len(), "{ours} vs {stock}");
            assert_eq!(ours.len(), 27, "{ours}");
            assert!(ours.ends_with('Z') && ours.as_bytes()[19] == b'.', "{ours}");
            if ours[..19] == stock[..19] {
                return;
            }
        }
        panic!("the cached timer's second never matched the stock timer's");
    }

    /// Lines are written when the worker flushes, all of them, in order.
    #[test]
    fn gathering_writes_every_line_at_flush() {
        let mut out = Gathering::new(Vec::new());
        out.write_all(b"one\n").unwrap();
        out.write_all(b"two\n").unwrap();
        out.flush().unwrap();
        assert_eq!(out.out.get_ref().as_slice(), b"one\ntwo\n");
    }
}
