//! A logical database's pools: one [`Pool`] per member host under the same (database, user),
//! and the choice, per checkout, of the member that serves the role the client needs.
//!
//! Today every `[databases]` entry names one fixed host, so its set has exactly one member that
//! serves every role. The set is built so that topology discovery can add and remove members at
//! run time, move the primary role from one member to another, and hold checkouts
//! ([`PauseReasons::FAILOVER_HOLD`]) without the session noticing anything but latency: the
//! session holds a [`Route`] (set + role), never a host.
//!
//! Hot path: a [`Route`] caches the member it picked and re-picks only when the set's `epoch`
//! changed (one atomic load per checkout; no lock, no allocation).

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::time::Instant;

use super::pause::{PauseBook, PauseReasons};
use super::{Pool, PoolKey, PoolLinks, PoolSettings, Welcome};
use crate::config::{LoadBalanceHosts, PoolMode, ServerHost};
use crate::error::Error;
use crate::server::{ParamSet, ServerCredential, ServerTarget};

mod route;
pub use route::Route;

/// What a client needs from the server it is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The confirmed primary (writes).
    Primary,
    /// Any replica (reads that tolerate lag).
    Replica,
    /// A synchronous standby.
    Sync,
    /// Whichever member serves anything.
    Any,
}

impl Role {
    /// The name used in config and console output.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Primary => "primary",
            Role::Replica => "replica",
            Role::Sync => "sync",
            Role::Any => "any",
        }
    }
}

/// The roles one member serves (a bitset).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Serves(u8);

impl Serves {
    /// Serves nothing (e.g. a member that is starting, or banned).
    pub const NONE: Serves = Serves(0);
    /// The confirmed primary.
    pub const PRIMARY: Serves = Serves(1);
    /// A replica.
    pub const REPLICA: Serves = Serves(2);
    /// A synchronous standby (usually also [`Serves::REPLICA`]).
    pub const SYNC: Serves = Serves(4);
    /// A fixed `host=` database: its one server serves every role.
    pub const ALL: Serves = Serves(7);

    /// This set with `other`'s roles added.
    pub fn union(self, other: Serves) -> Serves {
        Serves(self.0 | other.0)
    }

    /// `primary,replica,sync` (the roles set, in that order); empty for none.
    pub fn names(self) -> String {
        let mut v = Vec::new();
        for (bit, name) in [
            (Serves::PRIMARY, "primary"),
            (Serves::REPLICA, "replica"),
            (Serves::SYNC, "sync"),
        ] {
            if self.0 & bit.0 != 0 {
                v.push(name);
            }
        }
        v.join(",")
    }

    /// Whether a member with these roles can serve `role`.
    pub fn serves(self, role: Role) -> bool {
        match role {
            Role::Primary => self.0 & Self::PRIMARY.0 != 0,
            Role::Replica => self.0 & Self::REPLICA.0 != 0,
            Role::Sync => self.0 & Self::SYNC.0 != 0,
            Role::Any => self.0 != 0,
        }
    }
}

/// One member of a set: a host and the pool of servers on it.
#[derive(Clone)]
pub struct Member {
    /// Host name, address or Unix socket directory.
    pub host: ServerHost,
    /// Port.
    pub port: u16,
    /// What it serves right now.
    pub serves: Serves,
    /// Its pool.
    pub pool: Arc<Pool>,
    /// Host lists: connecting to it failed; checkouts go to the other hosts until then.
    pub down_until: Option<Instant>,
}

impl Member {
    fn usable(&self, role: Role, now: Instant) -> bool {
        self.serves.serves(role) && self.down_until.is_none_or(|t| t <= now)
    }
}

impl Member {
    /// The host as text (logs, console).
    pub fn host_text(&self) -> String {
        match &self.host {
            ServerHost::Tcp(h) => h.clone(),
            ServerHost::Unix(p) => p.display().to_string(),
        }
    }
}

/// Mutable state of a set; guarded by `PoolSet::state`, never held across an await.
struct SetState {
    /// Settings every member runs with.
    settings: Arc<PoolSettings>,
    /// The target every member's target is made from (host and port replaced per member).
    target: Arc<ServerTarget>,
    /// How every member logs in.
    credential: ServerCredential,
    /// The members, in the order they were added.
    members: Vec<Member>,
    /// Pause reasons the set itself owns (a failover hold), applied to new members too.
    held: PauseReasons,
    /// `host=a,b,...`: how members are chosen; `None` for one host or discovered members.
    balance: Option<LoadBalanceHosts>,
    /// The credential came from auth_query (`offer_credential`), not from the config: a reload,
    /// whose config has none for this user, keeps it.
    from_auth_query: bool,
    /// The tracked-parameter sets the last login handed out (see [`ParamSets`]).
    param_sets: Option<ParamSets>,
}

