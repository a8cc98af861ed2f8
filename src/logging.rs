//! The JSON log format: one object per line, as tracing-subscriber's
//! `fmt().json().flatten_event(true)` writes it, without its cost on the review path.
//!
//! The stock formatter writes each event through serde_json into an `io::Write` adaptor
//! that checks every small piece for UTF-8 before handing it on (`"`, a key, `":`, ...):
//! about 23k instructions for the review line, a third of a plain review's parse + judge
//! (BENCHMARKS.md). [`JsonLine`] writes the same line, key for key and byte for byte
//! (`timestamp`, `level`, the event's fields in the order they are recorded, `target`),
//! straight into the formatter's buffer. Events it does not write itself go to the stock
//! formatter: those inside a span (whose JSON lists the spans) and those of other crates
//! (e.g. records of the `log` crate, whose metadata the stock formatter normalizes).

use std::cell::RefCell;
use std::fmt::{self, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{Format, Json, JsonFields, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent};
use tracing_subscriber::registry::LookupSpan;

/// The event format of `--log-format json`; its fields formatter is [`JsonFields`] (see
/// [`json_subscriber`]).
#[derive(Debug)]
pub struct JsonLine {
    stock: Format<Json, SystemTime>,
}

impl Default for JsonLine {
    fn default() -> Self {
        JsonLine {
            stock: Format::default().json().flatten_event(true),
        }
    }
}

/// The subscriber of `--log-format json`, writing to `writer`, with `filter`.
pub fn json_subscriber<W>(
    filter: tracing_subscriber::EnvFilter,
    writer: W,
) -> impl Subscriber + Send + Sync + 'static
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .json()
        .flatten_event(true)
        .event_format(JsonLine::default())
        .finish()
}

impl<S> FormatEvent<S, JsonFields> for JsonLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, JsonFields>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let in_span = event
            .parent()
            .and_then(|id| ctx.span(id))
            .or_else(|| ctx.lookup_current())
            .is_some();
        if in_span || !meta.target().starts_with(env!("CARGO_CRATE_NAME")) {
            return self.stock.format_event(ctx, writer, event);
        }
        // The line is put together in a buffer of this thread (one `String`, not the
        // writer's `dyn fmt::Write`: a line is ~30 small writes) and handed on at once. A
        // field whose `Debug` logs an event of its own finds the buffer taken and gets a
        // new one.
        thread_local! {
            static LINE: RefCell<String> = const { RefCell::new(String::new()) };
        }
        let mut write = |line: &mut String| -> fmt::Result {
            line.clear();
            line.push_str("{\"timestamp\":\"");
            write_timestamp(line)?;
            line.push_str("\",\"level\":\"");
            line.push_str(meta.level().as_str());
            line.push('"');
            let mut fields = JsonFieldsVisitor {
                out: &mut *line,
                result: Ok(()),
            };
            event.record(&mut fields);
            fields.result?;
            line.push_str(",\"target\":");
            write_json_str(line, meta.target())?;
            line.push_str("}\n");
            writer.write_str(line)
        };
        LINE.with(|buffer| match buffer.try_borrow_mut() {
            Ok(mut line) => write(&mut line),
            Err(_) => write(&mut String::new()),
        })
    }
}

/// tracing-subscriber's `SystemTime` timestamp, `2026-11-22T02:34:54.123456Z` (RFC 3339 in
/// UTC, microseconds), with the part up to the second formatted once a second instead of
/// once a line (it was about a fifth of the review line's cost). Outside the years
/// 0-9999 (a clock gone astray), the stock formatter writes it.
fn write_timestamp(out: &mut String) -> fmt::Result {
    thread_local! {
        static SECOND: RefCell<(u64, String)> = const { RefCell::new((0, String::new())) };
    }
    let stock = |out: &mut String| SystemTime.format_time(&mut Writer::new(out));
    let Ok(since_epoch) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) else {
        return stock(out);
    };
    let second = since_epoch.as_secs();
    let cached = SECOND.with(|cached| {
        let mut cached = cached.borrow_mut();
        if cached.0 != second || cached.1.is_empty() {
            let calendar = i64::try_from(second)
                .ok()
                .and_then(|second| time::OffsetDateTime::from_unix_timestamp(second).ok())
                .filter(|t| (0..=9999).contains(&t.year()));
            let Some(t) = calendar else {
                return false;
            };
            cached.1.clear();
            let _ = write!(
                cached.1,
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute(),
                t.second()
            );
            cached.0 = second;
        }
        out.push_str(&cached.1);
        true
    });
    if !cached {
        return stock(out);
    }
    let mut micros = since_epoch.subsec_micros();
    let mut digits = [b'0'; 6];
    for digit in digits.iter_mut().rev() {
        *digit = b'0' + (micros % 10) as u8;
        micros /= 10;
    }
    out.extend(digits.iter().map(|&digit| char::from(digit)));
    out.push('Z');
    Ok(())
}

