//! One (database, user) pool: idle servers, clients waiting for one, and the launching of new
//! connections. Knows nothing of clients or the protocol beyond "a server connection".
//!
//! Checkout pops an idle server (LIFO unless server_round_robin) or queues the caller FIFO on a
//! reusable hand-off seat; checkin hands the server straight to the oldest live waiter. New connections are made
//! by a detached-but-tracked launch task so a client that gives up never leaves a half-made login
//! behind. All state is behind one short `parking_lot::Mutex`; nothing awaits while holding it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::time::Instant;

mod lease;
mod observe;
mod replication;
mod upkeep;
mod wait;

pub use lease::Lease;
use lease::WaitClock;
pub use replication::ReplicationSlot;
use wait::Waiter;

use super::connector::Connector;
use super::pause::PauseReasons;
use super::signal::{Nudging, PoolObserver, Signal};
use super::stats::PoolStats;
use super::{PoolKey, PoolSettings};
use crate::error::{Error, Result};
use crate::server::{ServerConn, ServerCredential, ServerState, ServerTarget, Servers};

/// What the pool shows to the console.
#[derive(Debug, Clone, Default)]
pub struct PoolSnapshot {
    /// Idle servers ready for use (sv_idle).
    pub idle: u32,
    /// Idle servers due for server_check_query (sv_used).
    pub used: u32,
    /// Servers handed to clients (sv_active).
    pub active: u32,
    /// Servers logging in (sv_login).
    pub login: u32,
    /// Clients queued (cl_waiting).
    pub waiting: u32,
    /// Age of the oldest queued client in µs (maxwait).
    pub maxwait_us: u64,
    /// Checkouts are held (some pause reason is set).
    pub paused: bool,
}

/// The ParameterStatus set a pool's first server reported: what every new client is told.
/// Shared `Arc<str>`s so the clients that keep the default values own no copies of them.
pub type Welcome = Vec<(Arc<str>, Arc<str>)>;

/// What a pool shares with its siblings and the rest of the process.
#[derive(Clone)]
pub struct PoolLinks {
    /// Server connections of the whole database (max_db_connections).
    pub db_conns: Arc<AtomicU32>,
    /// Server connections of the whole user (max_user_connections).
    pub user_conns: Arc<AtomicU32>,
    /// Where launch tasks are tracked.
    pub tasks: tokio_util::task::TaskTracker,
    /// The server registry.
    pub servers: Arc<Servers>,
    /// How new server connections are made (PostgreSQL, or a fake in unit tests).
    pub connector: Arc<dyn Connector>,
    /// Wakes the janitor's eviction pass when clients wait only because max_db_connections or
    /// max_user_connections is used up (see `Pools::evict_for_starved`).
    pub cap_starved: Arc<tokio::sync::Notify>,
}

/// Mutable pool state; guarded by `Pool::state`.
struct State {
    settings: Arc<PoolSettings>,
    target: Arc<ServerTarget>,
    credential: ServerCredential,
    /// Bumped when the target changes (reload, RECONNECT): older servers close at release.
    generation: u64,
    /// Boxed, as everywhere in the pool and in a [`Lease`]: a checkout and a hand-off move a
    /// pointer instead of copying the whole connection (a few hundred bytes) at every step.
    idle: VecDeque<Box<ServerConn>>,
    /// Live servers: idle + handed out + being launched.
    total: u32,
    connecting: u32,
    waiters: VecDeque<Waiter>,
    /// Seats of finished waits, for the next ones (see `wait::Seat`).
    seats: Vec<Arc<wait::Seat>>,
    /// When the waiters' sweeper wakes next; `None` when no sweeper runs (see `wait.rs`).
    sweep_at: Option<Instant>,
    /// The first login's ParameterStatus set, sent to every new client.
    welcome: Option<Arc<Welcome>>,
    /// Last login refusal and when it happened (server_login_retry).
    login_failure: Option<(Instant, String)>,
    /// Why checkouts are held; none set means they proceed.
    paused: PauseReasons,
    /// Told about server failures that suggest a role change (a cluster member's pool).
    observer: Option<Arc<dyn PoolObserver>>,
    /// Every new server must answer `pg_is_in_recovery()` = false before use (a cluster
    /// member serving the primary role that is not re-confirmed).
    verify_primary: bool,
}