/// The tracked-parameter sets a login made from one welcome, kept so the next clients of the
/// set that want the same values share them instead of building their own (an allocation per
/// login, and a copy kept by every idle client). The pool only stores them; the session makes
/// and compares them.
#[derive(Clone)]
pub struct ParamSets {
    /// The welcome the sets were made from: its names are the sets' names, by identity.
    pub welcome: Arc<Welcome>,
    /// What a client that asks for nothing gets: the welcome's values.
    pub defaults: ParamSet,
    /// The set the last login that asked for other values got.
    pub last: ParamSet,
    /// The ParameterStatus messages a login sent last (see [`StatusBlock`]).
    pub status: Option<StatusBlock>,
}

/// The ParameterStatus messages of a welcome, as a login wrote them, and what they were made
/// from: the next login with the same parameter set copies them instead of encoding a dozen
/// messages again (~4k instructions per login).
#[derive(Clone)]
pub struct StatusBlock {
    /// The client's parameter set the messages carry.
    pub params: ParamSet,
    /// max_prepared_statements announced (pgbouncer.max_prepared_statements).
    pub max_prepared: u64,
    /// The pool mode announced (pgbouncer.pool_mode).
    pub pool_mode: PoolMode,
    /// The encoded messages.
    pub bytes: bytes::Bytes,
}

/// Where a set's members come from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// One `host=`: the member follows the target on reload.
    Fixed,
    /// `host=a,b,...`: members from the list.
    HostList,
    /// `cluster=`: members from the Patroni topology.
    Discovered,
}

/// The pools of one (database, user).
pub struct PoolSet {
    /// (database, user) as the client named them.
    pub key: PoolKey,
    /// Members and their template; one short lock, taken only off the per-transaction path.
    state: Mutex<SetState>,
    /// Bumped on every change of members or roles: routes re-pick when it moves.
    epoch: AtomicU64,
    /// Rotates the choice among members serving the same role.
    next: AtomicUsize,
    /// A fixed `host=` entry: reload may move its one member to a new host.
    fixed: bool,
    /// Members come from a Patroni cluster: a checkout that finds no member for its role
    /// waits (a failover hold) instead of failing at once.
    discovered: bool,
    /// Ticks on every `epoch` bump, so clients waiting for a member serving their role wake.
    changed: watch::Sender<u64>,
    /// Clients waiting for a member serving their role right now (held by a failover hold).
    held_clients: AtomicU32,
    /// What new member pools share with their siblings.
    links: PoolLinks,
    /// Console and shutdown pause reasons, which new members start with.
    book: Arc<PauseBook>,
    /// This set, for the connectors of host-list members (see `hosts::FallThrough`).
    me: Weak<PoolSet>,
}

impl PoolSet {
    /// A set with no member (members come from discovery).
    pub fn new(
        key: PoolKey,
        settings: Arc<PoolSettings>,
        target: Arc<ServerTarget>,
        credential: ServerCredential,
        links: PoolLinks,
        book: Arc<PauseBook>,
    ) -> Arc<PoolSet> {
        Self::build(
            key,
            settings,
            target,
            credential,
            links,
            book,
            Kind::Discovered,
        )
    }

    /// An empty set for a `host=a,b,...` database, to be given its hosts by
    /// [`PoolSet::set_host_list`]: not discovered (no failover hold; an unreachable host is set
    /// aside instead).
    pub fn host_list(
        key: PoolKey,
        settings: Arc<PoolSettings>,
        target: Arc<ServerTarget>,
        credential: ServerCredential,
        links: PoolLinks,
        book: Arc<PauseBook>,
    ) -> Arc<PoolSet> {
        Self::build(
            key,
            settings,
            target,
            credential,
            links,
            book,
            Kind::HostList,
        )
    }

    /// True when members come from discovery (a `cluster=` database).
    pub fn is_discovered(&self) -> bool {
        self.discovered
    }

    /// Clients waiting for a member serving their role (a failover hold in progress).
    pub fn held_clients(&self) -> u32 {
        self.held_clients.load(Ordering::Relaxed)
    }

