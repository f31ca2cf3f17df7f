//! One (database, user) pool: idle servers, clients waiting for one, and the launching of new
//! connections. Knows nothing of clients or the protocol beyond "a server connection".
//!
//! Checkout pops an idle server (LIFO unless server_round_robin) or queues the caller FIFO on a
//! oneshot; checkin hands the server straight to the oldest live waiter. New connections are made
//! by a detached-but-tracked launch task so a client that gives up never leaves a half-made login
//! behind. All state is behind one short `parking_lot::Mutex`; nothing awaits while holding it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::oneshot;

use super::stats::PoolStats;
use super::{PoolKey, PoolSettings};
use crate::error::{Error, Result};
use crate::server::{
    self, Registration, ServerConn, ServerCredential, ServerState, ServerTarget, Servers,
};

type Handoff = oneshot::Sender<Result<ServerConn>>;

/// A queued client.
struct Waiter {
    /// Where the server (or the error) goes; closed when the client gave up.
    tx: Handoff,
    /// When the client started waiting (maxwait).
    since: Instant,
}

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
    /// Checkouts are paused.
    pub paused: bool,
}

/// The ParameterStatus set a pool's first server reported: what every new client is told.
/// Shared `Arc<str>`s so the clients that keep the default values own no copies of them.
pub type Welcome = Vec<(Arc<str>, Arc<str>)>;

/// What a pool shares with its siblings and the rest of the process.
pub struct PoolLinks {
    /// Server connections of the whole database (max_db_connections).
    pub db_conns: Arc<AtomicU32>,
    /// Server connections of the whole user (max_user_connections).
    pub user_conns: Arc<AtomicU32>,
    /// Where launch tasks are tracked.
    pub tasks: tokio_util::task::TaskTracker,
    /// The server registry.
    pub servers: Arc<Servers>,
}

