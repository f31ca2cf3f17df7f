//! The cluster router: turns a Patroni cluster's published [`Topology`] into the members of the
//! pool sets of its `cluster=` databases, and owns the failover state machine.
//!
//! - **Confirmation.** The primary role goes only to a *confirmed* leader: the member Patroni
//!   reports as leader, in state running, that answered `pg_is_in_recovery()` = false on a fresh
//!   server connection made by the router. Every new connection to it is checked the same way
//!   (`Pool::set_verify_primary`). When Patroni and the node disagree the router holds.
//! - **Hold.** When the reported leader changes or vanishes, or a server of the confirmed leader
//!   fails in a way that suggests a role change (refused, closed, 57P01/57P02/57P03, 25006, in
//!   recovery), no member serves the primary role: sessions finish their running transaction,
//!   new checkouts wait in `Route::checkout` (bounded by failover_hold_timeout), the old leader's
//!   servers close as they come back (generation retire), and the router pokes discovery and
//!   re-tries confirmation every [`HOLD_TICK`]. Once a leader is confirmed the waiters go to it.
//!   A signal on a leader that then re-confirms at once ends the hold without retiring anything.
//! - **Replicas** are chosen by [`plan`]; a replica whose connections are refused or time out is
//!   banned for [`BAN_TIME`], never when that leaves its role without a server.
//!
//! The router never sends a client's bytes anywhere and never replays anything: it only decides
//! which member a checkout may pick. Discovery stays unaware of pools (it is read through a
//! `watch` and poked through a closure).

mod plan;
mod state;
#[cfg(test)]
mod tests;

pub use plan::{addr_of, plan, Addr, Knobs};
pub use state::{addr_text, Hold, RouterView};

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Connector, PoolObserver, PoolSet, Role, Serves, Signal};
use crate::config::{Config, ServerHost};
use crate::discovery::{MemberRole, Topology};
use crate::error::{Error, Result};

/// How often the router looks again (confirmation, discovery poke) while no leader is confirmed.
pub const HOLD_TICK: Duration = Duration::from_millis(100);
/// How soon it asks again when Patroni's leader answered that it is still in recovery or
/// starting up: a promotion under way, which takes a few hundred milliseconds.
const PROMOTING_TICK: Duration = Duration::from_millis(30);
/// How often it looks when all is well (ban expiry).
const IDLE_TICK: Duration = Duration::from_secs(1);
/// How long a failing replica is left out of the rotation.
pub const BAN_TIME: Duration = Duration::from_secs(15);
/// Longest a leader confirmation (connect, login, one query) may take.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(3);

/// Asks discovery for a poll now.
pub type Poke = Box<dyn Fn() + Send + Sync>;

/// One Patroni cluster's routing for every pool set of its databases.
pub struct ClusterRouter {
    /// The `[clusters]` name.
    pub name: String,
    /// The topology discovery publishes; read with `borrow`, never held across an await.
    topology: watch::Receiver<Arc<Topology>>,
    /// Asks discovery for a poll now.
    poke: Poke,
    /// Makes the confirmation connections.
    connector: Arc<dyn Connector>,
    /// The sets of the cluster's databases; dead ones are pruned at each step.
    sets: Mutex<Vec<(Weak<PoolSet>, Role)>>,
    /// Signals from member pools, taken by the next step.
    inbox: Mutex<Vec<(Addr, Signal)>>,
    /// Wakes the loop for a signal or a new set.
    wake: Notify,
    /// The routing state: confirmed leader, hold, bans. Short lock, never across an await.
    state: Mutex<state::RouterState>,
    /// The plan's knobs, replaced on reload.
    knobs: Mutex<Knobs>,
}

impl ClusterRouter {
    /// A router following `topology`; `poke` asks discovery for a poll now.
    pub fn new(
        name: &str,
        topology: watch::Receiver<Arc<Topology>>,
        poke: Poke,
        connector: Arc<dyn Connector>,
        knobs: Knobs,
    ) -> Arc<ClusterRouter> {
        Arc::new(ClusterRouter {
            name: name.to_string(),
            topology,
            poke,
            connector,
            sets: Mutex::new(Vec::new()),
            inbox: Mutex::new(Vec::new()),
            wake: Notify::new(),
            state: Mutex::new(state::RouterState::default()),
            knobs: Mutex::new(knobs),
        })
    }