    /// The set of a fixed `host=` database: one member, at the target's host, serving every role.
    pub fn fixed(
        key: PoolKey,
        settings: Arc<PoolSettings>,
        target: Arc<ServerTarget>,
        credential: ServerCredential,
        links: PoolLinks,
        book: Arc<PauseBook>,
    ) -> Arc<PoolSet> {
        let (host, port) = (target.host.clone(), target.port);
        let set = Self::build(key, settings, target, credential, links, book, Kind::Fixed);
        set.add_member(host, port, Serves::ALL);
        set
    }

    fn build(
        key: PoolKey,
        settings: Arc<PoolSettings>,
        target: Arc<ServerTarget>,
        credential: ServerCredential,
        links: PoolLinks,
        book: Arc<PauseBook>,
        kind: Kind,
    ) -> Arc<PoolSet> {
        Arc::new_cyclic(|me| PoolSet {
            key,
            state: Mutex::new(SetState {
                settings,
                target,
                credential,
                members: Vec::new(),
                held: PauseReasons::NONE,
                balance: None,
                from_auth_query: false,
                param_sets: None,
            }),
            epoch: AtomicU64::new(0),
            next: AtomicUsize::new(0),
            fixed: kind == Kind::Fixed,
            discovered: kind == Kind::Discovered,
            changed: watch::channel(0).0,
            held_clients: AtomicU32::new(0),
            links,
            book,
            me: me.clone(),
        })
    }

    fn bump(&self) {
        let e = self.epoch.fetch_add(1, Ordering::AcqRel) + 1;
        self.changed.send_replace(e);
    }

    /// Sets what the member at `host:port` serves (no-op for an unknown member). When it stops
    /// serving a role it served, the clients queued on it pick again.
    pub fn set_serves(&self, host: &ServerHost, port: u16, serves: Serves) {
        let withdrawn = {
            let mut st = self.state.lock();
            let Some(m) = st
                .members
                .iter_mut()
                .find(|m| &m.host == host && m.port == port)
            else {
                return;
            };
            if m.serves == serves {
                return;
            }
            let lost = m.serves.0 & !serves.0 != 0;
            m.serves = serves;
            lost.then(|| m.pool.clone())
        };
        self.bump();
        if let Some(pool) = withdrawn {
            pool.fail_waiters(|| Error::Rerouted);
        }
    }

    /// Adds a member (or, when `host:port` is one already, sets what it serves). Returns its pool.
    pub fn add_member(&self, host: ServerHost, port: u16, serves: Serves) -> Arc<Pool> {
        let mut st = self.state.lock();
        if let Some(m) = st
            .members
            .iter_mut()
            .find(|m| m.host == host && m.port == port)
        {
            m.serves = serves;
            let pool = m.pool.clone();
            drop(st);
            self.bump();
            return pool;
        }
        let mut target = (*st.target).clone();
        target.host = host.clone();
        target.port = port;
        let mut links = self.links.clone();
        if st.balance.is_some() {
            links.connector = super::hosts::FallThrough::wrap(links.connector, self.me.clone());
        }
        let pool = Pool::new(
            self.key.clone(),
            st.settings.clone(),
            Arc::new(target),
            st.credential.clone(),
            links,
        );
        pool.set_booked(self.book.effective(&self.key.db));
        if !st.held.is_empty() {
            pool.pause(st.held);
        }
        st.members.push(Member {
            host,
            port,
            serves,
            pool: pool.clone(),
            down_until: None,
        });
        drop(st);
        self.bump();
        pool
    }

    /// Removes a member: its servers close as they are released and its queued clients are
    /// failed with `database removed`. Returns its pool, if it was a member.
    pub fn remove_member(&self, host: &ServerHost, port: u16) -> Option<Arc<Pool>> {
        let pool = {
            let mut st = self.state.lock();
            let i = st
                .members
                .iter()
                .position(|m| &m.host == host && m.port == port)?;
            st.members.remove(i).pool
        };
        self.bump();
        pool.reconnect();
        if self.discovered {
            // The member left the cluster: its queued clients go to another one.
            pool.fail_waiters(|| Error::Rerouted);
        } else {
            pool.fail_waiters(|| Error::DatabaseRemoved);
        }
        Some(pool)
    }

    /// Every member, in the order they were added.
    pub fn members(&self) -> Vec<Member> {
        self.state.lock().members.clone()
    }

    /// Every member's pool.
    pub fn pools(&self) -> Vec<Arc<Pool>> {
        self.state
            .lock()
            .members
            .iter()
            .map(|m| m.pool.clone())
            .collect()
    }

