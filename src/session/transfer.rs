//! The hot path: while a client holds a server, move bytes both ways until the server can go back.
//!
//! A plain poll loop instead of a `select!` over four futures: each direction's buffer is both
//! where bytes are read into and where they are forwarded from. Writes go first, then reads,
//! until nothing moves; tokio's budget keeps one busy client from starving others.
//!
//! The protocol decisions (what each frame owes, what is rewritten, swallowed or synthesised)
//! are `session::pipeline`'s; `scan.rs` feeds it the frames as they arrive and turns its answers
//! into each direction's output plan (`out.rs`), which this loop writes. Frames nobody needs to
//! read are forwarded untouched, large ones in pieces; with statement tracking a named
//! Parse/Bind/Describe/Close is read whole at any size (its statement name is rewritten), so the
//! client side reads past its usual limit until that frame is all there.

mod out;
mod scan;

use std::future::poll_fn;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::time::Sleep;
use tokio_util::io::poll_read_buf;

use super::pipeline::Pipeline;
use super::prepared::ClientStatements;
use crate::config::PoolMode;
use crate::error::{Error, Result};
use crate::net::Stream;
use crate::pool::stats::{PoolStats, XactTally};
use crate::proto::Scanner;
use crate::server::statements::StatementCache;
use crate::server::ServerConn;
use out::{Flushed, Out};

/// Stop reading a side while this much is buffered and not yet forwarded (back-pressure).
const BUF_LIMIT: usize = 256 * 1024;
/// Read in chunks of at least this much spare room.
const READ_CHUNK: usize = 8 * 1024;

/// How a transfer ended without error.
#[derive(Debug, PartialEq, Eq)]
pub enum End {
    /// The server is idle and everything the client asked for was answered: release it.
    Released,
    /// The client sent Terminate or closed; `clean` when the server can be reused.
    ClientLeft { clean: bool },
}

/// Counters of one transfer, added to the pool's stats by the caller.
#[derive(Debug, Default)]
pub struct Tally {
    pub bytes_from_client: u64,
    pub bytes_to_client: u64,
    pub queries: u64,
    pub query_time: Duration,
    /// SQL transactions that ended (a ReadyForQuery back to idle), as PgBouncer counts them:
    /// an autocommit statement is one, BEGIN..COMMIT is one, whatever the pool mode.
    pub xacts: u64,
    pub xact_time: Duration,
    /// A tracked parameter of the client changed (a SET seen through ParameterStatus).
    pub params_changed: bool,
    /// Named Parse messages from the client.
    pub client_parses: u64,
    /// Parse messages of named statements that reached the server (the client's and injected).
    pub server_parses: u64,
    /// Bind messages of named statements.
    pub binds: u64,
}

impl Tally {
    /// Adds the counters to the pool's and starts again from zero (`params_changed` stays).
    pub fn flush_into(&mut self, stats: &PoolStats) {
        stats.record_xact(&self.take_xact());
    }

    /// The counters so far as one [`XactTally`], leaving this tally at zero (bar
    /// `params_changed`, which the session reads after the transfer).
    pub fn take_xact(&mut self) -> XactTally {
        let t = XactTally {
            bytes_from_client: self.bytes_from_client,
            bytes_to_client: self.bytes_to_client,
            queries: self.queries,
            query_time_us: self.query_time.as_micros() as u64,
            xacts: self.xacts,
            xact_time_us: self.xact_time.as_micros() as u64,
            client_parses: self.client_parses,
            server_parses: self.server_parses,
            binds: self.binds,
        };
        *self = Tally {
            params_changed: self.params_changed,
            ..Tally::default()
        };
        t
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Timer {
    Off,
    Query,
    IdleTx,
}

/// The state of one client↔server link.
pub struct Transfer<'a> {
    pub client: &'a mut Stream,
    pub cbuf: &'a mut BytesMut,
    pub cscan: &'a mut Scanner,
    pub server: &'a mut ServerConn,
    /// The client's tracked parameters; server ParameterStatus updates them.
    pub client_params: &'a mut Vec<(Arc<str>, Arc<str>)>,
    pub mode: PoolMode,
    pub max_packet: u32,
    pub query_timeout: Duration,
    pub idle_tx_timeout: Duration,
    pub tally: Tally,
    sscan: Scanner,
    /// What each reply owes and what to rewrite: the protocol half of the link.
    pipe: Pipeline,
    /// Client bytes (and rewrites) on their way to the server.
    c_out: Out,
    /// Server bytes (and synthetic replies) on their way to the client.
    s_out: Out,
    /// The client sent Terminate; everything before it still goes out.
    terminated: bool,
    query_started: Option<Instant>,
    /// When the SQL transaction in progress began (its first client message).
    xact_started: Option<Instant>,
    /// Where to add the tally at each transaction end, for links that outlive a transaction
    /// (session mode): otherwise the caller adds it once when the link ends.
    live_stats: Option<&'a PoolStats>,
    /// See [`Transfer::set_start`].
    start: Option<Instant>,
    timer: Option<Pin<Box<Sleep>>>,
    timer_kind: Timer,
    /// Named-statement tracking: the client's map (`None` when statements are not tracked:
    /// session mode, or max_prepared_statements = 0), the shared table, and the server cap.
    stmts: Option<Tracking<'a>>,
}

/// What a tracked link needs besides the server's own statements.
pub(super) struct Tracking<'a> {
    client: &'a mut Option<Box<ClientStatements>>,
    cache: &'a StatementCache,
    cap: usize,
}