/// One pool.
pub struct Pool {
    /// (database, user) as the client named them.
    pub key: PoolKey,
    /// Counters read by SHOW STATS and /metrics; updated with relaxed atomics.
    pub stats: PoolStats,
    /// Servers handed out right now (sv_active).
    active: AtomicU32,
    /// Server connections of the whole database (max_db_connections), shared with sibling pools.
    db_conns: Arc<AtomicU32>,
    /// Server connections of the whole user (max_user_connections), shared with sibling pools.
    user_conns: Arc<AtomicU32>,
    state: Mutex<State>,
    /// Wakes the waiters' sweeper early, when a waiter with an earlier deadline was queued.
    sweep_wake: Arc<tokio::sync::Notify>,
    /// Where launch tasks are tracked, so shutdown can wait for them.
    tasks: tokio_util::task::TaskTracker,
    /// The server registry new connections join.
    servers: Arc<Servers>,
    /// Makes new server connections (launch tasks only).
    connector: Arc<dyn Connector>,
    /// Told when clients wait only on a cap shared with sibling pools.
    cap_starved: Arc<tokio::sync::Notify>,
}

impl Pool {
    /// A new, empty pool.
    pub fn new(
        key: PoolKey,
        settings: Arc<PoolSettings>,
        target: Arc<ServerTarget>,
        credential: ServerCredential,
        links: PoolLinks,
    ) -> Arc<Pool> {
        let PoolLinks {
            db_conns,
            user_conns,
            tasks,
            servers,
            connector,
            cap_starved,
        } = links;
        Arc::new(Pool {
            key,
            stats: PoolStats::default(),
            active: AtomicU32::new(0),
            db_conns,
            user_conns,
            state: Mutex::new(State {
                settings,
                target,
                credential,
                generation: 0,
                idle: VecDeque::new(),
                total: 0,
                connecting: 0,
                waiters: VecDeque::new(),
                seats: Vec::new(),
                sweep_at: None,
                welcome: None,
                login_failure: None,
                paused: PauseReasons::NONE,
                observer: None,
                verify_primary: false,
            }),
            sweep_wake: Arc::new(tokio::sync::Notify::new()),
            tasks,
            servers,
            connector,
            cap_starved,
        })
    }

    /// The settings in force.
    pub fn settings(&self) -> Arc<PoolSettings> {
        self.state.lock().settings.clone()
    }

    /// The server target in force.
    pub fn target(&self) -> Arc<ServerTarget> {
        self.state.lock().target.clone()
    }

    /// The cached welcome ParameterStatus set, once a server has logged in.
    pub fn welcome(&self) -> Option<Arc<Welcome>> {
        self.state.lock().welcome.clone()
    }

    /// Applies reloaded settings; a changed target or credential retires existing servers.
    pub fn reconfigure(
        &self,
        settings: Arc<PoolSettings>,
        target: Arc<ServerTarget>,
        credential: ServerCredential,
    ) {
        let mut st = self.state.lock();
        if *st.target != *target || st.credential != credential {
            st.generation += 1;
            self.mark_close_needed(&st.target);
            st.welcome = None;
            st.login_failure = None;
            // Idle servers of the old generation are closed by the next janitor tick (or a
            // checkout that meets one first), as PgBouncer's janitor closes a dirty database's
            // servers: its "database configuration changed" line comes after the RELOAD.
            st.target = target;
            st.credential = credential;
        }
        st.settings = settings;
    }

    /// Closes idle servers a configuration change or RECONNECT retired, with PgBouncer's line.
    fn close_stale(&self, stale: impl IntoIterator<Item = Box<ServerConn>>, log: bool) {
        for conn in stale {
            if log {
                self.log_close(&conn, "database configuration changed");
            }
        }
    }