    /// The pool a checkout for `role` goes to now: the members serving it in turn (with
    /// `load_balance_hosts = disable`, the first one). A host that failed is skipped while
    /// another one is usable.
    pub fn pick(&self, role: Role) -> Option<Arc<Pool>> {
        let st = self.state.lock();
        let now = Instant::now();
        let usable = |m: &&Member| m.usable(role, now);
        let serving = |m: &&Member| m.serves.serves(role);
        let up = st.members.iter().filter(usable).count();
        let (n, filter): (usize, &dyn Fn(&&Member) -> bool) = if up > 0 {
            (up, &usable)
        } else {
            (st.members.iter().filter(serving).count(), &serving)
        };
        if n == 0 {
            return None;
        }
        let i = if n == 1 || st.balance == Some(LoadBalanceHosts::Disable) {
            0
        } else {
            self.next.fetch_add(1, Ordering::Relaxed) % n
        };
        st.members
            .iter()
            .filter(filter)
            .nth(i)
            .map(|m| m.pool.clone())
    }

    /// Makes the members exactly `hosts` (a `host=a,b,...` list), each serving every role,
    /// chosen as `balance` says. Members that left the list close their servers as they are
    /// released.
    pub fn set_host_list(&self, hosts: &[(ServerHost, u16)], balance: LoadBalanceHosts) {
        let gone: Vec<(ServerHost, u16)> = {
            let mut st = self.state.lock();
            st.balance = Some(balance);
            st.members
                .iter()
                .filter(|m| !hosts.iter().any(|(h, p)| *h == m.host && *p == m.port))
                .map(|m| (m.host.clone(), m.port))
                .collect()
        };
        for (h, p) in &gone {
            self.remove_member(h, *p);
        }
        for (h, p) in hosts {
            self.add_member(h.clone(), *p, Serves::ALL);
        }
        self.bump();
    }

    /// True for the one-member set of a single `host=`.
    pub fn is_fixed(&self) -> bool {
        self.fixed
    }

    /// `load_balance_hosts` for the console; `None` unless this is a host list.
    pub fn load_balance_hosts(&self) -> Option<LoadBalanceHosts> {
        self.state.lock().balance
    }

    /// A host-list member could not be reached: new checkouts go to the other hosts for
    /// server_login_retry, and the clients queued on it move there. The last usable host is
    /// never set aside (its clients wait and it is retried, as with one host).
    /// `why` completes the log line ("is unreachable", "does not satisfy ...").
    pub fn host_failed(&self, host: &ServerHost, port: u16, why: &str) {
        let pool = {
            let mut st = self.state.lock();
            if st.balance.is_none() {
                return;
            }
            let now = Instant::now();
            let others_up = st
                .members
                .iter()
                .filter(|m| !(m.host == *host && m.port == port) && m.usable(Role::Any, now))
                .count();
            let retry = st
                .settings
                .server_login_retry
                .max(std::time::Duration::from_secs(1));
            let Some(m) = st
                .members
                .iter_mut()
                .find(|m| m.host == *host && m.port == port)
            else {
                return;
            };
            if others_up == 0 {
                return;
            }
            m.down_until = Some(now + retry);
            m.pool.clone()
        };
        tracing::warn!(
            "{}: host {}:{port} {why}, trying the other hosts",
            self.key,
            host_text(host)
        );
        self.bump();
        pool.fail_waiters(|| Error::HostDown);
    }

    /// A host-list member logged a server in: it is usable again.
    pub fn host_ok(&self, host: &ServerHost, port: u16) {
        let changed = {
            let mut st = self.state.lock();
            st.members
                .iter_mut()
                .find(|m| m.host == *host && m.port == port)
                .and_then(|m| m.down_until.take())
                .is_some()
        };
        if changed {
            self.bump();
        }
    }

    /// A route for clients that need `role`.
    pub fn route(self: &Arc<Self>, role: Role) -> Route {
        Route {
            set: self.clone(),
            role,
            epoch: u64::MAX,
            pool: None,
        }
    }

    /// How a member logs in (target template, credential, max packet), for the cluster
    /// router's confirmation; `None` while the credential cannot log in yet (SCRAM keys not
    /// recovered from a client).
    pub fn login_template(&self) -> Option<(Arc<ServerTarget>, ServerCredential, u32)> {
        let st = self.state.lock();
        if st.credential == ServerCredential::ScramSecretOnly {
            return None;
        }
        Some((
            st.target.clone(),
            st.credential.clone(),
            st.settings.max_packet_size,
        ))
    }

