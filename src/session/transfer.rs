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
use tokio::io::AsyncWrite;
use tokio::time::Sleep;
use tokio_util::io::poll_read_buf;

use super::params::Params;
use super::pipeline::Pipeline;
use super::prepared::ClientStatements;
use super::registry::ClientInfo;
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
    /// The server sent an ErrorResponse with a role-change SQLSTATE (57P01, 57P02, 57P03,
    /// 25006): the session tells the pool's router (a failover may be under way).
    pub role_change: bool,
    /// The server's last CommandComplete was `COMMIT`.
    pub last_was_commit: bool,
    /// A transaction ended with a COMMIT in this transfer (its ReadyForQuery said idle after a
    /// `COMMIT` tag): a pooled driver now gives the connection back, so a draining pooler may
    /// close it (see `Client::serve`).
    pub committed: bool,
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
            role_change: self.role_change,
            last_was_commit: self.last_was_commit,
            committed: self.committed,
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
    pub client_params: &'a mut Params,
    pub mode: PoolMode,
    pub max_packet: u32,
    pub query_timeout: Duration,
    pub idle_tx_timeout: Duration,
    /// transaction_timeout: the whole transaction, from its first client message (0 = off).
    pub xact_timeout: Duration,
    /// server_fast_close: in session mode, give the server back at a transaction boundary once
    /// it is marked close_needed (RECONNECT, a changed database), so it is closed. The pool whose
    /// live settings say whether the key is on: a session-mode transfer lasts the whole session,
    /// and a SET during it must still count.
    pub fast_close: Option<Arc<crate::pool::Pool>>,
    /// disable_pqexec: a simple Query met inside the transaction ends the client.
    pub no_simple_query: bool,
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
    /// The clock reading at the last ReadyForQuery: the server's last use when it goes back.
    pub last_ready: Option<Instant>,
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
    /// Fires at `xact_started + xact_timeout`; separate from `timer`, which restarts with
    /// activity while this one never does.
    /// Keyed by the transaction start it was armed for.
    xact_timer: Option<(Instant, Pin<Box<Sleep>>)>,
    /// The server answered everything and is idle (transaction/statement mode): bytes it sends
    /// after that ReadyForQuery answer no request (typically a FATAL 57P01 of a shutdown right
    /// after a COMMIT) and are never forwarded; the server is closed at release instead.
    s_cut: bool,
    /// query_timeout, idle_transaction_timeout and transaction_timeout are all off (the
    /// default): no timer to arm as the state changes. Set when the run starts.
    timers_off: bool,
    /// The request is a lone BEGIN the session may send again: a FATAL role-change error as the
    /// server's very first answer (a backend terminated before it read the BEGIN) is not
    /// forwarded; the transfer ends as if the server had closed. Cleared by any other answer.
    lone_begin: bool,
    /// The client's registry entry: a kill (KILL_CLIENT, KILL db, ...) ends the link. Looked at
    /// when the loop is about to sleep, as a `select!` biased toward the transfer did, but
    /// without a second future to poll at every wake-up.
    kill: Option<&'a ClientInfo>,
    /// The task's waker is registered with `kill` (see [`ClientInfo::is_quiet`]).
    kill_armed: bool,
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
        client_params: &'a mut Params,
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
            xact_timeout: Duration::ZERO,
            fast_close: None,
            no_simple_query: false,
            tally: Tally::default(),
            sscan: Scanner::default(),
            pipe: Pipeline::default(),
            c_out: Out::default(),
            s_out: Out::default(),
            terminated: false,
            query_started: None,
            xact_started: None,
            last_ready: None,
            live_stats: None,
            start: None,
            timer: None,
            timer_kind: Timer::Off,
            xact_timer: None,
            stmts: None,
            s_cut: false,
            lone_begin: false,
            timers_off: false,
            kill: None,
            kill_armed: false,
        }
    }

    /// Adds the tally to `stats` at each transaction end, so a long session-mode link shows up
    /// in SHOW STATS as it goes.
    pub fn stats_per_xact(&mut self, stats: &'a PoolStats) {
        self.live_stats = Some(stats);
    }

    /// Marks the request as a lone BEGIN that the session may send again (see `lone_begin`).
    pub fn lone_begin(&mut self) {
        self.lone_begin = true;
    }

    /// Ends the link with [`Error::AdminForcedDisconnect`] once `info` is killed.
    pub fn watch_kill(&mut self, info: &'a ClientInfo) {
        self.kill = Some(info);
    }

    /// When the link started: the first request's clock, so it needs no clock read of its own.
    pub fn set_start(&mut self, at: Instant) {
        self.start = Some(at);
    }

    /// Runs until the server can be released, the client leaves, or an error.
    pub async fn run(&mut self) -> Result<End> {
        self.timers_off = self.query_timeout.is_zero()
            && self.idle_tx_timeout.is_zero()
            && self.xact_timeout.is_zero();
        self.scan_client()?;
        self.start = None;
        self.update_timer();
        poll_fn(|cx| match self.poll_step(cx) {
            Poll::Pending if self.killed(cx) => Poll::Ready(Err(Error::AdminForcedDisconnect)),
            step => step,
        })
        .await
    }

    /// True once the client is killed; otherwise the task is woken when that happens. The
    /// waker is registered at the link's first sleep, and again only once a kill, drain or
    /// nudge may have taken it: two sleeps per statement, each paid a registration before.
    fn killed(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(info) = self.kill else {
            return false;
        };
        if self.kill_armed && info.is_quiet() {
            return false;
        }
        self.kill_armed = true;
        info.poll_signal(cx, false)
    }

    fn releasable(&self) -> bool {
        (self.mode != PoolMode::Session || self.fast_close_needed()) && self.at_boundary()
    }

    /// server_fast_close applies and the server is marked to close.
    fn fast_close_needed(&self) -> bool {
        // The mark first: a flag read; the settings lock only once a server is marked.
        self.server
            .registration
            .as_ref()
            .is_some_and(|r| r.info.close_needed())
            && self
                .fast_close
                .as_ref()
                .is_some_and(|p| p.settings().server_fast_close)
    }

    /// Nothing is in flight either way: the server could change hands here.
    fn at_boundary(&self) -> bool {
        self.pipe.is_idle()
            && self.server.tx_status == b'I'
            && self.sscan.scanned() == 0
            && (self.server.buf.is_empty() || self.s_cut)
            && self.cscan.at_boundary()
            && self.c_out.is_empty()
            && self.s_out.is_empty()
    }

    fn poll_step(&mut self, cx: &mut Context<'_>) -> Poll<Result<End>> {
        // A socket that returned Pending in this call has the waker registered and cannot have
        // turned readable since without waking the task again, so reading it once more on the
        // next round of the loop would only repeat the readiness check.
        let mut server_pending = false;
        let mut client_pending = false;
        loop {
            let mut progress = false;

            // Most rounds have nothing planned in one direction or both: the emptiness test
            // is inline, the flush (and its large return value) only runs with work to do.
            // A write is progress only while something stays planned (a partial write, or a
            // plan of several pieces); otherwise a further round could only re-poll sockets
            // that already returned Pending in this one.
            if !self.c_out.is_empty() {
                match self
                    .c_out
                    .poll_flush(self.cbuf, self.cscan, &mut self.server.stream, cx)
                {
                    Poll::Ready(Ok(Flushed::Wrote { n: 0, .. })) => {
                        return Poll::Ready(Err(Error::ServerGone))
                    }
                    Poll::Ready(Ok(Flushed::Wrote { from_buf, .. })) => {
                        self.tally.bytes_from_client += from_buf as u64;
                        progress = !self.c_out.is_empty();
                    }
                    Poll::Ready(Ok(Flushed::Idle)) | Poll::Pending => {}
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(Error::ServerIo(e))),
                }
            }

            if !self.s_out.is_empty() {
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
                        progress |= !self.s_out.is_empty();
                    }
                    Poll::Ready(Ok(Flushed::Idle)) | Poll::Pending => {}
                }
            }

            if self.terminated && self.c_out.is_empty() {
                return Poll::Ready(Ok(self.client_left()));
            }
            if self.releasable() {
                // The last ReadyForQuery must be on the wire before the client goes idle.
                return match self.poll_flush_tls(cx) {
                    Poll::Ready(Ok(None)) => Poll::Ready(Ok(End::Released)),
                    Poll::Ready(Ok(Some(end))) => Poll::Ready(Ok(end)),
                    Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                    Poll::Pending => Poll::Pending,
                };
            }

            if !server_pending && self.server.buf.len() < BUF_LIMIT {
                reserve(&mut self.server.buf);
                match poll_read_buf(Pin::new(&mut self.server.stream), cx, &mut self.server.buf) {
                    Poll::Ready(Ok(0)) => return Poll::Ready(Err(Error::ServerGone)),
                    Poll::Ready(Ok(_)) => {
                        self.scan_server()?;
                        // The answer goes out first; the client is read on a round where the
                        // server has nothing new. Usually that answer releases the server and
                        // the client (who waits for it) is not polled here at all: a readiness
                        // check that finds nothing costs a waker registration, and whatever the
                        // client did send is read by the session's idle wait next.
                        self.update_timer();
                        continue;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(Error::ServerIo(e))),
                    Poll::Pending => server_pending = true,
                }
            }

            // Past BUF_LIMIT only for a frame the scanner waits to see whole (a tracked Bind of
            // any size): without its rest nothing can move, and the loop would stall.
            let wanted = self.cscan.scanned() + self.cscan.needs();
            if !client_pending && !self.terminated && self.cbuf.len() < BUF_LIMIT.max(wanted) {
                if wanted > self.cbuf.len() + READ_CHUNK {
                    self.cbuf.reserve(wanted - self.cbuf.len());
                }
                reserve(self.cbuf);
                match poll_read_buf(Pin::new(&mut *self.client), cx, self.cbuf) {
                    Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => {
                        return Poll::Ready(Ok(self.client_left()))
                    }
                    Poll::Ready(Ok(_)) => {
                        if self.mode == PoolMode::Session
                            && self.fast_close_needed()
                            && self.at_boundary()
                        {
                            // The new request stays unscanned in the buffer for the next server.
                            return Poll::Ready(Ok(End::Released));
                        }
                        self.scan_client()?;
                        progress = true;
                    }
                    Poll::Pending => client_pending = true,
                }
            }

            if progress {
                self.update_timer();
                continue;
            }
            // Nothing moves: push out what TLS still buffers before sleeping.
            match self.poll_flush_tls(cx) {
                Poll::Ready(Ok(Some(end))) => return Poll::Ready(Ok(end)),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(None)) | Poll::Pending => {}
            }
            if let Some(t) = self.timer.as_mut() {
                if t.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Err(match self.timer_kind {
                        Timer::Query => Error::QueryTimeout,
                        _ => Error::IdleTransactionTimeout,
                    }));
                }
            }
            if let Some((_, t)) = self.xact_timer.as_mut() {
                if t.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Err(Error::TransactionTimeout));
                }
            }
            return Poll::Pending;
        }
    }

    /// Flushes what rustls holds on either side (plain sockets: nothing to do, no call made).
    /// `Some(end)` when the client went away while flushing.
    #[inline]
    fn poll_flush_tls(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<End>>> {
        // Plain sockets (the usual case) answer here, inline, at every sleep of the loop.
        if !self.server.stream.is_tls() && !self.client.is_tls() {
            return Poll::Ready(Ok(None));
        }
        self.poll_flush_tls_streams(cx)
    }

    fn poll_flush_tls_streams(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<End>>> {
        let mut pending = false;
        if self.server.stream.is_tls() {
            match Pin::new(&mut self.server.stream).poll_flush(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(Error::ServerIo(e))),
                Poll::Pending => pending = true,
            }
        }
        if self.client.is_tls() {
            match Pin::new(&mut *self.client).poll_flush(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(_)) => return Poll::Ready(Ok(Some(self.client_left()))),
                Poll::Pending => pending = true,
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(Ok(None))
        }
    }

    /// The client went away: the server is reusable only if it is idle with nothing owed.
    fn client_left(&self) -> End {
        let clean = self.pipe.is_idle()
            && self.server.tx_status == b'I'
            && self.sscan.scanned() == 0
            && (self.server.buf.is_empty() || self.s_cut)
            && self.c_out.is_empty()
            && self.s_out.is_empty();
        End::ClientLeft { clean }
    }

    /// Inline, so the default (every timer off) costs a flag test per state change.
    #[inline]
    fn update_timer(&mut self) {
        if !self.timers_off {
            self.rearm_timers();
        }
    }

    fn rearm_timers(&mut self) {
        if !self.xact_timeout.is_zero() {
            match self.xact_started {
                Some(at) if self.xact_timer.as_ref().map(|(t, _)| *t) != Some(at) => {
                    let deadline = tokio::time::Instant::from_std(at + self.xact_timeout);
                    self.xact_timer = Some((at, Box::pin(tokio::time::sleep_until(deadline))));
                }
                None => self.xact_timer = None,
                Some(_) => {}
            }
        }
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
mod tests;