impl<'a> Transfer<'a> {
    /// Turns on named-statement tracking for this link: the client's map, the process-wide
    /// statement table, and each server's cap (max_prepared_statements).
    pub fn track_statements(
        &mut self,
        client: &'a mut Option<Box<ClientStatements>>,
        cache: &'a StatementCache,
        cap: usize,
    ) {
        self.stmts = Some(Tracking { client, cache, cap });
    }

    /// A link over a server that is at a message boundary.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        client: &'a mut Stream,
        cbuf: &'a mut BytesMut,
        cscan: &'a mut Scanner,
        server: &'a mut ServerConn,
        client_params: &'a mut Vec<(Arc<str>, Arc<str>)>,
        mode: PoolMode,
        max_packet: u32,
        query_timeout: Duration,
        idle_tx_timeout: Duration,
    ) -> Self {
        Transfer {
            client,
            cbuf,
            cscan,
            server,
            client_params,
            mode,
            max_packet,
            query_timeout,
            idle_tx_timeout,
            tally: Tally::default(),
            sscan: Scanner::default(),
            pipe: Pipeline::default(),
            c_out: Out::default(),
            s_out: Out::default(),
            terminated: false,
            query_started: None,
            xact_started: None,
            live_stats: None,
            start: None,
            timer: None,
            timer_kind: Timer::Off,
            stmts: None,
        }
    }

    /// Adds the tally to `stats` at each transaction end, so a long session-mode link shows up
    /// in SHOW STATS as it goes.
    pub fn stats_per_xact(&mut self, stats: &'a PoolStats) {
        self.live_stats = Some(stats);
    }

    /// When the link started: the first request's clock, so it needs no clock read of its own.
    pub fn set_start(&mut self, at: Instant) {
        self.start = Some(at);
    }

    /// Runs until the server can be released, the client leaves, or an error.
    pub async fn run(&mut self) -> Result<End> {
        self.scan_client()?;
        self.start = None;
        self.update_timer();
        poll_fn(|cx| self.poll_step(cx)).await
    }

    fn releasable(&self) -> bool {
        self.mode != PoolMode::Session
            && self.pipe.is_idle()
            && self.server.tx_status == b'I'
            && self.sscan.scanned() == 0
            && self.server.buf.is_empty()
            && self.cscan.at_boundary()
            && self.c_out.is_empty()
            && self.s_out.is_empty()
    }

    fn poll_step(&mut self, cx: &mut Context<'_>) -> Poll<Result<End>> {
        loop {
            let mut progress = false;

            match self
                .c_out
                .poll_flush(self.cbuf, self.cscan, &mut self.server.stream, cx)
            {
                Poll::Ready(Ok(Flushed::Wrote { n: 0, .. })) => {
                    return Poll::Ready(Err(Error::ServerGone))
                }
                Poll::Ready(Ok(Flushed::Wrote { from_buf, .. })) => {
                    self.tally.bytes_from_client += from_buf as u64;
                    progress = true;
                }
                Poll::Ready(Ok(Flushed::Idle)) | Poll::Pending => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(Error::ServerIo(e))),
            }

            match self.s_out.poll_flush(
                &mut self.server.buf,
                &mut self.sscan,
                &mut *self.client,
                cx,
            ) {
                Poll::Ready(Ok(Flushed::Wrote { n: 0, .. })) | Poll::Ready(Err(_)) => {
                    return Poll::Ready(Ok(self.client_left()))
                }
                Poll::Ready(Ok(Flushed::Wrote { n, .. })) => {
                    self.tally.bytes_to_client += n as u64;
                    progress = true;
                }
                Poll::Ready(Ok(Flushed::Idle)) | Poll::Pending => {}
            }

            if self.terminated && self.c_out.is_empty() {
                return Poll::Ready(Ok(self.client_left()));
            }
            if self.releasable() {
                return Poll::Ready(Ok(End::Released));
            }

            if self.server.buf.len() < BUF_LIMIT {
                reserve(&mut self.server.buf);
                match poll_read_buf(Pin::new(&mut self.server.stream), cx, &mut self.server.buf) {
                    Poll::Ready(Ok(0)) => return Poll::Ready(Err(Error::ServerGone)),
                    Poll::Ready(Ok(_)) => {
                        self.scan_server()?;
                        progress = true;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(Error::ServerIo(e))),
                    Poll::Pending => {}
                }
            }

            // Past BUF_LIMIT only for a frame the scanner waits to see whole (a tracked Bind of
            // any size): without its rest nothing can move, and the loop would stall.
            let wanted = self.cscan.scanned() + self.cscan.needs();
            if !self.terminated && self.cbuf.len() < BUF_LIMIT.max(wanted) {
                if wanted > self.cbuf.len() + READ_CHUNK {
                    self.cbuf.reserve(wanted - self.cbuf.len());
                }
                reserve(self.cbuf);
                match poll_read_buf(Pin::new(&mut *self.client), cx, self.cbuf) {
                    Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => {
                        return Poll::Ready(Ok(self.client_left()))
                    }
                    Poll::Ready(Ok(_)) => {
                        self.scan_client()?;
                        progress = true;
                    }
                    Poll::Pending => {}
                }
            }

            if progress {
                self.update_timer();
                continue;
            }
            if let Some(t) = self.timer.as_mut() {
                if t.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Err(match self.timer_kind {
                        Timer::Query => Error::QueryTimeout,
                        _ => Error::IdleTransactionTimeout,
                    }));
                }
            }
            return Poll::Pending;
        }
    }

    /// The client went away: the server is reusable only if it is idle with nothing owed.
    fn client_left(&self) -> End {
        let clean = self.pipe.is_idle()
            && self.server.tx_status == b'I'
            && self.sscan.scanned() == 0
            && self.server.buf.is_empty()
            && self.c_out.is_empty()
            && self.s_out.is_empty();
        End::ClientLeft { clean }
    }

    fn update_timer(&mut self) {
        let want = if self.pipe.ready_owed() > 0 || self.pipe.in_extended() {
            if self.query_timeout.is_zero() {
                Timer::Off
            } else {
                Timer::Query
            }
        } else if self.server.tx_status != b'I' && !self.idle_tx_timeout.is_zero() {
            Timer::IdleTx
        } else {
            Timer::Off
        };
        // Re-arm on every state change; the idle-transaction clock restarts with client activity.
        let limit = match want {
            Timer::Off => {
                self.timer = None;
                self.timer_kind = Timer::Off;
                return;
            }
            Timer::Query => self.query_timeout,
            Timer::IdleTx => self.idle_tx_timeout,
        };
        if want == self.timer_kind && want == Timer::Query {
            return;
        }
        let deadline = tokio::time::Instant::now() + limit;
        match self.timer.as_mut() {
            Some(t) => t.as_mut().reset(deadline),
            None => self.timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
        }
        self.timer_kind = want;
    }
}

