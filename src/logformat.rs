//! PgBouncer's log line layout for tracing: `2026-11-30 21:59:25.123 UTC [12345] LOG message`.
//!
//! Operators' greps and PgBouncer's own test suite look for the level words (`WARNING invalid
//! ...`, `LOG ...`), so they are PgBouncer's: FATAL, ERROR, WARNING, LOG (info), DEBUG (`-v`),
//! NOISE (`-vv`, tracing's trace). tracing has no level above error; an error event with the
//! target [`FATAL`] prints as FATAL (start-up failures before exit, as PgBouncer's `die()`).
//!
//! The header is built in a stack buffer and written once; an open span (only the debug-level
//! `client` span exists) names itself next, then the message and any other fields follow through
//! the subscriber's field formatter (` key=value`, as its default layout did). No colours, no
//! target. Client-controlled text is escaped where it is logged (`logsafe::Clean`), not here.
//! Owns no writer: where lines go is `logsink`'s business.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

use crate::logsafe::civil_from_days;

/// The target that turns an error event into a FATAL line:
/// `tracing::error!(target: FATAL, "cannot load config file")`. Under the crate's own target
/// so that a filter naming `ollyscale_pooler` keeps it.
pub const FATAL: &str = "ollyscale_pooler::fatal";

/// PgBouncer's word for an event's level.
pub fn level_word(meta: &Metadata<'_>) -> &'static str {
    match *meta.level() {
        Level::ERROR if meta.target() == FATAL => "FATAL",
        Level::ERROR => "ERROR",
        Level::WARN => "WARNING",
        Level::INFO => "LOG",
        Level::DEBUG => "DEBUG",
        Level::TRACE => "NOISE",
    }
}

/// The event formatter. The pid is read once: the process never changes it after logging starts
/// (`-d` re-executes the binary, which then sets up its own logging).
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    pid: u32,
    /// Time since the epoch; a parameter so tests can fix it.
    clock: fn() -> Duration,
}

impl Default for Layout {
    fn default() -> Self {
        Layout::new()
    }
}

fn system_clock() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// `YYYY-MM-DD HH:MM:SS.mmm UTC [` + 10 pid digits + `] ` + `WARNING` + ` `.
const HEADER_MAX: usize = 27 + 2 + 10 + 2 + 7 + 1;

impl Layout {
    /// This process's pid and the system clock.
    pub fn new() -> Self {
        Layout {
            pid: std::process::id(),
            clock: system_clock,
        }
    }

    /// A fixed pid and clock (tests).
    pub fn with(pid: u32, clock: fn() -> Duration) -> Self {
        Layout { pid, clock }
    }

    /// Writes `<time> UTC [<pid>] <LEVEL> ` into `out`; returns the length.
    fn header(&self, meta: &Metadata<'_>, out: &mut [u8; HEADER_MAX]) -> usize {
        let now = (self.clock)();
        let mut n = timestamp(now.as_secs(), now.subsec_millis(), out);
        out[n] = b' ';
        out[n + 1] = b'[';
        n += 2;
        let mut digits = [0; 20];
        let pid = crate::logsafe::decimal(u64::from(self.pid), &mut digits).as_bytes();
        out[n..n + pid.len()].copy_from_slice(pid);
        n += pid.len();
        out[n] = b']';
        out[n + 1] = b' ';
        n += 2;
        let word = level_word(meta).as_bytes();
        out[n..n + word.len()].copy_from_slice(word);
        n += word.len();
        out[n] = b' ';
        n + 1
    }
}

impl<S, N> FormatEvent<S, N> for Layout
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut buf = [0u8; HEADER_MAX];
        let n = self.header(event.metadata(), &mut buf);
        writer.write_str(std::str::from_utf8(&buf[..n]).map_err(|_| fmt::Error)?)?;
        // Debug lines inside a session name it through the `client` span, as the default did.
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                writer.write_str(span.name())?;
                let ext = span.extensions();
                if let Some(fields) = ext.get::<FormattedFields<N>>() {
                    if !fields.is_empty() {
                        write!(writer, "{{{fields}}}")?;
                    }
                }
                writer.write_str(": ")?;
            }
        }
        ctx.format_fields(writer.by_ref(), event)?;
        writer.write_char('\n')
    }
}

/// Writes `secs` (since 1970, UTC) and `millis` as `YYYY-MM-DD HH:MM:SS.mmm UTC`; returns the
/// length (27). UTC, not local time as PgBouncer: no libc `localtime` (not thread-safe with
/// `setenv`, and a file read per call without TZ), and containers run UTC anyway; the zone
/// is printed so a reader never has to guess. Years past 9999 are clamped (no clock reads that).
fn timestamp(secs: u64, millis: u32, out: &mut [u8; HEADER_MAX]) -> usize {
    let (y, m, d) = civil_from_days(secs / 86_400);
    let rem = secs % 86_400;
    let mut put = |at: usize, v: u64, width: usize| {
        let mut v = v;
        for i in (at..at + width).rev() {
            out[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, y.min(9999), 4);
    put(5, m, 2);
    put(8, d, 2);
    put(11, rem / 3600, 2);
    put(14, rem / 60 % 60, 2);
    put(17, rem % 60, 2);
    put(20, u64::from(millis.min(999)), 3);
    out[4] = b'-';
    out[7] = b'-';
    out[10] = b' ';
    out[13] = b':';
    out[16] = b':';
    out[19] = b'.';
    out[23..27].copy_from_slice(b" UTC");
    27
}

/// The message part of a line this layout wrote: what syslog gets, since syslog stamps time,
/// pid and priority itself. A line of another shape is returned whole.
pub fn message_of(line: &str) -> &str {
    let line = line.trim_end();
    // The time is fixed-width; the pid is the first `[...]` after it; one word follows.
    let Some(rest) = line.get(27..).and_then(|r| r.strip_prefix(" [")) else {
        return line;
    };
    let Some((_, rest)) = rest.split_once("] ") else {
        return line;
    };
    match rest.split_once(' ') {
        Some((_, message)) => message,
        None => line,
    }
}

#[cfg(test)]
mod tests;