    /// Stores the credential an auth_query answer gave (the auth_file had none for this user).
    /// Keys already recovered from a client's SCRAM proof are kept over a bare SCRAM secret.
    pub fn offer_credential(&self, credential: ServerCredential) {
        let mut st = self.state.lock();
        let has_keys = matches!(st.credential, ServerCredential::ScramKeys { .. })
            && credential == ServerCredential::ScramSecretOnly;
        if !has_keys && st.credential != credential {
            st.credential = credential;
            st.login_failure = None;
        }
    }

    /// Stores SCRAM keys recovered from a client's proof so servers can be logged in with them.
    pub fn offer_scram_keys(&self, client_key: [u8; 32], server_key: [u8; 32]) {
        let mut st = self.state.lock();
        if matches!(
            st.credential,
            ServerCredential::ScramSecretOnly | ServerCredential::ScramKeys { .. }
        ) {
            st.credential = ServerCredential::ScramKeys {
                client_key,
                server_key,
            };
            st.login_failure = None;
        }
    }

    /// Marks every server for closing at release (RECONNECT) and drops the idle ones now.
    pub fn reconnect(&self) {
        let mut st = self.state.lock();
        st.generation += 1;
        self.mark_close_needed(&st.target);
        let stale: Vec<_> = st.idle.drain(..).collect();
        st.total -= stale.len() as u32;
        self.release_counts(stale.len() as u32);
        let log = st.settings.log_disconnections;
        drop(st);
        self.close_stale(stale, log);
    }

    /// Called with the state locked, so it takes the target rather than locking again.
    fn mark_close_needed(&self, target: &ServerTarget) {
        for s in self.own_servers(target) {
            s.mark_close_needed();
        }
    }

    /// The registered servers of this pool: its (db, user) and its host, since a pool set
    /// has one pool per member host under the same (db, user).
    fn own_servers(&self, target: &ServerTarget) -> Vec<Arc<crate::server::ServerInfo>> {
        let host = target.host_text();
        let mut v = self.servers.of_pool(&self.key.db, &self.key.user);
        v.retain(|s| s.addr == host && s.port == target.port);
        v
    }

    /// Servers of this pool marked to close at release.
    pub fn close_needed(&self) -> u32 {
        let target = self.target();
        self.own_servers(&target)
            .iter()
            .filter(|s| s.close_needed())
            .count() as u32
    }

    /// Holds checkouts for `reason` (added to any already set).
    pub fn pause(self: &Arc<Self>, reason: PauseReasons) {
        self.state.lock().paused.insert(reason);
    }

    /// Lifts `reason`; waiters are served once no reason is left.
    pub fn resume(self: &Arc<Self>, reason: PauseReasons) {
        let mut st = self.state.lock();
        st.paused.remove(reason);
        if st.paused.is_empty() {
            self.serve_waiters(&mut st);
        }
    }

    /// Sets the reasons the registry's [`super::pause::PauseBook`] owns to exactly `booked`,
    /// leaving the others (a failover hold) as they are.
    pub fn set_booked(self: &Arc<Self>, booked: PauseReasons) {
        let mut st = self.state.lock();
        st.paused.remove(PauseReasons::BOOKED);
        st.paused.insert(booked.intersect(PauseReasons::BOOKED));
        if st.paused.is_empty() {
            self.serve_waiters(&mut st);
        }
    }

    /// The pause reasons in force.
    pub fn pause_reasons(&self) -> PauseReasons {
        self.state.lock().paused
    }

    /// Counts for the console.
    pub fn snapshot(&self) -> PoolSnapshot {
        let st = self.state.lock();
        let check = !st.settings.server_check_query.is_empty();
        let used = if check {
            st.idle
                .iter()
                .filter(|c| c.served && c.last_used.elapsed() >= st.settings.server_check_delay)
                .count() as u32
        } else {
            0
        };
        let live = st.waiters.iter().filter(|w| !w.tx.is_closed());
        PoolSnapshot {
            idle: st.idle.len() as u32 - used,
            used,
            active: self.active.load(Ordering::Relaxed),
            login: st.connecting,
            waiting: live.clone().count() as u32,
            maxwait_us: live
                .map(|w| w.since.elapsed().as_micros() as u64)
                .max()
                .unwrap_or(0),
            paused: !st.paused.is_empty(),
        }
    }