    /// The knobs from a (re)loaded config.
    pub fn knobs_of(cfg: &Config) -> Knobs {
        Knobs {
            max_replica_lag: cfg.general.max_replica_lag,
            fallback: cfg.general.replica_fallback,
        }
    }

    /// Applies reloaded knobs at the next step.
    pub fn set_knobs(&self, knobs: Knobs) {
        *self.knobs.lock() = knobs;
        self.wake.notify_one();
    }

    /// Adds a set whose clients need `role`; it gets its members now, from what is known.
    pub fn add_set(self: &Arc<Self>, set: &Arc<PoolSet>, role: Role) {
        self.sets.lock().push((Arc::downgrade(set), role));
        let t = self.topology.borrow().clone();
        let (confirmed, banned) = {
            let st = self.state.lock();
            (st.confirmed_addr(), st.banned())
        };
        self.apply(set, role, &t, confirmed.as_ref(), &banned);
        self.wake.notify_one();
    }

    /// The role `set` is routed for by this router, if it is one of its sets.
    pub fn role_of(&self, set: &Arc<PoolSet>) -> Option<Role> {
        self.sets
            .lock()
            .iter()
            .find(|(w, _)| w.as_ptr() == Arc::as_ptr(set))
            .map(|(_, r)| *r)
    }

    /// Stops routing `set` (its database moved to another cluster or role on RELOAD); its
    /// members are left to whoever attaches it next.
    pub fn detach(&self, set: &Arc<PoolSet>) {
        self.sets
            .lock()
            .retain(|(w, _)| w.as_ptr() != Arc::as_ptr(set));
    }

    /// What SHOW CLUSTERS / SHOW MEMBERS and the metrics show.
    pub fn view(&self) -> RouterView {
        let held = self.live_sets().iter().map(|(s, _)| s.held_clients()).sum();
        self.state.lock().view(held)
    }

    /// What each member serves across the cluster's sets (`host:port` → roles), for the console.
    pub fn serving(&self) -> HashMap<String, Serves> {
        let mut out: HashMap<String, Serves> = HashMap::new();
        for (set, _) in self.live_sets() {
            for m in set.members() {
                let e = out
                    .entry(state::addr_text(&(m.host.clone(), m.port)))
                    .or_default();
                *e = e.union(m.serves);
            }
        }
        out
    }

    /// The loop: one step per topology change, signal or tick, until `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut topology = self.topology.clone();
        loop {
            let t = topology.borrow_and_update().clone();
            self.step(&t).await;
            let tick = {
                let st = self.state.lock();
                if st.settled() {
                    IDLE_TICK
                } else if st.promoting {
                    PROMOTING_TICK
                } else {
                    HOLD_TICK
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                r = topology.changed() => if r.is_err() { return },
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(tick) => {}
            }
        }
    }

    fn live_sets(&self) -> Vec<(Arc<PoolSet>, Role)> {
        let mut sets = self.sets.lock();
        sets.retain(|(w, _)| w.strong_count() > 0);
        sets.iter()
            .filter_map(|(w, r)| Some((w.upgrade()?, *r)))
            .collect()
    }

    /// One pass: take the signals, follow Patroni's leader, confirm, re-plan every set.
    pub async fn step(self: &Arc<Self>, t: &Topology) {
        let signals = std::mem::take(&mut *self.inbox.lock());
        let mut poke = false;
        let now = Instant::now();
        let leader = t
            .leader()
            .filter(|m| m.role == MemberRole::Leader && m.is_running())
            .and_then(|m| Some((m.name.clone(), addr_of(m)?)));
        {
            let mut st = self.state.lock();
            for (addr, signal) in signals {
                poke |= st.signal(&self.name, &addr, signal, now);
            }
            st.unban_expired(&self.name, now);
            // Patroni's leader is another member (or none): the confirmed one loses the role.
            if let Some(c) = st.confirmed.clone() {
                if leader.as_ref().map(|(_, a)| a) != Some(&c.addr) {
                    let to = leader.as_ref().map_or("none", |(n, _)| n.as_str());
                    st.start_hold(
                        &self.name,
                        format!("Patroni leader changed: {} -> {to}", c.name),
                        now,
                    );
                    st.retire = Some(c.addr.clone());
                }
            }
        }
        // Retire the old leader's servers: they close as they come back.
        let retire = self.state.lock().retire.take();
        if let Some(addr) = &retire {
            self.retire(addr);
        }
        let unconfirmed = self.state.lock().confirmed.is_none();
        if unconfirmed {
            poke = true;
            if let Some((name, addr)) = &leader {
                match self.confirm(addr).await {
                    Ok(()) => {
                        let stale = self.state.lock().confirmed_as(&self.name, name, addr);
                        if let Some(old) = stale {
                            self.retire(&old);
                        }
                    }
                    Err(e) => {
                        let mut st = self.state.lock();
                        st.promoting = matches!(e, Error::ServerInRecovery { .. })
                            || e.is_temporary_login_failure();
                        let stale = st.confirm_failed(&self.name, name, &e);
                        drop(st);
                        if let Some(old) = stale {
                            self.retire(&old);
                        }
                    }
                }
            }
        }
        if poke {
            (self.poke)();
        }
        let (confirmed, banned) = {
            let st = self.state.lock();
            (st.confirmed_addr(), st.banned())
        };
        for (set, role) in self.live_sets() {
            self.apply(&set, role, t, confirmed.as_ref(), &banned);
        }
    }

