//! Making server connections for a pool (launch tasks, retries, login failures) and the
//! janitor step (idle timeout, lifetime, min_pool_size). A child of `pool` so it shares the
//! pool's private state; nothing here is on a client's path except `maybe_launch`.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::{Pool, State};
use crate::error::{sqlstate, Error, Result};
use crate::logsafe::Clean;
use crate::server::{Registration, ServerConn, ServerCredential, ServerTarget};

impl Pool {
    /// Starts a new server connection when clients wait and the limits allow it.
    pub(super) fn maybe_launch(self: &Arc<Self>, st: &mut State, reserve: bool) -> bool {
        // The cheap checks first: under load the pool is full, and pruning gone waiters walks the
        // whole queue (500 clients on 20 servers: ~480 entries per checkout). The periodic upkeep
        // prunes them anyway, and checkin skips them.
        if !st.paused.is_empty() {
            return false;
        }
        if !self.within_limits(st, reserve) {
            if self.capped_by_siblings(st) {
                self.cap_starved.notify_one();
            }
            return false;
        }
        st.waiters.retain(|w| !w.tx.is_closed());
        if st.waiters.len() as u32 <= st.connecting {
            return false;
        }
        // Until a server of this pool has logged in, one connect at a time, as PgBouncer
        // launches them: the other clients wait for its outcome, so a dead or unresolvable host
        // is tried (and logged) once, not once per client.
        if st.connecting > 0 && st.total == st.connecting {
            return false;
        }
        self.start_launch(st);
        true
    }

    /// True when one more server fits pool_size (plus the reserve when `reserve`),
    /// max_db_connections and max_user_connections.
    fn within_limits(&self, st: &State, reserve: bool) -> bool {
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
        true
    }

    /// True when this pool has room under pool_size but max_db_connections or
    /// max_user_connections, shared with sibling pools, is used up.
    fn capped_by_siblings(&self, st: &State) -> bool {
        let s = &st.settings;
        let full = |cap: u32, used: &std::sync::atomic::AtomicU32| {
            cap != 0 && used.load(Ordering::Relaxed) >= cap
        };
        (s.pool_size == 0 || st.total < s.pool_size)
            && (full(s.max_db_connections, &self.db_conns)
                || full(s.max_user_connections, &self.user_conns))
    }

    /// Counts one more server and spawns the task that logs it in.
    fn start_launch(self: &Arc<Self>, st: &mut State) {
        self.db_conns.fetch_add(1, Ordering::Relaxed);
        self.user_conns.fetch_add(1, Ordering::Relaxed);
        st.total += 1;
        st.connecting += 1;
        let target = st.target.clone();
        let cred = st.credential.clone();
        let generation = st.generation;
        let max_packet = st.settings.max_packet_size;
        let retry = st.settings.server_login_retry;
        let verify = st.verify_primary;
        let pool = Arc::clone(self);
        self.tasks.spawn(async move {
            let launch = Arc::clone(&pool).launch(target, cred, generation, max_packet, retry, verify);
            if let Err(why) = crate::unwind::caught(launch).await {
                tracing::error!(
                    pool = %Clean(&pool.key),
                    "server launch panicked ({why}): its slot is freed; this is a bug, please report it"
                );
                pool.abandon_launch();
            }
        });
    }

    /// Gives back the slot of a launch that panicked (in a connector: `settle_launch` books
    /// under the lock and cannot stop half-way), so the pool does not stay full of servers that
    /// will never come. Its waiters stay queued: the janitor's next pass launches for them, at
    /// its own pace, so a connector that always panics cannot spin.
    fn abandon_launch(&self) {
        let mut st = self.state.lock();
        st.connecting -= 1;
        st.total -= 1;
        self.release_counts(1);
    }

