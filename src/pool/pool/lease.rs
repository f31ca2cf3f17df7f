//! The two guards that keep a pool's books right whatever the client does: [`Lease`] (a server
//! handed out; returns itself to its own pool) and `Handoff` (a queued wait that gives back a
//! server that arrived after its owner gave up).

use std::sync::Arc;

use super::Pool;
use crate::pool::stats::XactTally;
use crate::server::registry::ServerState;
use crate::server::ServerConn;

/// The longest a server waits for its forwarded cancels: one is bounded by a connect and
/// `send_cancel`'s 5 s wait for the close, so anything longer is a server that no longer
/// answers, and it is closed rather than reused.
const CANCEL_SETTLE_LIMIT: std::time::Duration = std::time::Duration::from_secs(30);

/// A server handed out by a pool: derefs to the connection. Give it back with
/// [`Lease::release`]; dropped any other way (a cancelled wait, a panic, a task aborted at
/// shutdown) it is closed and its slot freed, so the pool's counts can never leak. It always
/// goes back to the pool it came from.
pub struct Lease {
    /// Always `Some` until release or drop.
    conn: Option<Box<ServerConn>>,
    /// The pool the server belongs to (and is returned to).
    pool: Arc<Pool>,
    /// When a queued checkout got it (the clock reading that ended the wait).
    pub(super) taken_at: Option<std::time::Instant>,
}

impl Lease {
    pub(super) fn new(conn: Box<ServerConn>, pool: Arc<Pool>) -> Lease {
        Lease {
            conn: Some(conn),
            pool,
            taken_at: None,
        }
    }

    /// The clock reading that ended the wait, for a lease a queued checkout got (see
    /// [`Pool::checkout_since`]); `None` for one taken idle at once.
    pub fn taken_at(&self) -> Option<std::time::Instant> {
        self.taken_at
    }

    /// The pool this server belongs to.
    pub fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }

    /// Returns the server to its pool. `reusable` is false when the session knows it is dirty
    /// or broken: it is then closed.
    pub fn release(mut self, reusable: bool) {
        if let Some(conn) = self.conn.take() {
            self.check_in(conn, reusable, None);
        }
    }

    /// [`Lease::release`] by a caller that read the clock when the server went quiet (its last
    /// ReadyForQuery): that reading serves as the server's last use, so the check-in reads no
    /// clock of its own.
    pub fn release_at(mut self, reusable: bool, at: std::time::Instant) {
        if let Some(conn) = self.conn.take() {
            self.check_in(conn, reusable, Some(at));
        }
    }

    /// Checks `conn` in, or, while a cancel forwarded for its last client is still open, parks
    /// it first (PgBouncer's `being_canceled`): reused now, it could have the next client's
    /// query cancelled. A cancel that stays open past [`CANCEL_SETTLE_LIMIT`] closes it.
    fn check_in(&self, conn: Box<ServerConn>, reusable: bool, at: Option<std::time::Instant>) {
        if !reusable || !conn.cancel.inflight.busy() {
            self.pool.checkin_conn(conn, reusable, at);
            return;
        }
        conn.set_state(ServerState::BeingCanceled);
        let pool = self.pool.clone();
        tokio::spawn(async move {
            let settled =
                tokio::time::timeout(CANCEL_SETTLE_LIMIT, conn.cancel.inflight.settled()).await;
            if settled.is_err() {
                tracing::warn!(
                    pool = %crate::logsafe::Clean(&pool.key),
                    "server {} closed: a forwarded cancel stayed open",
                    conn.id
                );
            }
            pool.checkin_conn(conn, settled.is_ok(), at);
        });
    }

    /// Returns a server no client used (a new pool's welcome fetch) to its pool: its one use
    /// under `server_lifetime = 0` is still ahead of it.
    pub fn release_unused(mut self) {
        if let Some(conn) = self.conn.take() {
            self.pool.checkin_with(conn, true, false, None);
        }
    }

    /// Books one finished transaction on the pool's counters (SHOW STATS, /metrics).
    pub fn record(&self, tally: &XactTally) {
        self.pool.stats.record_xact(tally);
    }
}

impl std::ops::Deref for Lease {
    type Target = ServerConn;
    fn deref(&self) -> &ServerConn {
        self.conn
            .as_ref()
            .expect("invariant: a lease holds its connection until release")
    }
}

impl std::ops::DerefMut for Lease {
    fn deref_mut(&mut self) -> &mut ServerConn {
        self.conn
            .as_mut()
            .expect("invariant: a lease holds its connection until release")
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.pool.checkin_conn(conn, false, None);
        }
    }
}

/// The waiting client's end of a queued checkout, returning anything it receives after its owner
/// gave up.
pub(super) struct Handoff {
    /// `None` once the result was taken by the waiting client.
    pub(super) seat: Option<Arc<super::wait::Seat>>,
    /// Where a server that arrives too late goes back to.
    pub(super) pool: Arc<Pool>,
}

impl Drop for Handoff {
    fn drop(&mut self) {
        if let Some(seat) = self.seat.take() {
            // Not reused: the waiter entry may still hold it (closed now, so it is skipped).
            if let Some(Ok(conn)) = seat.close() {
                self.pool.checkin_conn(conn, true, None);
            }
        }
    }
}

/// Adds the time a client queued to the pool's wait_time when the wait ends, however it ends
/// (served, timed out, or abandoned by a client that went away).
pub(super) struct WaitClock<'a> {
    /// The pool whose wait_time the wait counts towards.
    pub(super) pool: &'a Pool,
    /// When the wait started.
    pub(super) started: tokio::time::Instant,
    /// When it ended, if the caller read the clock for it (otherwise it is read here).
    pub(super) ended: Option<tokio::time::Instant>,
}

impl Drop for WaitClock<'_> {
    fn drop(&mut self) {
        let end = self.ended.unwrap_or_else(tokio::time::Instant::now);
        crate::pool::stats::PoolStats::add(
            &self.pool.stats.wait_time_us,
            end.saturating_duration_since(self.started).as_micros() as u64,
        );
    }
}