/// Where the log lines go: stderr, written by a thread of its own (a slow reader of the log
/// never stalls a review), in batches.
///
/// Why not tracing-appender's `non_blocking`, which this replaced: it hands each line to
/// its thread as a message of its own (a `Vec` allocated, sent through a channel, received,
/// written and freed per line), about 0.4 µs of a review's CPU on one core (BENCHMARKS.md).
/// Here a line is appended to a shared buffer under a lock. The thread writes the buffer
/// out in one `write(2)`, then lets lines gather for [`GATHER`] before the next; an idle
/// thread is woken by the first line, so a lone line is written at once. Lossless: past
/// [`MAX_PENDING`] bytes not yet written, a line waits for the thread instead of being
/// dropped (as `non_blocking` was configured, `lossy(false)`).
#[derive(Clone)]
pub struct LogWriter {
    shared: Arc<Shared>,
}

/// Writes out what is left when dropped (at exit), then stops the thread.
pub struct LogGuard {
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

struct Shared {
    pending: Mutex<Pending>,
    /// Signalled when the thread took the pending lines.
    drained: Condvar,
    thread: OnceLock<std::thread::Thread>,
}

#[derive(Default)]
struct Pending {
    lines: Vec<u8>,
    /// The thread found nothing to write and sleeps until a line wakes it.
    idle: bool,
    closed: bool,
}

/// How long the lines of a busy moment gather before the next write.
const GATHER: Duration = Duration::from_millis(10);
/// Lines not yet written, past which a new line waits for the thread: ~12,000 review lines,
/// slack for a log reader that stalls for a moment, and at most 8 MiB with the batch being
/// written (tracing-appender's queue of 128,000 lines could hold ~45 MiB, a third of the
/// Deployment's memory limit).
const MAX_PENDING: usize = 4 * 1024 * 1024;
/// What the thread keeps of its buffer after a burst.
const KEEP: usize = 64 * 1024;

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn wake(&self) {
        if let Some(thread) = self.thread.get() {
            thread.unpark();
        }
    }
}

/// The writer of the log lines to stderr, and the guard that flushes it at exit. `Err`
/// when its thread cannot be started (the process then does not start either).
pub fn stderr_writer() -> std::io::Result<(LogWriter, LogGuard)> {
    writer_to(std::io::stderr())
}

fn writer_to<W: std::io::Write + Send + 'static>(out: W) -> std::io::Result<(LogWriter, LogGuard)> {
    let shared = Arc::new(Shared {
        pending: Mutex::new(Pending::default()),
        drained: Condvar::new(),
        thread: OnceLock::new(),
    });
    let thread = {
        let shared = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(move || write_batches(&shared, out))?
    };
    let _ = shared.thread.set(thread.thread().clone());
    Ok((
        LogWriter {
            shared: Arc::clone(&shared),
        },
        LogGuard {
            shared,
            thread: Some(thread),
        },
    ))
}

fn write_batches(shared: &Shared, mut out: impl std::io::Write) {
    let mut batch = Vec::new();
    loop {
        {
            let mut pending = shared.lock();
            if pending.lines.is_empty() {
                if pending.closed {
                    return;
                }
                // Idle: what a burst grew the buffers to is given back. Not between two
                // batches: buffers that shrink and grow again every few milliseconds cost
                // fresh pages (and, past the mmap threshold, a mapping) every time.
                pending.lines.shrink_to(KEEP);
                batch.shrink_to(KEEP);
                pending.idle = true;
                drop(pending);
                std::thread::park();
                continue;
            }
            std::mem::swap(&mut pending.lines, &mut batch);
        }
        shared.drained.notify_all();
        // A write error has nowhere to be reported: the log is where it would go.
        let _ = out.write_all(&batch).and_then(|()| out.flush());
        batch.clear();
        std::thread::park_timeout(GATHER);
    }
}