    /// PgBouncer's `closing because:` line for a server whose login the server refused (after
    /// its "server login failed" warning), so the server side of a refused login shows up too.
    fn log_login_refused(&self, st: &State, reason: &str) {
        if st.settings.log_disconnections {
            tracing::info!(
                "S-? {}/{}@{}:{} closing because: {} (age=0s)",
                self.key.db,
                self.key.user,
                st.target.host_text(),
                st.target.port,
                crate::logsafe::Clean(reason)
            );
        }
    }

    fn release_counts(&self, n: u32) {
        if n > 0 {
            self.db_conns.fetch_sub(n, Ordering::Relaxed);
            self.user_conns.fetch_sub(n, Ordering::Relaxed);
        }
    }

    /// Takes a server, waiting FIFO behind earlier clients up to query_wait_timeout. Counts
    /// the assignment and the time waited on the pool's stats.
    pub async fn checkout(self: &Arc<Self>) -> Result<Lease> {
        self.checkout_nudged(None).await
    }

    /// [`Pool::checkout`], and `nudge` is told once if the wait is still on at its time.
    pub async fn checkout_nudged(self: &Arc<Self>, nudge: Nudging) -> Result<Lease> {
        self.checkout_since(Instant::now(), nudge).await
    }

    /// [`Pool::checkout_nudged`] for a caller that read the clock just before (it looked for
    /// an idle server first): the wait counts from `started`, with no clock read of its own.
    /// The one reading that ends the wait comes with the lease ([`Lease::taken_at`]), for the
    /// caller to start its own clocks with.
    pub async fn checkout_since(
        self: &Arc<Self>,
        started: Instant,
        nudge: Nudging,
    ) -> Result<Lease> {
        let mut clock = WaitClock {
            pool: self,
            started,
            ended: None,
        };
        let mut lease = self.checkout_from(started, nudge).await?;
        let now = Instant::now();
        clock.ended = Some(now);
        lease.taken_at = Some(now.into_std());
        PoolStats::add(&self.stats.server_assignment_count, 1);
        Ok(lease)
    }

    async fn checkout_from(self: &Arc<Self>, started: Instant, nudge: Nudging) -> Result<Lease> {
        let (rx, check_delay) = {
            let mut st = self.state.lock();
            // Read under this lock so the hand-off needs no second one to know if it must test.
            let check_delay = (!st.settings.server_check_query.is_empty())
                .then_some(st.settings.server_check_delay);
            let rx = match self.pop_idle(&mut st, None) {
                Some(conn) => Err(conn),
                None => {
                    if let Some((at, msg)) = &st.login_failure {
                        if at.elapsed() < st.settings.server_login_retry && st.connecting == 0 {
                            return Err(Error::ServerLoginRetry(msg.clone()));
                        }
                    }
                    let (tx, rx) = Self::seat(&mut st);
                    let waiter = Waiter::new(tx, &st.settings, started, nudge);
                    self.enqueue(&mut st, waiter);
                    self.maybe_launch(&mut st, false);
                    Ok(rx)
                }
            };
            (rx, check_delay)
        };
        let conn = match rx {
            Ok(rx) => self.wait(rx).await?,
            Err(conn) => conn,
        };
        let lease = self.lease(conn);
        match check_delay {
            // A server checked in after the wait began was handed over as it came back (its
            // last use is the hand-off, well within a non-zero delay): only one that idled
            // from before needs the clock. A zero delay tests every server a client has used, as PgBouncer does.
            // Boxed: the test's round trip is rare, and inline its state would sit in every
            // session's per-transaction future (see `Client::transaction`).
            Some(delay)
                if lease.served
                    && (delay.is_zero() || lease.last_used < started.into_std())
                    && lease.last_used.elapsed() >= delay =>
            {
                Box::pin(self.check_before_use(lease)).await
            }
            _ => Ok(lease),
        }
    }

