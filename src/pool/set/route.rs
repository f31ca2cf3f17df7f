//! The session's handle on a set: the role it needs and the member it picked last, re-picked
//! only when the set's epoch changed. Split from `set.rs`, which owns the members.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use tokio::time::Instant;

use super::{PoolSet, Role};
use crate::error::{Error, Result};
use crate::pool::signal::Nudging;
use crate::pool::{Lease, Pool};

/// How a session reaches its servers: a set and the role it needs. Caches the member it picked,
/// so the per-transaction cost is one atomic load until the set changes.
#[derive(Clone)]
pub struct Route {
    /// The set the client's database and user map to.
    pub(super) set: Arc<PoolSet>,
    /// What the client needs.
    pub(super) role: Role,
    /// The set's epoch when `pool` was picked.
    pub(super) epoch: u64,
    /// The member picked last.
    pub(super) pool: Option<Arc<Pool>>,
}

impl Route {
    /// The set behind this route.
    pub fn set(&self) -> &Arc<PoolSet> {
        &self.set
    }

    /// The role this route asks for.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The member pool checkouts go to now (re-picked after a topology change).
    pub fn pool(&mut self) -> Result<&Arc<Pool>> {
        let epoch = self.set.epoch.load(Ordering::Acquire);
        if epoch != self.epoch || self.pool.is_none() {
            self.pool = self.set.pick(self.role);
            self.epoch = epoch;
        }
        // Built only when missing: an error made eagerly was dropped again on every checkout.
        let role = self.role;
        self.pool
            .as_ref()
            .ok_or_else(|| Error::NoServerForRole(role.as_str()))
    }

    /// An idle server of the current member right now, if it has one (see
    /// [`Pool::try_take_idle`]: `now` is the caller's clock read; the flag asks for
    /// server_check_query first).
    pub fn try_take_idle(&mut self, now: std::time::Instant) -> Option<(Lease, bool)> {
        self.pool().ok()?.try_take_idle(now)
    }

    /// A server of the current member, queueing if needed (see [`Pool::checkout`]).
    ///
    /// In a discovered set, when no member serves the role (a failover hold, no leader yet, no
    /// usable replica) the client waits for the set to change, bounded by failover_hold_timeout
    /// and query_wait_timeout together; a client queued on a member that stops serving the role
    /// is moved to the one that does. Nothing was sent to a server while it waits.
    pub async fn checkout(&mut self) -> Result<Lease> {
        self.checkout_nudged(None).await
    }

    /// [`Route::checkout`], and `nudge` is told once if the wait is still on at its time
    /// (query_wait_notify), whether queued in a pool or held for a failover.
    pub async fn checkout_nudged(&mut self, nudge: Nudging) -> Result<Lease> {
        self.checkout_since(std::time::Instant::now(), nudge).await
    }

    /// [`Route::checkout_nudged`] with the wait counted from `started`, the caller's clock
    /// read (the session reads it once to look for an idle server, then queues).
    pub async fn checkout_since(
        &mut self,
        started: std::time::Instant,
        nudge: Nudging,
    ) -> Result<Lease> {
        if !self.set.discovered {
            // A fixed set (one host, or a host list): no hold, no clock read. With a host list,
            // a client queued on a host that turns out unreachable moves to the next one, each
            // host tried once (the set's lock is taken only then, off the usual path).
            let mut tries = None;
            let mut since = Some(tokio::time::Instant::from_std(started));
            loop {
                let pool = self.pool()?.clone();
                // A wait on the next host counts from its own start.
                let since = since.take().unwrap_or_else(tokio::time::Instant::now);
                match pool.checkout_since(since, nudge.clone()).await {
                    Err(Error::HostDown) => {
                        self.pool = None;
                        let left = tries.get_or_insert_with(|| self.set.state.lock().members.len());
                        if *left == 0 {
                            return Err(Error::HostDown);
                        }
                        *left -= 1;
                    }
                    other => return other,
                }
            }
        }
        let started = Instant::now();
        loop {
            // Subscribed before looking, so a change between the look and the wait is seen.
            let mut changes = self.set.changed.subscribe();
            if let Ok(pool) = self.pool() {
                match pool.clone().checkout_nudged(nudge.clone()).await {
                    Err(Error::Rerouted) => continue,
                    r => return r,
                }
            }
            let settings = self.set.settings();
            let hold = settings.failover_hold_timeout;
            let wait = settings.query_wait_timeout;
            // (bound, whether failover_hold_timeout is the one that ends the wait)
            let limit = match (hold.is_zero(), wait.is_zero()) {
                (true, true) => None,
                (false, true) => Some((hold, true)),
                (true, false) => Some((wait, false)),
                (false, false) => Some((hold.min(wait), hold <= wait)),
            };
            let _held = HeldGuard::new(&self.set.held_clients);
            // Held with no pool to queue in: this rare wait nudges with a timer of its own.
            let changed = async {
                let nudged = async {
                    if let Some((at, n)) = &nudge {
                        tokio::time::sleep_until(*at).await;
                        n.nudge();
                    }
                    std::future::pending::<()>().await
                };
                tokio::select! {
                    _ = changes.changed() => {}
                    _ = nudged => {}
                }
            };
            match limit {
                None => changed.await,
                Some((limit, hold_first)) => {
                    if tokio::time::timeout_at(started + limit, changed)
                        .await
                        .is_err()
                    {
                        return Err(if hold_first {
                            Error::FailoverHoldTimeout
                        } else {
                            Error::QueryWaitTimeout
                        });
                    }
                }
            }
        }
    }
}

/// Counts a client in [`PoolSet::held_clients`] while it waits, however the wait ends.
struct HeldGuard<'a>(&'a AtomicU32);

impl<'a> HeldGuard<'a> {
    fn new(n: &'a AtomicU32) -> HeldGuard<'a> {
        n.fetch_add(1, Ordering::Relaxed);
        HeldGuard(n)
    }
}

impl Drop for HeldGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
