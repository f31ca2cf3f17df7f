//! The pool registry: one [`PoolSet`] per (database, server user) — one [`Pool`] per member
//! host — created on first use, reconfigured on reload, paused through the [`PauseBook`], and
//! kept tidy by a janitor task. Never sees a client.

mod attach;
pub mod cluster;
pub mod connector;
mod expiry;
mod hosts;
mod key;
pub mod pause;
#[allow(clippy::module_inception)]
mod pool;
pub mod set;
mod signal;
pub mod stats;
#[cfg(test)]
pub(crate) mod tests;

pub use connector::{Connector, PgConnector};
pub use key::{KeyRef, KeyView, PoolKey};
pub use pause::{PauseBook, PauseReasons};
pub use pool::{Lease, Pool, PoolLinks, PoolSnapshot, ReplicationSlot, Welcome};
pub use set::{Member, ParamSets, PoolSet, Role, Route, Serves, StatusBlock};
pub use signal::{Nudge, Nudging, PoolObserver, Signal};

use std::path::PathBuf;
use std::sync::atomic::AtomicU32;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use dashmap::DashMap;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, DatabaseConfig, PoolMode, Secret, ServerHost};
use crate::discovery::Clusters;
use crate::server::{ServerCredential, ServerTarget, Servers};
use cluster::ClusterRouter;

/// Everything a pool and its clients need from the config, resolved for one (db, user).
#[derive(Debug, Clone, PartialEq)]
pub struct PoolSettings {
    pub pool_mode: PoolMode,
    pub pool_size: u32,
    pub min_pool_size: u32,
    pub reserve_pool_size: u32,
    pub reserve_pool_timeout: Duration,
    pub max_db_connections: u32,
    pub max_user_connections: u32,
    pub server_lifetime: Duration,
    pub server_idle_timeout: Duration,
    pub server_check_delay: Duration,
    pub server_check_query: String,
    pub server_round_robin: bool,
    pub server_login_retry: Duration,
    pub server_reset_query: String,
    pub server_reset_query_always: bool,
    pub query_wait_timeout: Duration,
    pub query_timeout: Duration,
    pub idle_transaction_timeout: Duration,
    pub client_idle_timeout: Duration,
    /// transaction_timeout (user over global): longest a transaction may stay open.
    pub transaction_timeout: Duration,
    /// query_wait_notify: when a queued client is told it waits (0 = never).
    pub query_wait_notify: Duration,
    /// server_fast_close: session mode closes a close_needed server at transaction end.
    pub server_fast_close: bool,
    pub max_packet_size: u32,
    /// Named prepared statements are tracked (transaction/statement mode, limit > 0): the most
    /// a server may hold before it is closed at release.
    pub max_prepared_statements: u32,
    /// log_connections: log each new server connection.
    pub log_connections: bool,
    /// log_disconnections: log each server the pool closes, with the reason.
    pub log_disconnections: bool,
    /// The database forces its server user (`user=`): min_pool_size is kept even before any
    /// client came, as PgBouncer does.
    pub forced_user: bool,
    /// failover_hold_timeout: how long a cluster database's client waits for a member serving
    /// its role (a confirmed leader) before it gets an error; zero = query_wait_timeout only.
    pub failover_hold_timeout: Duration,
    /// disable_pqexec: a simple Query closes the client.
    pub disable_pqexec: bool,
}