    /// Makes one server connection, retrying network failures while clients still wait.
    async fn launch(
        self: Arc<Self>,
        target: Arc<ServerTarget>,
        cred: ServerCredential,
        generation: u64,
        max_packet: u32,
        retry: Duration,
        verify: bool,
    ) {
        let mut delay = Duration::from_millis(50);
        loop {
            let mut result = self.connector.connect(&target, &cred, max_packet).await;
            if verify {
                // A primary member not re-confirmed: a connection to a node that is (still or
                // again) in recovery must never take writes.
                if let Ok(conn) = &mut result {
                    match self.connector.in_recovery(conn, max_packet).await {
                        Ok(false) => {}
                        Ok(true) => {
                            result = Err(Error::ServerInRecovery {
                                addr: format!("{}:{}", target.host_text(), target.port),
                            })
                        }
                        Err(e) => result = Err(e),
                    }
                }
            }
            if let Err(e) = &result {
                self.report_failure(e);
            }
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
                    if st.settings.log_connections {
                        // PgBouncer's line, so operators' greps keep working.
                        tracing::info!(
                            "S-{} {}/{}@{}:{} new connection to server (from {}:{})",
                            conn.id,
                            self.key.db,
                            self.key.user,
                            conn.cancel_host_text(),
                            conn.cancel.port,
                            conn.local_addr.0,
                            conn.local_addr.1
                        );
                    }
                    self.give(&mut st, Box::new(conn));
                    // The clients still waiting now get connects of their own.
                    self.maybe_launch(&mut st, false);
                    return true;
                }
                // 57P03 (starting up / shutting down) is a restart or a switchover in
                // progress, not a refusal: retried like a network failure, never cached.
                Err(Error::ServerLogin(fields)) if fields.code != sqlstate::CANNOT_CONNECT_NOW => {
                    // PgBouncer's text: severity, then the server's message.
                    tracing::warn!(
                        pool = %Clean(&self.key),
                        "server login failed: {} {}",
                        Clean(&fields.severity),
                        Clean(&fields.message)
                    );
                    self.log_login_refused(&st, &fields.message);
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
                    tracing::warn!(pool = %Clean(&self.key), "server login failed: {}", Clean(&msg));
                    self.log_login_refused(&st, &msg);
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
                        tracing::warn!(pool = %Clean(&self.key), "server connect failed: {}", Clean(&e));
                        return true;
                    }
                    tracing::warn!(pool = %Clean(&self.key), "server connect failed, retrying: {}", Clean(&e));
                }
            }
        }
        false
    }

    fn register(&self, conn: &ServerConn) -> Registration {
        let r = Registration::new(
            &self.servers,
            conn.id,
            &self.key.db,
            &self.key.user,
            conn.cancel_host_text(),
            conn.cancel.port,
            conn.local_addr.clone(),
            conn.cancel.pid,
        );
        if conn.stream.is_tls() {
            let _ = r.info.tls.set(conn.stream.tls_description());
        }
        r
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
        let mut idle: Vec<Box<ServerConn>> = st.idle.drain(..).collect();
        idle.sort_by_key(|c| c.last_used);
        for conn in idle {
            let idle_too_long = !s.server_idle_timeout.is_zero()
                && conn.last_used.elapsed() >= s.server_idle_timeout
                && live > s.min_pool_size;
            // With server_lifetime = 0 a server closes after its one use (at checkin), so the
            // idle ones here never served a client (welcome fetch, min_pool_size): kept.
            // PgBouncer's janitor closes those too, which makes min_pool_size churn.
            let expired =
                !s.server_lifetime.is_zero() && conn.created.elapsed() >= s.server_lifetime;
            // PgBouncer's janitor order and words.
            let reason = if conn.generation != st.generation {
                Some("database configuration changed")
            } else if conn.is_broken_while_idle() {
                Some("server conn crashed?")
            } else if idle_too_long {
                Some("server idle timeout")
            } else if expired {
                Some("server lifetime over")
            } else {
                None
            };
            if let Some(reason) = reason {
                if s.log_disconnections {
                    self.log_close(&conn, reason);
                }
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
            st.waiters.retain(|w| !w.tx.is_closed());
            self.maybe_launch(&mut st, false);
        }
        // min_pool_size is filled once the pool has had a client (it has logged in), or at
        // once for a forced-user database, as PgBouncer does.
        if s.min_pool_size > 0
            && st.total < s.min_pool_size
            && st.paused.is_empty()
            && (st.welcome.is_some() || s.forced_user)
        {
            let need = s.min_pool_size - st.total;
            self.fill_min(&mut st, need);
        }
    }

    fn fill_min(self: &Arc<Self>, st: &mut State, need: u32) {
        // With no client waiting, a launch that fails is not retried: the next janitor tick
        // tries again.
        for _ in 0..need {
            // The same limits as for a waiting client: min_pool_size never exceeds them.
            if !self.within_limits(st, false) {
                break;
            }
            self.start_launch(st);
        }
    }

    /// True when clients wait here only because a cap shared with other pools is used up:
    /// max_db_connections (`by_user` false) or max_user_connections (`by_user` true). The
    /// janitor then closes an idle server of a sibling, as PgBouncer does.
    pub fn starved_by_cap(&self, by_user: bool) -> bool {
        let st = self.state.lock();
        let s = &st.settings;
        let (cap, used) = if by_user {
            (s.max_user_connections, &self.user_conns)
        } else {
            (s.max_db_connections, &self.db_conns)
        };
        // Waiters a launch already in flight will serve need no further room: without this,
        // every pass during a slow server login evicted one more sibling server.
        let waiting = st.waiters.iter().filter(|w| !w.tx.is_closed()).count();
        cap != 0
            && st.paused.is_empty()
            && waiting > st.connecting as usize
            && (s.pool_size == 0 || st.total < s.pool_size)
            && used.load(Ordering::Relaxed) >= cap
    }

    /// When this pool's longest-idle server was last used, if it has an idle one: the janitor
    /// evicts the longest-idle server among the pools that share a cap, as PgBouncer does.
    pub fn oldest_idle(&self) -> Option<std::time::Instant> {
        self.state.lock().idle.iter().map(|c| c.last_used).min()
    }

    /// Closes this pool's longest-idle server to make room for a sibling's waiting client,
    /// with PgBouncer's close reason "evicted". Returns whether there was one to close.
    pub fn evict_one_idle(&self) -> bool {
        let mut st = self.state.lock();
        let Some(oldest) = st
            .idle
            .iter()
            .enumerate()
            .min_by_key(|(_, c)| c.last_used)
            .map(|(i, _)| i)
        else {
            return false;
        };
        let Some(conn) = st.idle.remove(oldest) else {
            return false;
        };
        st.total -= 1;
        self.release_counts(1);
        if st.settings.log_disconnections {
            self.log_close(&conn, "evicted");
        }
        true
    }
}
