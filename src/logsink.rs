//! The tracing writer that also hands each log line to syslog(3) while the `syslog` setting is
//! on: it wraps whatever writer logging uses (the `logfile`, stderr, or nothing with `-q`), so
//! lines keep going where they went and syslog gets a copy with the matching priority.
//! It owns no formatting beyond dropping the time, pid and level (`logformat::message_of`),
//! which syslog adds itself.

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

fn priority(meta: &Metadata<'_>) -> Priority {
    match *meta.level() {
        Level::ERROR if meta.target() == crate::logformat::FATAL => Priority::Critical,
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
            priority: priority(meta),
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

impl<W: Write> Drop for TeeWriter<'_, W> {
    fn drop(&mut self) {
        if !self.line.is_empty() {
            let line = String::from_utf8_lossy(&self.line);
            self.syslog
                .send(self.priority, crate::logformat::message_of(&line));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fatal_lines_go_to_syslog_as_critical() {
        use parking_lot::Mutex;
        use tracing_subscriber::layer::{Context, SubscriberExt};

        struct Probe(Arc<Mutex<Vec<Priority>>>);
        impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Probe {
            fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
                self.0.lock().push(priority(event.metadata()));
            }
        }
        let seen = Arc::new(Mutex::new(Vec::new()));
        let subscriber = tracing_subscriber::registry().with(Probe(seen.clone()));
        tracing::subscriber::with_default(subscriber, || {
            tracing::error!(target: crate::logformat::FATAL, "cannot load config file");
            tracing::error!("e");
            tracing::warn!("w");
            tracing::info!("i");
        });
        assert_eq!(
            *seen.lock(),
            [
                Priority::Critical,
                Priority::Error,
                Priority::Warning,
                Priority::Info
            ]
        );
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