impl std::io::Write for &LogWriter {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        let mut pending = self.shared.lock();
        while pending.lines.len() >= MAX_PENDING && !pending.closed {
            self.shared.wake();
            pending = self
                .shared
                .drained
                .wait(pending)
                .unwrap_or_else(PoisonError::into_inner);
        }
        let wake = std::mem::take(&mut pending.idle);
        pending.lines.extend_from_slice(line);
        drop(pending);
        if wake {
            self.shared.wake();
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = &'a LogWriter;

    fn make_writer(&'a self) -> Self::Writer {
        self
    }
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.wake();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Writes each field as `,"name":value`, the way `tracing_serde::SerdeMapVisitor` through
/// serde_json does: numbers and booleans bare, everything else a JSON string of its
/// `Debug` (a `%` field's `Display`).
struct JsonFieldsVisitor<'a, W: Write> {
    out: &'a mut W,
    result: fmt::Result,
}

impl<W: Write> JsonFieldsVisitor<'_, W> {
    fn entry(&mut self, field: &Field, value: impl FnOnce(&mut W) -> fmt::Result) {
        if self.result.is_ok() {
            self.result = (|| {
                self.out.write_char(',')?;
                write_json_str(self.out, field.name())?;
                self.out.write_char(':')?;
                value(self.out)
            })();
        }
    }
}

impl<W: Write> Visit for JsonFieldsVisitor<'_, W> {
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.entry(field, |out| {
            out.write_str(if value { "true" } else { "false" })
        });
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.entry(field, |out| {
            out.write_str(itoa::Buffer::new().format(value))
        });
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.entry(field, |out| {
            out.write_str(itoa::Buffer::new().format(value))
        });
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        // Rare: serde_json's own rendering (shortest round trip; NaN and infinities null).
        self.entry(field, |out| {
            out.write_str(&serde_json::to_string(&value).map_err(|_| fmt::Error)?)
        });
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.entry(field, |out| write_json_str(out, value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.entry(field, |out| {
            out.write_char('"')?;
            write!(JsonEscaped(out), "{value:?}")?;
            out.write_char('"')
        });
    }
}

fn write_json_str<W: Write + ?Sized>(out: &mut W, value: &str) -> fmt::Result {
    out.write_char('"')?;
    JsonEscaped(out).write_str(value)?;
    out.write_char('"')
}

/// The bytes [`JsonEscaped`] escapes: `"`, `\` and the control characters (one table
/// look-up per byte, as serde_json does).
static NEEDS_ESCAPE: [bool; 256] = {
    let mut table = [false; 256];
    let mut byte = 0;
    while byte < 0x20 {
        table[byte] = true;
        byte += 1;
    }
    table[b'"' as usize] = true;
    table[b'\\' as usize] = true;
    table
};

/// Escapes what it is given as serde_json escapes a string's contents: `"`, `\` and the
/// control characters below U+0020 (`\b`, `\t`, `\n`, `\f`, `\r` by name, the others as
/// `\u00XX`); everything else, non-ASCII included, as it is.
struct JsonEscaped<'a, W: Write + ?Sized>(&'a mut W);