    /// Brings `set`'s members and what they serve in line with the plan.
    fn apply(
        self: &Arc<Self>,
        set: &Arc<PoolSet>,
        role: Role,
        t: &Topology,
        confirmed: Option<&Addr>,
        banned: &HashSet<Addr>,
    ) {
        let knobs = *self.knobs.lock();
        let planned = plan(t, confirmed, banned, role, knobs);
        let wanted: HashMap<&Addr, Serves> = planned.iter().map(|(a, s)| (a, *s)).collect();
        for m in set.members() {
            if !wanted.contains_key(&(m.host.clone(), m.port)) {
                tracing::info!(
                    "patroni cluster {}: {} member {}:{} left, its pool is closed",
                    self.name,
                    set.key,
                    m.host_text(),
                    m.port
                );
                set.remove_member(&m.host, m.port);
            }
        }
        let present: HashSet<Addr> = set
            .members()
            .into_iter()
            .map(|m| (m.host, m.port))
            .collect();
        for (addr, serves) in &planned {
            if !present.contains(addr) {
                let pool = set.add_member(addr.0.clone(), addr.1, Serves::NONE);
                pool.set_observer(self.clone());
            }
            if let Some(m) = set
                .members()
                .into_iter()
                .find(|m| m.host == addr.0 && m.port == addr.1)
            {
                m.pool.set_verify_primary(serves.serves(Role::Primary));
            }
            set.set_serves(&addr.0, addr.1, *serves);
        }
    }

    /// Closes the servers of the member at `addr` in every set as they come back.
    fn retire(&self, addr: &Addr) {
        for (set, _) in self.live_sets() {
            for m in set.members() {
                if m.host == addr.0 && m.port == addr.1 {
                    m.pool.reconnect();
                }
            }
        }
    }

    /// Logs in to `addr` as one of the sets does and asks `pg_is_in_recovery()`.
    async fn confirm(&self, addr: &Addr) -> Result<()> {
        let Some((target, cred, max_packet)) = self
            .live_sets()
            .iter()
            .find_map(|(s, _)| s.login_template())
        else {
            return Err(Error::NoServerForRole("primary"));
        };
        let mut target = (*target).clone();
        target.host = addr.0.clone();
        target.port = addr.1;
        let timeout = target.connect_timeout.min(CONFIRM_TIMEOUT);
        let check = async {
            let mut conn = self.connector.connect(&target, &cred, max_packet).await?;
            if self.connector.in_recovery(&mut conn, max_packet).await? {
                return Err(Error::ServerInRecovery {
                    addr: format!("{}:{}", target.host_text(), target.port),
                });
            }
            Ok(())
        };
        tokio::time::timeout(timeout, check)
            .await
            .unwrap_or_else(|_| {
                Err(Error::ServerConnect {
                    addr: format!("{}:{}", target.host_text(), target.port),
                    source: std::io::Error::from(std::io::ErrorKind::TimedOut),
                })
            })
    }
}

impl PoolObserver for ClusterRouter {
    fn server_failed(&self, addr: (&ServerHost, u16), signal: Signal) {
        self.inbox.lock().push(((addr.0.clone(), addr.1), signal));
        self.wake.notify_one();
    }
}

/// Wall-clock time for the console.
fn wall(now: Instant) -> SystemTime {
    SystemTime::now() - now.elapsed()
}