    /// An idle server right now, without waiting: the common case. `now` is the caller's clock
    /// read, used for server_lifetime and server_check_delay, so the fast path reads the clock
    /// once per transaction (the session reuses it as the transaction's start) and locks the
    /// pool once. The flag says the server idled past server_check_delay and must pass
    /// server_check_query first ([`Pool::check_before_use`]).
    pub fn try_take_idle(self: &Arc<Self>, now: std::time::Instant) -> Option<(Lease, bool)> {
        let (conn, check) = {
            let mut st = self.state.lock();
            let conn = self.pop_idle(&mut st, Some(now))?;
            let check = conn.served
                && !st.settings.server_check_query.is_empty()
                && now.saturating_duration_since(conn.last_used) >= st.settings.server_check_delay;
            (conn, check)
        };
        PoolStats::add(&self.stats.server_assignment_count, 1);
        Some((self.lease(conn), check))
    }

    fn lease(self: &Arc<Self>, conn: Box<ServerConn>) -> Lease {
        Lease::new(conn, self.clone())
    }

    /// Runs server_check_query on a server that idled longer than server_check_delay.
    pub async fn check_before_use(self: &Arc<Self>, mut conn: Lease) -> Result<Lease> {
        let settings = self.settings();
        if settings.server_check_query.is_empty()
            || !conn.served
            || conn.last_used.elapsed() < settings.server_check_delay
        {
            return Ok(conn);
        }
        // `<empty>` (the default) sends an empty query: the cheapest round trip there is.
        let q = match settings.server_check_query.as_str() {
            "<empty>" => "",
            q => q,
        };
        conn.set_state(ServerState::Tested);
        match conn.run_internal(q, settings.max_packet_size).await {
            Ok(None) if conn.tx_status == b'I' => Ok(conn),
            _ => {
                conn.release(false);
                // Try again with whatever the pool has next.
                Box::pin(self.checkout_from(Instant::now(), None)).await
            }
        }
    }

    /// Pops a usable idle server, closing stale or broken ones on the way. `now` is the
    /// caller's clock read, if it has one; otherwise the clock is read only when a server is
    /// there to check against server_lifetime.
    fn pop_idle(
        &self,
        st: &mut State,
        mut now: Option<std::time::Instant>,
    ) -> Option<Box<ServerConn>> {
        if !st.paused.is_empty() {
            return None;
        }
        loop {
            let conn = if st.settings.server_round_robin {
                st.idle.pop_front()
            } else {
                st.idle.pop_back()
            }?;
            let expired = !st.settings.server_lifetime.is_zero() && {
                let now = *now.get_or_insert_with(std::time::Instant::now);
                now.saturating_duration_since(conn.created) >= st.settings.server_lifetime
            };
            let broken = conn.is_broken_while_idle();
            if expired || conn.generation != st.generation || broken {
                st.total -= 1;
                self.release_counts(1);
                if broken {
                    // An idle server that spoke or closed: usually a shutdown (57P01) or a
                    // crash; the router re-checks the member. Observers never lock the pool.
                    if let Some(o) = &st.observer {
                        o.server_failed((&st.target.host, st.target.port), Signal::Gone);
                    }
                }
                if st.settings.log_disconnections {
                    self.log_close(
                        &conn,
                        if conn.generation != st.generation {
                            "database configuration changed"
                        } else if broken {
                            "server conn crashed?"
                        } else {
                            "server lifetime over"
                        },
                    );
                }
                continue;
            }
            self.active.fetch_add(1, Ordering::Relaxed);
            conn.set_state(ServerState::Active);
            return Some(conn);
        }
    }

    /// Takes back a server of this pool (from [`Lease`] and `Handoff` only, so a server can
    /// only ever return to the pool it came from).
    fn checkin_conn(
        self: &Arc<Self>,
        conn: Box<ServerConn>,
        reusable: bool,
        at: Option<std::time::Instant>,
    ) {
        self.checkin_with(conn, reusable, true, at);
    }