impl PoolSettings {
    /// Resolves user > database > global precedence.
    pub fn resolve(cfg: &Config, db: &DatabaseConfig, user: &str) -> PoolSettings {
        let g = &cfg.general;
        let u = cfg.users.get(user);
        PoolSettings {
            pool_mode: cfg.pool_mode(db, user),
            pool_size: cfg.pool_size(db, user),
            min_pool_size: db.min_pool_size.unwrap_or(g.min_pool_size),
            reserve_pool_size: cfg.reserve_pool_size(db, user),
            reserve_pool_timeout: g.reserve_pool_timeout,
            max_db_connections: db.max_db_connections.unwrap_or(g.max_db_connections),
            max_user_connections: u
                .and_then(|u| u.max_user_connections)
                .unwrap_or(g.max_user_connections),
            server_lifetime: db.server_lifetime.unwrap_or(g.server_lifetime),
            server_idle_timeout: g.server_idle_timeout,
            server_check_delay: g.server_check_delay,
            server_check_query: g.server_check_query.clone(),
            server_round_robin: g.server_round_robin,
            server_login_retry: g.server_login_retry,
            server_reset_query: g.server_reset_query.clone(),
            server_reset_query_always: g.server_reset_query_always,
            query_wait_timeout: u
                .and_then(|u| u.query_wait_timeout)
                .or(db.query_wait_timeout)
                .unwrap_or(g.query_wait_timeout),
            query_timeout: u.and_then(|u| u.query_timeout).unwrap_or(g.query_timeout),
            idle_transaction_timeout: u
                .and_then(|u| u.idle_transaction_timeout)
                .unwrap_or(g.idle_transaction_timeout),
            client_idle_timeout: u
                .and_then(|u| u.client_idle_timeout)
                .unwrap_or(g.client_idle_timeout),
            transaction_timeout: u
                .and_then(|u| u.transaction_timeout)
                .unwrap_or(g.transaction_timeout),
            query_wait_notify: g.query_wait_notify,
            server_fast_close: g.server_fast_close,
            max_packet_size: g.max_packet_size,
            max_prepared_statements: g.max_prepared_statements,
            log_connections: g.log_connections,
            log_disconnections: g.log_disconnections,
            forced_user: db.user.is_some(),
            failover_hold_timeout: g.failover_hold_timeout,
            disable_pqexec: g.disable_pqexec,
        }
    }
}

/// The server user a client of `db` is logged in as on the server.
pub fn server_user<'a>(db: &'a DatabaseConfig, client_user: &'a str) -> &'a str {
    db.user.as_deref().unwrap_or(client_user)
}

/// Where a database's servers are and how to log in.
pub fn target_for(cfg: &Config, db: &DatabaseConfig, server_user: &str) -> ServerTarget {
    let host = db.host.clone().unwrap_or_else(|| {
        let dir = if cfg.general.unix_socket_dir.is_empty() {
            "/var/run/postgresql"
        } else {
            cfg.general.unix_socket_dir.as_str()
        };
        ServerHost::Unix(PathBuf::from(dir))
    });
    let mut startup_params = Vec::new();
    for (k, v) in [
        ("client_encoding", &db.client_encoding),
        ("datestyle", &db.datestyle),
        ("timezone", &db.timezone),
        ("application_name", &db.application_name),
    ] {
        if let Some(v) = v {
            startup_params.push((k.to_string(), v.clone()));
        }
    }
    ServerTarget {
        host,
        port: db.port,
        dbname: db.dbname.clone().unwrap_or_else(|| db.name.clone()),
        user: server_user.to_string(),
        startup_params,
        connect_query: db.connect_query.clone(),
        target_session_attrs: db.target_session_attrs,
        connect_timeout: cfg.general.server_connect_timeout,
        tcp: crate::net::TcpOptions::from_general(&cfg.general),
        tls: crate::net::ServerTls::build(&cfg.general.security.server_tls),
    }
}

/// What the pooler logs in to the server with: connstring password, else the auth_file secret.
pub fn credential_for(cfg: &Config, db: &DatabaseConfig, server_user: &str) -> ServerCredential {
    if let Some(p) = &db.password {
        return ServerCredential::Password(p.clone());
    }
    match cfg.userlist.get(server_user) {
        Some(s) => credential_of(s),
        None => ServerCredential::None,
    }
}

/// The server credential a stored secret gives (auth_file line or auth_query answer).
pub fn credential_of(secret: &Secret) -> ServerCredential {
    match secret {
        Secret::Plain(p) => ServerCredential::Password(p.clone()),
        Secret::Md5(s) => ServerCredential::Md5Secret(s.clone()),
        Secret::Scram(_) => ServerCredential::ScramSecretOnly,
    }
}

