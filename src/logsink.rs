//! The tracing writer that also hands each log line to syslog(3) while the `syslog` setting is
//! on: it wraps whatever writer logging uses (the `logfile`, stderr, or nothing with `-q`), so
//! lines keep going where they went and syslog gets a copy with the matching priority.
//! It owns no formatting beyond dropping the timestamp and level, which syslog adds itself.

use std::io::{self, Write};
use std::sync::Arc;

use tracing::{Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;

use crate::sys::{Priority, Syslog};

/// A `MakeWriter` that tees into syslog.
pub struct Tee<M> {
    inner: M,
    syslog: Arc<Syslog>,
}

impl<M> Tee<M> {
    /// Wraps `inner`; `syslog` decides at each line whether a copy goes out.
    pub fn new(inner: M, syslog: Arc<Syslog>) -> Self {
        Tee { inner, syslog }
    }
}

/// One event's writer: passes bytes through and keeps a copy for syslog until it is dropped
/// (tracing's fmt layer writes an event, then drops its writer).
pub struct TeeWriter<'a, W: Write> {
    inner: W,
    syslog: &'a Syslog,
    priority: Priority,
    /// The line so far; stays empty while syslog is off.
    line: Vec<u8>,
    copy: bool,
}

fn priority(level: &Level) -> Priority {
    match *level {
        Level::ERROR => Priority::Error,
        Level::WARN => Priority::Warning,
        Level::INFO => Priority::Info,
        _ => Priority::Debug,
    }
}

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for Tee<M> {
    type Writer = TeeWriter<'a, M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        TeeWriter {
            inner: self.inner.make_writer(),
            syslog: &self.syslog,
            priority: Priority::Info,
            line: Vec::new(),
            copy: self.syslog.enabled(),
        }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Self::Writer {
        TeeWriter {
            inner: self.inner.make_writer_for(meta),
            syslog: &self.syslog,
            priority: priority(meta.level()),
            line: Vec::new(),
            copy: self.syslog.enabled(),
        }
    }
}

impl<W: Write> Write for TeeWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.copy {
            self.line.extend_from_slice(buf);
        }
        self.inner.write_all(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// `2026-01-01T00:00:00.000000Z  INFO text` → `text`: syslog stamps time and priority itself.
fn message(line: &str) -> &str {
    let line = line.trim_end();
    let mut rest = line;
    for _ in 0..2 {
        rest = rest.trim_start();
        match rest.find(char::is_whitespace) {
            Some(i) => rest = &rest[i..],
            None => return line,
        }
    }
    rest.trim_start()
}

impl<W: Write> Drop for TeeWriter<'_, W> {
    fn drop(&mut self) {
        if !self.line.is_empty() {
            let line = String::from_utf8_lossy(&self.line);
            self.syslog.send(self.priority, message(&line));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamp_and_level_are_dropped() {
        assert_eq!(
            message("2026-11-30T12:00:00.123456Z  INFO C-1 login attempt: db=x\n"),
            "C-1 login attempt: db=x"
        );
        assert_eq!(message("odd"), "odd");
    }

    #[test]
    fn lines_pass_through_while_syslog_is_off() {
        let syslog = Arc::new(Syslog::default());
        let tee = Tee::new(Vec::<u8>::new, syslog);
        let mut w = tee.make_writer();
        w.write_all(b"hello\n").unwrap();
        assert!(w.line.is_empty());
        assert_eq!(w.inner, b"hello\n");
    }
}