    /// The settings every member runs with.
    pub fn settings(&self) -> Arc<PoolSettings> {
        self.state.lock().settings.clone()
    }

    /// The first member's welcome ParameterStatus set, once one has logged in.
    pub fn welcome(&self) -> Option<Arc<Welcome>> {
        // Under the set's lock (the set -> pool order `reconfigure` takes too): collecting the
        // members first was a Vec per login.
        self.state
            .lock()
            .members
            .iter()
            .find_map(|m| m.pool.welcome())
    }

    /// The tracked-parameter sets last handed out for `welcome`, if they were made from it.
    pub fn param_sets(&self, welcome: &Arc<Welcome>) -> Option<ParamSets> {
        self.state
            .lock()
            .param_sets
            .as_ref()
            .filter(|s| Arc::ptr_eq(&s.welcome, welcome))
            .cloned()
    }

    /// Keeps `sets` for the next logins (see [`ParamSets`]).
    pub fn keep_param_sets(&self, sets: ParamSets) {
        self.state.lock().param_sets = Some(sets);
    }

    /// Keeps the ParameterStatus messages made from `welcome` (see [`StatusBlock`]).
    pub fn keep_status(&self, welcome: &Arc<Welcome>, block: StatusBlock) {
        let mut st = self.state.lock();
        if let Some(sets) = st
            .param_sets
            .as_mut()
            .filter(|s| Arc::ptr_eq(&s.welcome, welcome))
        {
            sets.status = Some(block);
        }
    }

    /// Applies reloaded settings to every member. A fixed set's member follows the target's
    /// host; discovered members keep theirs.
    pub fn reconfigure(
        &self,
        settings: Arc<PoolSettings>,
        target: Arc<ServerTarget>,
        credential: ServerCredential,
    ) {
        let mut st = self.state.lock();
        st.settings = settings.clone();
        st.target = target.clone();
        // A user known only through auth_query has no credential in the config: keep the one
        // its logins found, or servers for its connected clients could not log in after a RELOAD.
        let credential = if st.from_auth_query && credential == ServerCredential::None {
            st.credential.clone()
        } else {
            credential
        };
        st.credential = credential.clone();
        let mut moved = false;
        for m in st.members.iter_mut() {
            if self.fixed {
                moved |= m.host != target.host || m.port != target.port;
                m.host = target.host.clone();
                m.port = target.port;
            }
            let mut t = (*target).clone();
            t.host = m.host.clone();
            t.port = m.port;
            m.pool
                .reconfigure(settings.clone(), Arc::new(t), credential.clone());
        }
        drop(st);
        if moved {
            self.bump();
        }
    }

    /// Stores the credential an auth_query answer gave on every member (and for members to
    /// come). Keys already recovered from a client's SCRAM proof win over a bare SCRAM secret.
    pub fn offer_credential(&self, credential: ServerCredential) {
        let mut st = self.state.lock();
        st.from_auth_query = true;
        let has_keys = matches!(st.credential, ServerCredential::ScramKeys { .. })
            && credential == ServerCredential::ScramSecretOnly;
        if !has_keys {
            st.credential = credential.clone();
        }
        for m in &st.members {
            m.pool.offer_credential(credential.clone());
        }
    }

    /// Stores SCRAM keys from a client's proof on every member (and for members to come).
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
        }
        for m in &st.members {
            m.pool.offer_scram_keys(client_key, server_key);
        }
    }

    /// Holds every member's checkouts for a reason the set owns (a failover hold).
    pub fn hold(&self, reason: PauseReasons) {
        let reason = reason.intersect(PauseReasons::BOOKED.complement());
        let mut st = self.state.lock();
        st.held.insert(reason);
        for m in &st.members {
            m.pool.pause(reason);
        }
    }

    /// Lifts a reason [`PoolSet::hold`] set.
    pub fn release_hold(&self, reason: PauseReasons) {
        let pools = {
            let mut st = self.state.lock();
            st.held.remove(reason);
            st.members
                .iter()
                .map(|m| m.pool.clone())
                .collect::<Vec<_>>()
        };
        for p in pools {
            p.resume(reason.intersect(PauseReasons::BOOKED.complement()));
        }
    }

    /// Applies the console/shutdown reasons of the registry's book to every member.
    pub fn set_booked(&self, booked: PauseReasons) {
        for p in self.pools() {
            p.set_booked(booked);
        }
    }
}

fn host_text(host: &ServerHost) -> String {
    match host {
        ServerHost::Tcp(h) => h.clone(),
        ServerHost::Unix(p) => p.display().to_string(),
    }
}