/// All pools.
pub struct Pools {
    /// Every pool set by key; read on each login, written when a set is first used.
    map: DashMap<PoolKey, Arc<PoolSet>>,
    /// Live server connections per database name (max_db_connections).
    db_conns: DashMap<String, Arc<AtomicU32>>,
    /// Live server connections per server user (max_user_connections).
    user_conns: DashMap<String, Arc<AtomicU32>>,
    /// Tracks every launch task.
    tasks: TaskTracker,
    /// Every live server connection.
    pub servers: Arc<Servers>,
    /// Console and shutdown pause reasons, per database and for all; the only copy.
    book: Arc<PauseBook>,
    /// How every pool makes server connections.
    connector: Arc<dyn Connector>,
    /// Pools tell the janitor here that clients wait on max_db/user_connections.
    cap_starved: Arc<tokio::sync::Notify>,
    /// The Patroni clusters and the shutdown token their routers stop on (set once at start).
    clusters: OnceLock<(Arc<Clusters>, CancellationToken)>,
    /// One router per cluster that has pool sets, by cluster name.
    routers: DashMap<String, Arc<ClusterRouter>>,
    /// Since when unused sets and auto-databases are unused (pool_idle_timeout,
    /// autodb_idle_timeout; see `expiry`).
    idle: expiry::IdleSince,
}

/// The pool's role for a database's `role=`.
pub fn pool_role(role: crate::config::Role) -> Role {
    match role {
        crate::config::Role::Primary => Role::Primary,
        crate::config::Role::Replica => Role::Replica,
        crate::config::Role::Sync => Role::Sync,
        crate::config::Role::Any => Role::Any,
    }
}

impl Pools {
    /// An empty registry whose launch tasks are tracked by `tasks`, connecting to PostgreSQL
    /// with host names resolved through `dns`.
    pub fn new(tasks: TaskTracker, dns: Arc<crate::server::dns::DnsCache>) -> Pools {
        Self::with_connector(tasks, Arc::new(PgConnector { dns }))
    }

    /// An empty registry whose pools make server connections with `connector`.
    pub fn with_connector(tasks: TaskTracker, connector: Arc<dyn Connector>) -> Pools {
        Pools {
            map: DashMap::new(),
            db_conns: DashMap::new(),
            user_conns: DashMap::new(),
            tasks,
            servers: Arc::new(Servers::default()),
            book: Arc::new(PauseBook::default()),
            connector,
            cap_starved: Default::default(),
            clusters: OnceLock::new(),
            routers: DashMap::new(),
            idle: Default::default(),
        }
    }

    /// The pool set for a client of `db` logging in as `client_user`, created on first use
    /// (paused for the reasons the book holds for `db`).
    pub fn get_or_create(
        &self,
        cfg: &Config,
        db: &DatabaseConfig,
        client_user: &str,
    ) -> Arc<PoolSet> {
        let user = server_user(db, client_user);
        let wanted = KeyRef { db: &db.name, user };
        if let Some(p) = self.map.get(&wanted as &dyn KeyView) {
            return p.clone();
        }
        let key = PoolKey {
            db: db.name.clone(),
            user: user.to_string(),
        };
        let db_conns = self.db_conns.entry(db.name.clone()).or_default().clone();
        let user_conns = self.user_conns.entry(user.to_string()).or_default().clone();
        let mut created = false;
        let set = self
            .map
            .entry(key.clone())
            .or_insert_with(|| {
                let settings = Arc::new(PoolSettings::resolve(cfg, db, user));
                let target = Arc::new(target_for(cfg, db, user));
                let credential = credential_for(cfg, db, user);
                created = true;
                let links = PoolLinks {
                    db_conns,
                    user_conns,
                    tasks: self.tasks.clone(),
                    servers: self.servers.clone(),
                    connector: self.connector.clone(),
                    cap_starved: self.cap_starved.clone(),
                };
                if db.cluster.is_some() {
                    // Members come from the topology only: never the template's host.
                    PoolSet::new(key, settings, target, credential, links, self.book.clone())
                } else {
                    match db.host_list() {
                        // host=a,b,...: one member per host (see `hosts`).
                        Some(hosts) => {
                            let set = PoolSet::host_list(
                                key,
                                settings,
                                target,
                                credential,
                                links,
                                self.book.clone(),
                            );
                            set.set_host_list(hosts, db.load_balance_hosts);
                            set
                        }
                        None => PoolSet::fixed(
                            key,
                            settings,
                            target,
                            credential,
                            links,
                            self.book.clone(),
                        ),
                    }
                }
            })
            .clone();
        if created {
            if let Some(name) = &db.cluster {
                match self.router(name, cfg) {
                    Some(r) => r.add_set(&set, pool_role(db.role.unwrap_or_default())),
                    None => tracing::warn!(
                        "database {}: cluster {name} is not known; its clients wait for it",
                        crate::logsafe::Clean(&db.name)
                    ),
                }
            }
        }
        // Again after insertion: a PAUSE that ran between the set's creation and its insertion
        // did not see it.
        set.set_booked(self.book.effective(&db.name));
        set
    }