/// Which client frames the transfer must see whole: with statement tracking, every Parse, Bind,
/// Describe and Close at any size up to max_packet_size, since a statement name inside them may
/// have to be rewritten (a streamed one would reach the server under the client's name). A
/// Parse or Bind of the unnamed statement streams (large unnamed Binds are the bulk path), once
/// enough of its body (`body`, possibly partial) has arrived to show the name is empty.
pub(super) fn client_whole(tracking: bool) -> impl Fn(u8, usize, &[u8]) -> bool + Copy {
    move |tag, _, body| {
        tracking
            && match tag {
                b'P' => body.first() != Some(&0),
                b'B' => match body.iter().position(|b| *b == 0) {
                    // After the portal name: the statement name's first byte.
                    Some(end) => body.get(end + 1) != Some(&0),
                    None => true,
                },
                b'D' | b'C' => true,
                _ => false,
            }
    }
}

fn reserve(buf: &mut BytesMut) {
    if buf.capacity() - buf.len() < READ_CHUNK / 2 {
        buf.reserve(READ_CHUNK);
    }
}

#[cfg(test)]
mod tests {
    use super::client_whole;

    #[test]
    fn only_frames_that_name_a_statement_are_held_whole() {
        let w = client_whole(true);
        let big = 400 * 1024;
        assert!(w(b'P', big, b"s1\0SELECT"));
        assert!(!w(b'P', big, b"\0SELECT"), "unnamed Parse streams");
        assert!(w(b'P', big, b""), "undecided until the name shows");
        assert!(w(b'B', big, b"\0s1\0"));
        assert!(w(b'B', big, b"portal\0s"));
        assert!(!w(b'B', big, b"\0\0\0\x01"), "unnamed Bind streams");
        assert!(!w(b'B', big, b"portal\0\0"));
        assert!(w(b'B', big, b"\0"), "undecided");
        assert!(w(b'B', big, b"port"), "undecided");
        assert!(w(b'D', 10, b"S"));
        assert!(!w(b'Q', big, b"SELECT"));
        assert!(!client_whole(false)(b'B', big, b"\0s1\0"));
    }
}