/// Mutable pool state; guarded by `Pool::state`.
struct State {
    settings: Arc<PoolSettings>,
    target: Arc<ServerTarget>,
    credential: ServerCredential,
    /// Bumped when the target changes (reload, RECONNECT): older servers close at release.
    generation: u64,
    idle: VecDeque<ServerConn>,
    /// Live servers: idle + handed out + being launched.
    total: u32,
    connecting: u32,
    waiters: VecDeque<Waiter>,
    /// The first login's ParameterStatus set, sent to every new client.
    welcome: Option<Arc<Welcome>>,
    /// Last login refusal and when it happened (server_login_retry).
    login_failure: Option<(Instant, String)>,
    paused: bool,
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
    /// Where launch tasks are tracked, so shutdown can wait for them.
    tasks: tokio_util::task::TaskTracker,
    /// The server registry new connections join.
    servers: Arc<Servers>,
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
                welcome: None,
                login_failure: None,
                paused: false,
            }),
            tasks,
            servers,
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
            self.mark_close_needed();
            st.welcome = None;
            st.login_failure = None;
            let stale: Vec<_> = st.idle.drain(..).collect();
            st.total -= stale.len() as u32;
            self.release_counts(stale.len() as u32);
            st.target = target;
            st.credential = credential;
        }
        st.settings = settings;
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
        self.mark_close_needed();
        let stale: Vec<_> = st.idle.drain(..).collect();
        st.total -= stale.len() as u32;
        self.release_counts(stale.len() as u32);
    }

    fn mark_close_needed(&self) {
        for s in self.servers.of_pool(&self.key.db, &self.key.user) {
            s.mark_close_needed();
        }
    }

    /// Servers of this pool marked to close at release.
    pub fn close_needed(&self) -> u32 {
        self.servers
            .of_pool(&self.key.db, &self.key.user)
            .iter()
            .filter(|s| s.close_needed())
            .count() as u32
    }

    /// PAUSE / RESUME of checkouts.
    pub fn set_paused(self: &Arc<Self>, paused: bool) {
        let mut st = self.state.lock();
        st.paused = paused;
        if !paused {
            self.serve_waiters(&mut st);
        }
    }

    /// Counts for the console.
    pub fn snapshot(&self) -> PoolSnapshot {
        let st = self.state.lock();
        let check = !st.settings.server_check_query.is_empty();
        let used = if check {
            st.idle
                .iter()
                .filter(|c| c.last_used.elapsed() >= st.settings.server_check_delay)
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
            paused: st.paused,
        }
    }

    fn release_counts(&self, n: u32) {
        if n > 0 {
            self.db_conns.fetch_sub(n, Ordering::Relaxed);
            self.user_conns.fetch_sub(n, Ordering::Relaxed);
        }
    }

    /// Takes a server, waiting FIFO behind earlier clients up to query_wait_timeout.
    pub async fn checkout(self: &Arc<Self>) -> Result<ServerConn> {
        let started = Instant::now();
        loop {
            let (rx, settings) = {
                let mut st = self.state.lock();
                match self.pop_idle(&mut st) {
                    Some(conn) => (Err(conn), st.settings.clone()),
                    None => {
                        if let Some((at, msg)) = &st.login_failure {
                            if at.elapsed() < st.settings.server_login_retry && st.connecting == 0 {
                                return Err(Error::ServerLoginRetry(msg.clone()));
                            }
                        }
                        let (tx, rx) = oneshot::channel();
                        st.waiters.push_back(Waiter {
                            tx,
                            since: Instant::now(),
                        });
                        self.maybe_launch(&mut st, false);
                        (Ok(rx), st.settings.clone())
                    }
                }
            };
            let rx = match rx {
                Ok(rx) => rx,
                Err(conn) => return self.check_before_use(conn).await,
            };
            let got = self.wait(rx, &settings, started).await?;
            match got {
                Some(conn) => return self.check_before_use(conn).await,
                None => continue,
            }
        }
    }

    /// An idle server right now, without waiting: the common case, which needs no clock reads.
    /// It may still have to pass server_check_query ([`Pool::check_before_use`]).
    pub fn try_take_idle(&self) -> Option<ServerConn> {
        let mut st = self.state.lock();
        self.pop_idle(&mut st)
    }

    /// True when `conn` idled long enough to need server_check_query before use.
    pub fn needs_check(&self, conn: &ServerConn) -> bool {
        let st = self.state.lock();
        !st.settings.server_check_query.is_empty()
            && conn.last_used.elapsed() >= st.settings.server_check_delay
    }

    /// Waits for a handoff; after reserve_pool_timeout asks for a reserve connection once.
    /// `Ok(None)` means "look again" (never returned today, kept for the retry loop).
    async fn wait(
        self: &Arc<Self>,
        mut rx: oneshot::Receiver<Result<ServerConn>>,
        settings: &PoolSettings,
        started: Instant,
    ) -> Result<Option<ServerConn>> {
        let wait_limit = settings.query_wait_timeout;
        let deadline = (!wait_limit.is_zero()).then(|| started + wait_limit);
        if settings.reserve_pool_size > 0 {
            let reserve_at = started + settings.reserve_pool_timeout;
            if deadline.is_none_or(|d| reserve_at < d) {
                match tokio::time::timeout_at(reserve_at.into(), &mut rx).await {
                    Ok(r) => return Self::handoff(r),
                    Err(_) => {
                        let mut st = self.state.lock();
                        self.maybe_launch(&mut st, true);
                    }
                }
            }
        }
        match deadline {
            Some(d) => match tokio::time::timeout_at(d.into(), &mut rx).await {
                Ok(r) => Self::handoff(r),
                Err(_) => {
                    // A server may have been sent between the timeout and now: give it back.
                    rx.close();
                    if let Ok(Ok(conn)) = rx.try_recv() {
                        self.checkin(conn, true);
                    }
                    Err(Error::QueryWaitTimeout)
                }
            },
            None => Self::handoff(rx.await),
        }
    }

    fn handoff(
        r: std::result::Result<Result<ServerConn>, oneshot::error::RecvError>,
    ) -> Result<Option<ServerConn>> {
        match r {
            Ok(Ok(conn)) => Ok(Some(conn)),
            Ok(Err(e)) => Err(e),
            // The pool dropped our sender (pool removed): treat like a timeout.
            Err(_) => Err(Error::DatabaseRemoved),
        }
    }

    /// Runs server_check_query on a server that idled longer than server_check_delay.
    pub async fn check_before_use(self: &Arc<Self>, mut conn: ServerConn) -> Result<ServerConn> {
        let settings = self.settings();
        if settings.server_check_query.is_empty()
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
                self.checkin(conn, false);
                // Try again with whatever the pool has next.
                Box::pin(self.checkout()).await
            }
        }
    }

    /// Pops a usable idle server, closing stale or broken ones on the way.
    fn pop_idle(&self, st: &mut State) -> Option<ServerConn> {
        if st.paused {
            return None;
        }
        loop {
            let conn = if st.settings.server_round_robin {
                st.idle.pop_front()
            } else {
                st.idle.pop_back()
            }?;
            let expired = !st.settings.server_lifetime.is_zero()
                && conn.created.elapsed() >= st.settings.server_lifetime;
            if expired || conn.generation != st.generation || conn.is_broken_while_idle() {
                st.total -= 1;
                self.release_counts(1);
                continue;
            }
            self.active.fetch_add(1, Ordering::Relaxed);
            conn.set_state(ServerState::Active);
            return Some(conn);
        }
    }

    /// Returns a server. `reusable` is false when the session knows it is dirty or broken.
    pub fn checkin(self: &Arc<Self>, mut conn: ServerConn, reusable: bool) {
        self.active.fetch_sub(1, Ordering::Relaxed);
        let mut st = self.state.lock();
        let expired = !st.settings.server_lifetime.is_zero()
            && conn.created.elapsed() >= st.settings.server_lifetime;
        if !reusable || expired || conn.generation != st.generation || conn.tx_status != b'I' {
            st.total -= 1;
            self.release_counts(1);
            // Someone may be waiting for the slot this frees.
            self.maybe_launch(&mut st, false);
            drop(st);
            drop(conn);
            return;
        }
        conn.last_used = Instant::now();
        self.give(&mut st, conn);
    }

    /// Hands a ready server to the oldest live waiter, or parks it idle.
    fn give(&self, st: &mut State, mut conn: ServerConn) {
        if !st.paused {
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
            let Some(conn) = self.pop_idle(st) else {
                break;
            };
            self.active.fetch_sub(1, Ordering::Relaxed);
            self.give(st, conn);
        }
        self.maybe_launch(st, false);
    }

    /// Starts a new server connection when clients wait and the limits allow it.
    fn maybe_launch(self: &Arc<Self>, st: &mut State, reserve: bool) -> bool {
        st.waiters.retain(|w| !w.tx.is_closed());
        if st.paused || st.waiters.len() as u32 <= st.connecting {
            return false;
        }
        let s = &st.settings;
        let limit = if reserve {
            s.pool_size + s.reserve_pool_size
        } else {
            s.pool_size
        };
        if s.pool_size != 0 && st.total >= limit {
            return false;
        }
        if s.max_db_connections != 0
            && self.db_conns.load(Ordering::Relaxed) >= s.max_db_connections
        {
            return false;
        }
        if s.max_user_connections != 0
            && self.user_conns.load(Ordering::Relaxed) >= s.max_user_connections
        {
            return false;
        }
        self.db_conns.fetch_add(1, Ordering::Relaxed);
        self.user_conns.fetch_add(1, Ordering::Relaxed);
        st.total += 1;
        st.connecting += 1;
        let target = st.target.clone();
        let cred = st.credential.clone();
        let generation = st.generation;
        let max_packet = st.settings.max_packet_size;
        let retry = st.settings.server_login_retry;
        let pool = Arc::clone(self);
        self.tasks.spawn(async move {
            pool.launch(target, cred, generation, max_packet, retry)
                .await
        });
        true
    }

    /// Makes one server connection, retrying network failures while clients still wait.
    async fn launch(
        self: Arc<Self>,
        target: Arc<ServerTarget>,
        cred: ServerCredential,
        generation: u64,
        max_packet: u32,
        retry: Duration,
    ) {
        let mut delay = Duration::from_millis(50);
        loop {
            let result = server::connect(&target, &cred, max_packet).await;
            if self.settle_launch(result, generation) {
                return;
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(retry.max(Duration::from_millis(50)));
        }
    }

    /// Books the outcome of one launch attempt. Returns false when it should be retried.
    fn settle_launch(self: &Arc<Self>, result: Result<ServerConn>, generation: u64) -> bool {
        {
            let mut st = self.state.lock();
            match result {
                Ok(mut conn) => {
                    st.connecting -= 1;
                    conn.generation = generation;
                    conn.registration = Some(self.register(&conn));
                    if st.welcome.is_none() {
                        st.welcome = Some(Arc::new(
                            conn.params
                                .iter()
                                .map(|(k, v)| (Arc::from(k.as_str()), Arc::from(v.as_str())))
                                .collect(),
                        ));
                    }
                    st.login_failure = None;
                    if generation != st.generation {
                        st.total -= 1;
                        self.release_counts(1);
                        self.maybe_launch(&mut st, false);
                        return true;
                    }
                    tracing::debug!(server = conn.id, pool = %self.key, "new server connection");
                    self.give(&mut st, conn);
                    return true;
                }
                Err(Error::ServerLogin(fields)) => {
                    tracing::warn!(pool = %self.key, "server login failed: {}", fields.message);
                    st.connecting -= 1;
                    st.total -= 1;
                    self.release_counts(1);
                    st.login_failure = Some((Instant::now(), fields.message.clone()));
                    for w in st.waiters.drain(..) {
                        let _ = w.tx.send(Err(Error::ServerLogin(fields.clone())));
                    }
                    return true;
                }
                Err(Error::ServerAuth(msg)) => {
                    tracing::warn!(pool = %self.key, "server login failed: {msg}");
                    st.connecting -= 1;
                    st.total -= 1;
                    self.release_counts(1);
                    st.login_failure =
                        Some((Instant::now(), format!("server login failed: {msg}")));
                    for w in st.waiters.drain(..) {
                        let _ = w.tx.send(Err(Error::ServerAuth(msg.clone())));
                    }
                    return true;
                }
                Err(e) => {
                    st.waiters.retain(|w| !w.tx.is_closed());
                    if st.waiters.is_empty() || generation != st.generation {
                        st.connecting -= 1;
                        st.total -= 1;
                        self.release_counts(1);
                        tracing::warn!(pool = %self.key, "server connect failed: {e}");
                        return true;
                    }
                    tracing::warn!(pool = %self.key, "server connect failed, retrying: {e}");
                }
            }
        }
        false
    }

    fn register(&self, conn: &ServerConn) -> Registration {
        Registration::new(
            &self.servers,
            conn.id,
            &self.key.db,
            &self.key.user,
            conn.cancel_host_text(),
            conn.cancel.port,
            conn.local_addr.clone(),
            conn.cancel.pid,
        )
    }

    /// Janitor step: close idle servers past server_idle_timeout / server_lifetime (keeping
    /// min_pool_size), top up to min_pool_size, and retry launches blocked by db/user caps.
    pub fn maintain(self: &Arc<Self>) {
        let mut st = self.state.lock();
        let s = st.settings.clone();
        let mut keep = VecDeque::with_capacity(st.idle.len());
        let mut closed = 0u32;
        let mut live = st.total;
        // Oldest-used first, so LIFO reuse keeps the warm ones.
        let mut idle: Vec<ServerConn> = st.idle.drain(..).collect();
        idle.sort_by_key(|c| c.last_used);
        for conn in idle {
            let idle_too_long = !s.server_idle_timeout.is_zero()
                && conn.last_used.elapsed() >= s.server_idle_timeout
                && live > s.min_pool_size;
            let expired =
                !s.server_lifetime.is_zero() && conn.created.elapsed() >= s.server_lifetime;
            if idle_too_long
                || expired
                || conn.generation != st.generation
                || conn.is_broken_while_idle()
            {
                closed += 1;
                live -= 1;
            } else {
                keep.push_back(conn);
            }
        }
        st.idle = keep;
        st.total -= closed;
        self.release_counts(closed);
        if !st.waiters.is_empty() {
            self.maybe_launch(&mut st, false);
        }
        // min_pool_size is filled only once the pool has logged in (it has clients), as PgBouncer.
        if s.min_pool_size > 0 && st.total < s.min_pool_size && !st.paused && st.welcome.is_some() {
            let need = s.min_pool_size - st.total;
            self.fill_min(&mut st, need);
        }
    }

    fn fill_min(self: &Arc<Self>, st: &mut State, need: u32) {
        for _ in 0..need {
            st.total += 1;
            st.connecting += 1;
            self.db_conns.fetch_add(1, Ordering::Relaxed);
            self.user_conns.fetch_add(1, Ordering::Relaxed);
            let target = st.target.clone();
            let cred = st.credential.clone();
            let generation = st.generation;
            let max_packet = st.settings.max_packet_size;
            let pool = Arc::clone(self);
            self.tasks.spawn(async move {
                let result = server::connect(&target, &cred, max_packet).await;
                let mut st = pool.state.lock();
                st.connecting -= 1;
                match result {
                    Ok(mut conn) if generation == st.generation => {
                        conn.generation = generation;
                        conn.registration = Some(pool.register(&conn));
                        pool.give(&mut st, conn);
                    }
                    _ => {
                        st.total -= 1;
                        pool.release_counts(1);
                    }
                }
            });
        }
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

    /// Live servers (idle + active + connecting).
    pub fn total(&self) -> u32 {
        self.state.lock().total
    }
}