    /// Connects the registry to the Patroni clusters (once, at start): the sets of `cluster=`
    /// databases get their members from the clusters' topologies.
    pub fn attach_clusters(&self, clusters: Arc<Clusters>, shutdown: CancellationToken) {
        let _ = self.clusters.set((clusters, shutdown));
    }

    /// The router of cluster `name`, created (and its loop started) on first use.
    fn router(&self, name: &str, cfg: &Config) -> Option<Arc<ClusterRouter>> {
        if let Some(r) = self.routers.get(name) {
            return Some(r.clone());
        }
        let (clusters, shutdown) = self.clusters.get()?;
        let cluster = clusters.get(name)?;
        let weak = Arc::downgrade(&cluster);
        let poke: cluster::Poke = Box::new(move || {
            if let Some(c) = weak.upgrade() {
                c.poke();
            }
        });
        let mut fresh = None;
        let router = self
            .routers
            .entry(name.to_string())
            .or_insert_with(|| {
                let r = ClusterRouter::new(
                    name,
                    cluster.subscribe(),
                    poke,
                    self.connector.clone(),
                    ClusterRouter::knobs_of(cfg),
                );
                fresh = Some(r.clone());
                r
            })
            .clone();
        if let Some(r) = fresh {
            self.tasks.spawn(r.run(shutdown.clone()));
        }
        Some(router)
    }