impl<W: Write + ?Sized> Write for JsonEscaped<'_, W> {
    fn write_str(&mut self, value: &str) -> fmt::Result {
        let bytes = value.as_bytes();
        let mut start = 0;
        for (index, &byte) in bytes.iter().enumerate() {
            if !NEEDS_ESCAPE[usize::from(byte)] {
                continue;
            }
            let escape: &str = match byte {
                b'"' => "\\\"",
                b'\\' => "\\\\",
                b'\x08' => "\\b",
                b'\t' => "\\t",
                b'\n' => "\\n",
                b'\x0c' => "\\f",
                b'\r' => "\\r",
                _ => "",
            };
            // Every byte escaped is ASCII: the slices end on character boundaries.
            self.0.write_str(&value[start..index])?;
            if escape.is_empty() {
                write!(self.0, "\\u{byte:04x}")?;
            } else {
                self.0.write_str(escape)?;
            }
            start = index + 1;
        }
        self.0.write_str(&value[start..])
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'w> tracing_subscriber::fmt::MakeWriter<'w> for Captured {
        type Writer = Captured;
        fn make_writer(&'w self) -> Captured {
            self.clone()
        }
    }

    /// The lines of both formatters, with the timestamps (which differ) cut out.
    fn lines(subscriber: impl Subscriber + Send + Sync + 'static, out: &Captured) -> Vec<String> {
        tracing::subscriber::with_default(subscriber, sample_events);
        let text = String::from_utf8(out.0.lock().expect("lock").clone()).expect("utf-8");
        text.lines()
            .map(|line| {
                let value: serde_json::Value = serde_json::from_str(line).expect("json line");
                assert!(
                    value["timestamp"]
                        .as_str()
                        .is_some_and(|t| t.ends_with('Z'))
                );
                let end = line.find("\",\"level\"").expect("level after timestamp");
                line[end..].to_owned()
            })
            .collect()
    }

    fn sample_events() {
        struct Joined;
        impl fmt::Display for Joined {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("size,volume-mode")
            }
        }
        tracing::info!(
            uid = "0c5b6a3e-\"quoted\"\\back\u{1}\u{7f}é\n",
            operation = "CREATE",
            kind = "PersistentVolumeClaim",
            namespace = "dev",
            name = "data",
            dry_run = false,
            verdict = "denied",
            skipped = "",
            rules = %Joined,
            cause = "",
            elapsed_us = 123u64,
            "review"
        );
        tracing::warn!(error = %io::Error::other("bad \"thing\"\ttab"), "refused");
        tracing::info!(
            signed = -5i64,
            float = 1.5f64,
            nan = f64::NAN,
            big = 1u128 << 70,
            "numbers"
        );
        tracing::error!(value = ?Some("debug"), "message with \"quotes\" {}", 42);
        let span = tracing::info_span!("outer", id = 7);
        let _entered = span.enter();
        tracing::info!(inside = true, "in a span");
    }

    #[test]
    fn the_log_writer_writes_every_line_in_order_and_a_lone_line_at_once() {
        use std::io::Write as _;
        let out = Captured::default();
        let (writer, guard) = writer_to(out.clone()).expect("log writer");
        // A lone line, with the thread idle: written without waiting for more.
        (&writer).write_all(b"first\n").expect("write");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while out.0.lock().expect("lock").is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "the lone line was not written"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        // Twice MAX_PENDING from four threads: writers wait, nothing is lost.
        const LINES_PER_THREAD: usize = 2 * MAX_PENDING / 1000 / 4;
        let line = [b'x'; 999];
        std::thread::scope(|scope| {
            for thread in 0..4u8 {
                let writer = &writer;
                scope.spawn(move || {
                    for _ in 0..LINES_PER_THREAD {
                        let mut text = line.to_vec();
                        text[0] = b'0' + thread;
                        text.push(b'\n');
                        let mut writer = writer;
                        writer.write_all(&text).expect("write");
                    }
                });
            }
        });
        drop(guard);
        let text = out.0.lock().expect("lock").clone();
        let lines: Vec<&[u8]> = text
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .collect();
        assert_eq!(lines.len(), 1 + 4 * LINES_PER_THREAD);
        assert_eq!(lines[0], b"first");
        for thread in 0..4u8 {
            assert_eq!(
                lines
                    .iter()
                    .filter(|l| l.len() == 999 && l[0] == b'0' + thread)
                    .count(),
                LINES_PER_THREAD
            );
        }
    }

    #[test]
    fn timestamps_are_those_of_the_stock_formatter() {
        // Read one after the other, the two agree up to the second unless a second
        // boundary falls between them: then read again.
        for _ in 0..100 {
            let mut stock = String::new();
            SystemTime
                .format_time(&mut Writer::new(&mut stock))
                .expect("stock");
            let mut ours = String::new();
            write_timestamp(&mut ours).expect("ours");
            assert_eq!(ours.len(), stock.len(), "{ours} vs {stock}");
            if ours[..20] != stock[..20] {
                continue;
            }
            assert!(ours[20..26].bytes().all(|b| b.is_ascii_digit()), "{ours}");
            assert!(ours.ends_with('Z') && ours >= stock, "{ours} vs {stock}");
            return;
        }
        panic!("the clock never stayed within a second");
    }

    #[test]
    fn json_lines_are_those_of_the_stock_json_formatter() {
        let filter = || tracing_subscriber::EnvFilter::new("trace");
        let ours = Captured::default();
        let stock = Captured::default();
        let mine = lines(json_subscriber(filter(), ours.clone()), &ours);
        let theirs = lines(
            tracing_subscriber::fmt()
                .with_env_filter(filter())
                .with_writer(stock.clone())
                .json()
                .flatten_event(true)
                .finish(),
            &stock,
        );
        assert_eq!(mine.len(), 5);
        assert_eq!(mine, theirs);
    }
}