    /// [`Pool::checkin_conn`]; `used` is false for a server no client used (the welcome
    /// fetch), which server_lifetime spares as PgBouncer spares a server fresh from its login.
    fn checkin_with(
        self: &Arc<Self>,
        mut conn: Box<ServerConn>,
        reusable: bool,
        used: bool,
        at: Option<std::time::Instant>,
    ) {
        self.active.fetch_sub(1, Ordering::Relaxed);
        // One clock read for the lifetime check and last_used, taken before the lock (the
        // caller's, when it has one).
        let now = at.unwrap_or_else(std::time::Instant::now);
        let mut st = self.state.lock();
        // server_lifetime = 0 is PgBouncer's "used only once, then closed": every age is over it.
        let expired =
            used && now.saturating_duration_since(conn.created) >= st.settings.server_lifetime;
        if !reusable || expired || conn.generation != st.generation || conn.tx_status != b'I' {
            st.total -= 1;
            self.release_counts(1);
            // Someone may be waiting for the slot this frees.
            self.maybe_launch(&mut st, false);
            // PgBouncer's release order; a server the session gave up on was its to report.
            let reason = if !reusable {
                None
            } else if conn.tx_status != b'I' {
                Some("client disconnect while server was not ready")
            } else if expired {
                Some("server lifetime over")
            } else {
                Some("close_needed")
            };
            let log = st.settings.log_disconnections;
            drop(st);
            if let (Some(reason), true) = (reason, log) {
                self.log_close(&conn, reason);
            }
            drop(conn);
            return;
        }
        conn.last_used = now;
        conn.served |= used;
        self.give(&mut st, conn);
    }

    /// PgBouncer's disconnect line for a server the pool closes (callers check
    /// log_disconnections), with the prefix of the `new connection to server` line.
    pub(crate) fn log_close(&self, conn: &ServerConn, reason: &str) {
        tracing::info!(
            "S-{} {}/{}@{}:{} closing because: {reason} (age={}s)",
            conn.id,
            self.key.db,
            self.key.user,
            conn.cancel_host_text(),
            conn.cancel.port,
            conn.created.elapsed().as_secs()
        );
    }

    /// Hands a ready server to the oldest live waiter, or parks it idle.
    fn give(&self, st: &mut State, mut conn: Box<ServerConn>) {
        if st.paused.is_empty() {
            while let Some(w) = st.waiters.pop_front() {
                self.active.fetch_add(1, Ordering::Relaxed);
                conn.set_state(ServerState::Active);
                match w.tx.send(Ok(conn)) {
                    Ok(()) => return,
                    Err(Ok(back)) => {
                        self.active.fetch_sub(1, Ordering::Relaxed);
                        conn = back;
                    }
                    Err(Err(_)) => unreachable!("invariant: we only send Ok here"),
                }
            }
        }
        conn.set_state(ServerState::Idle);
        st.idle.push_back(conn);
    }

    fn serve_waiters(self: &Arc<Self>, st: &mut State) {
        while st.waiters.iter().any(|w| !w.tx.is_closed()) {
            let Some(conn) = self.pop_idle(st, None) else {
                break;
            };
            self.active.fetch_sub(1, Ordering::Relaxed);
            self.give(st, conn);
        }
        self.maybe_launch(st, false);
    }

    /// Drops every idle server now (shutdown, KILL).
    pub fn close_idle(&self) {
        let mut st = self.state.lock();
        let n = st.idle.len() as u32;
        st.idle.clear();
        st.total -= n;
        self.release_counts(n);
    }

    /// Fails every waiting client with `err` (shutdown, KILL).
    pub fn fail_waiters(&self, err: impl Fn() -> Error) {
        let mut st = self.state.lock();
        for w in st.waiters.drain(..) {
            let _ = w.tx.send(Err(err()));
        }
    }

    /// Seats kept for the next queued checkouts (tests).
    #[cfg(test)]
    pub(crate) fn spare_seats(&self) -> usize {
        self.state.lock().seats.len()
    }

    /// Live servers (idle + active + connecting).
    pub fn total(&self) -> u32 {
        self.state.lock().total
    }
}