    /// Every cluster router, sorted by cluster name.
    pub fn routers(&self) -> Vec<Arc<ClusterRouter>> {
        let mut v: Vec<_> = self.routers.iter().map(|e| e.value().clone()).collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Creates the pools of databases with a forced user and a min_pool_size, so the janitor
    /// fills them before any client arrives (at start and after a reload).
    pub fn open_forced_user_pools(&self, cfg: &Config) {
        for db in cfg.databases.values() {
            let Some(user) = &db.user else { continue };
            if db.min_pool_size.unwrap_or(cfg.general.min_pool_size) > 0 {
                self.get_or_create(cfg, db, user);
            }
        }
    }

    /// Every pool set, sorted by key.
    pub fn sets(&self) -> Vec<Arc<PoolSet>> {
        let mut v: Vec<_> = self.map.iter().map(|e| e.value().clone()).collect();
        v.sort_by(|a, b| a.key.cmp(&b.key));
        v
    }

    /// Every pool (each member of each set), sorted by key (console order).
    pub fn all(&self) -> Vec<Arc<Pool>> {
        self.sets().iter().flat_map(|s| s.pools()).collect()
    }

    /// The console's and shutdown's pause reasons.
    pub fn pauses(&self) -> &PauseBook {
        &self.book
    }

    /// Holds checkouts of `db` (or of every database) for `reason`, in present and future pools.
    pub fn pause(&self, db: Option<&str>, reason: PauseReasons) {
        self.book.insert(db, reason);
        self.apply_book(db);
    }

    /// Lifts `reason` for `db` (or the every-database one). A pool resumes once no reason
    /// of any owner is left.
    pub fn resume(&self, db: Option<&str>, reason: PauseReasons) {
        self.book.remove(db, reason);
        self.apply_book(db);
    }

    fn apply_book(&self, db: Option<&str>) {
        for set in self.sets() {
            if db.is_none_or(|d| d == set.key.db) {
                set.set_booked(self.book.effective(&set.key.db));
            }
        }
    }

    /// Pools of one database.
    pub fn of_db(&self, db: &str) -> Vec<Arc<Pool>> {
        self.all().into_iter().filter(|p| p.key.db == db).collect()
    }

    /// Live server connections of a database.
    pub fn db_connections(&self, db: &str) -> u32 {
        self.db_conns
            .get(db)
            .map(|c| c.load(std::sync::atomic::Ordering::Relaxed))
            .unwrap_or(0)
    }

    /// Applies a reloaded config to every existing pool.
    pub fn reconfigure(&self, cfg: &Config) {
        // A removed cluster's router stops with its discovery task; forget it.
        self.routers
            .retain(|name, _| cfg.clusters.contains_key(name));
        for r in self.routers() {
            r.set_knobs(ClusterRouter::knobs_of(cfg));
        }
        for set in self.sets() {
            let Some(db) = cfg.database(&set.key.db) else {
                // Database removed: servers close at release, new logins are refused.
                for pool in set.pools() {
                    pool.reconnect();
                }
                continue;
            };
            let host_shape = set.is_fixed() == db.host_list().is_some() && db.cluster.is_none();
            if host_shape || set.is_discovered() != db.cluster.is_some() {
                // Between one host, a host list and a cluster: the set is rebuilt for new
                // clients; the old one's servers close as they are released.
                tracing::info!("{}: servers changed shape, rebuilding its pools", set.key);
                self.map.remove(&set.key);
                for pool in set.pools() {
                    pool.reconnect();
                }
                continue;
            }
            let role = db
                .cluster
                .as_ref()
                .map(|_| pool_role(db.role.unwrap_or_default()));
            if role.is_some() && self.routed_role(&set).is_some_and(|r| Some(r) != role) {
                // A connected client keeps the role it logged in for (its route asks for it),
                // so the set is rebuilt for new clients; the old one's servers close as they
                // are released.
                tracing::info!("{}: role changed, rebuilding its pools", set.key);
                self.map.remove(&set.key);
                for pool in set.pools() {
                    pool.reconnect();
                }
                continue;
            }
            // The client-side user is lost for forced-user pools; it does not matter there.
            let user = set.key.user.clone();
            set.reconfigure(
                Arc::new(PoolSettings::resolve(cfg, &db, &user)),
                Arc::new(target_for(cfg, &db, &user)),
                credential_for(cfg, &db, &user),
            );
            if let Some(hosts) = db.host_list() {
                set.set_host_list(hosts, db.load_balance_hosts);
            }
            if let (Some(cluster), Some(role)) = (&db.cluster, role) {
                self.reattach(&set, cluster, role, cfg);
            }
        }
    }

    /// Periodic upkeep of every pool until `shutdown`; about once a second, unused pools and
    /// auto-databases are freed under the settings `config` gives (the one in force).
    pub async fn run_janitor(
        self: Arc<Self>,
        shutdown: CancellationToken,
        config: Box<dyn Fn() -> Arc<Config> + Send>,
    ) {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut n = 0u32;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                // A client queued on a shared cap: evict for it now, as PgBouncer does when it
                // launches, rather than at the next tick.
                _ = self.cap_starved.notified() => self.evict_for_starved(&self.all()),
                _ = tick.tick() => {
                    self.janitor_step();
                    n = n.wrapping_add(1);
                    if n % 4 == 0 {
                        self.expire_unused(&config(), tokio::time::Instant::now());
                    }
                }
            }
        }
    }

    /// One janitor pass: make room for clients starved by max_db_connections or
    /// max_user_connections (`evict_for_starved`), then let every pool do its upkeep (which
    /// launches for the waiters).
    pub fn janitor_step(&self) {
        let pools = self.all();
        self.evict_for_starved(&pools);
        for pool in &pools {
            pool.maintain();
        }
    }

    /// For each pool whose clients wait only because max_db_connections or
    /// max_user_connections is used up, closes the longest-idle server among the sibling pools
    /// that share the cap (PgBouncer's evict_connection / evict_user_connection) and launches
    /// for the starved pool at once.
    pub fn evict_for_starved(&self, pools: &[Arc<Pool>]) {
        for pool in pools {
            for by_user in [false, true] {
                if !pool.starved_by_cap(by_user) {
                    continue;
                }
                let shares_cap = |p: &&Arc<Pool>| {
                    !Arc::ptr_eq(p, pool)
                        && if by_user {
                            p.key.user == pool.key.user
                        } else {
                            p.key.db == pool.key.db
                        }
                };
                let victim = pools
                    .iter()
                    .filter(shares_cap)
                    .filter_map(|p| p.oldest_idle().map(|at| (at, p)))
                    .min_by_key(|(at, _)| *at);
                if let Some((_, victim)) = victim {
                    if victim.evict_one_idle() {
                        // The freed place goes to the starved pool at once, as PgBouncer
                        // launches right after evicting: the sibling's own upkeep
                        // (min_pool_size) must not take it back first.
                        pool.maintain();
                    }
                }
            }
        }
    }
}
