//! `Context`: the shared handles every task gets (config snapshot, pools, clients, shutdown).
//! Built once by `app`; passed down explicitly as `Arc<Context>`. Holds no logic beyond
//! swapping the config snapshot and reporting shutdown phases.

use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use dashmap::DashSet;
use std::sync::Arc;

use parking_lot::RwLock;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, ShutdownDrain};
use crate::error::Error;
use crate::pool::{PauseReasons, Pool, Pools};
use crate::server::Servers;
use crate::session::registry::Clients;
use crate::session::registry::KillReason;

/// PgBouncer's janitor period (a third of a second), for actions it takes on that pass.
const JANITOR_MS: u128 = 333;

/// Where the process is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    /// Serving.
    Running = 0,
    /// SIGTERM / SHUTDOWN WAIT_FOR_CLIENTS (PgBouncer's): no new clients; the connected ones are
    /// served until they leave by themselves.
    DrainClients = 1,
    /// The same with `shutdown_drain = transaction`: each client leaves after its transaction.
    /// After `DrainClients` so that SET/RELOAD can turn a waiting drain into this one.
    DrainTransactions = 2,
    /// SIGINT / SHUTDOWN WAIT_FOR_SERVERS: no new clients, queued ones fail, exit once servers are back.
    DrainServers = 3,
    /// Exiting now.
    Stopping = 4,
}

impl Phase {
    /// True in either SIGTERM drain (no new TCP clients; the connected ones go on).
    pub fn drains_clients(self) -> bool {
        matches!(self, Phase::DrainClients | Phase::DrainTransactions)
    }
}

/// Shared state of the running pooler.
pub struct Context {
    /// The config in force; replaced whole on reload. Read it with [`Context::config`].
    config: RwLock<Arc<Config>>,
    /// Bumped on every config swap, so listeners re-apply their socket options at once rather
    /// than after the next accept (whose handshake already ran with the old ones).
    config_gen: tokio::sync::watch::Sender<u64>,
    /// Every pool.
    pub pools: Arc<Pools>,
    /// Every connected client (for cancel, the console, max_client_conn).
    pub clients: Clients,
    /// Cancelled when the process must stop serving (after draining, or at once).
    pub shutdown: CancellationToken,
    /// Cancelled when draining starts: idle clients are closed, busy ones after their transaction.
    pub drain: CancellationToken,
    /// Tracks every spawned task so shutdown can wait for them.
    pub tasks: TaskTracker,
    /// Every live server connection (shared with the pools).
    pub servers: Arc<Servers>,
    /// Databases refused to new clients (DISABLE).
    pub disabled_dbs: DashSet<String>,
    /// SUSPEND: no connection is accepted and no client starts a transaction until RESUME.
    suspended: std::sync::atomic::AtomicBool,
    /// Woken by RESUME after SUSPEND.
    unsuspended: tokio::sync::Notify,
    /// Baselines of the current `stats_period` (the avg_* columns); rotated by `stats::run`.
    pub stats: crate::stats::StatsPeriod,
    /// Cancel forwarding to `[peers]` (SHOW PEER_POOLS).
    pub peer_pools: crate::session::cancel::PeerPools,
    /// The client-facing TLS config; re-read on every config swap (RELOAD, SIGHUP, SET).
    pub client_tls: crate::net::ClientTls,
    /// Patroni clusters (`[clusters]`) and their published topologies.
    pub clusters: Arc<crate::discovery::Clusters>,
    /// Protocol-level prepared statements shared by every client (max_prepared_statements).
    pub statements: crate::server::statements::StatementCache,
    /// Server host names and their addresses (dns_max_ttl, dns_nxdomain_ttl; SHOW DNS_HOSTS).
    pub dns: Arc<crate::server::dns::DnsCache>,
    /// Spare client read buffers, so requests do not malloc and free one each (bounded).
    pub read_bufs: crate::session::bufs::ReadBufs,
    phase: AtomicU8,
    /// Applies a `verbose` value to the running log filter (installed once by `main`, which owns
    /// the tracing subscriber); called on every config swap so SET verbose and RELOAD take effect.
    verbosity: std::sync::OnceLock<VerbosityHook>,
    /// The syslog(3) connection logging tees into (installed once by `main`); every config swap
    /// re-applies `syslog`, `syslog_ident` and `syslog_facility`.
    syslog: std::sync::OnceLock<Arc<crate::sys::Syslog>>,
}

/// See [`Context::set_verbosity_hook`].
pub type VerbosityHook = Box<dyn Fn(u32) + Send + Sync>;

impl Context {
    /// A context around a first config.
    pub fn new(config: Config) -> Arc<Context> {
        let tasks = TaskTracker::new();
        let dns = Arc::new(crate::server::dns::DnsCache::default());
        dns.configure(config.general.dns_max_ttl, config.general.dns_nxdomain_ttl);
        let pools = Arc::new(Pools::new(tasks.clone(), dns.clone()));
        let clients = Clients::default();
        clients
            .peer_id
            .store(config.general.peer_id, Ordering::Relaxed);
        let client_tls = crate::net::ClientTls::default();
        if let Err(e) = client_tls.reload(&config.general.security.client_tls) {
            tracing::error!("client TLS setup failed: {e}");
        }
        let shutdown = CancellationToken::new();
        let clusters = crate::discovery::Clusters::new(tasks.clone(), shutdown.clone());
        clusters.reconcile(&config);
        let clusters = Arc::new(clusters);
        pools.attach_clusters(clusters.clone(), shutdown.clone());
        pools.open_forced_user_pools(&config);
        Arc::new(Context {
            client_tls,
            config: RwLock::new(Arc::new(config)),
            config_gen: tokio::sync::watch::channel(0).0,
            servers: pools.servers.clone(),
            disabled_dbs: DashSet::new(),
            suspended: std::sync::atomic::AtomicBool::new(false),
            unsuspended: tokio::sync::Notify::new(),
            stats: crate::stats::StatsPeriod::default(),
            pools,
            clients,
            peer_pools: Default::default(),
            clusters,
            statements: Default::default(),
            dns,
            read_bufs: Default::default(),
            shutdown,
            drain: CancellationToken::new(),
            tasks,
            phase: AtomicU8::new(Phase::Running as u8),
            verbosity: std::sync::OnceLock::new(),
            syslog: std::sync::OnceLock::new(),
        })
    }

    /// The config snapshot in force.
    pub fn config(&self) -> Arc<Config> {
        self.config.read().clone()
    }

    /// Changes whenever a new config snapshot is installed.
    pub fn config_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.config_gen.subscribe()
    }

    /// Installs a new config snapshot and reconfigures the pools.
    pub fn replace_config(&self, config: Config) {
        let config = Arc::new(config);
        self.clients
            .peer_id
            .store(config.general.peer_id, Ordering::Relaxed);
        // New handshakes use the new files; live TLS connections keep theirs.
        if let Err(e) = self.client_tls.reload(&config.general.security.client_tls) {
            tracing::error!("client TLS settings could not be applied, keeping the old ones: {e}");
        }
        *self.config.write() = config.clone();
        self.config_gen.send_modify(|g| *g += 1);
        self.dns
            .configure(config.general.dns_max_ttl, config.general.dns_nxdomain_ttl);
        // Clusters first: a database of a cluster the reload adds finds it when its pools open.
        self.clusters.reconcile(&config);
        self.pools.reconfigure(&config);
        self.pools.open_forced_user_pools(&config);
        if let Some(hook) = self.verbosity.get() {
            hook(config.general.verbose);
        }
        if let Some(syslog) = self.syslog.get() {
            let g = &config.general;
            syslog.configure(g.syslog, &g.syslog_ident, &g.syslog_facility);
        }
        // An operator tired of waiting for clients to leave can have them closed at their
        // transaction end instead; the reverse cannot reopen what was closed, so it waits for
        // the next drain.
        if self.phase() == Phase::DrainClients
            && config.general.shutdown_drain == ShutdownDrain::Transaction
        {
            tracing::info!(
                "shutdown_drain changed to transaction, closing clients after their transactions"
            );
            self.enter(Phase::DrainTransactions);
        }
    }

    /// The SIGTERM drain the config asks for.
    fn client_drain(&self) -> Phase {
        match self.config().general.shutdown_drain {
            ShutdownDrain::Clients => Phase::DrainClients,
            ShutdownDrain::Transaction => Phase::DrainTransactions,
        }
    }

    /// Lets config swaps turn syslog on and off. Set once; a second call is ignored.
    pub fn set_syslog(&self, syslog: Arc<crate::sys::Syslog>) {
        let _ = self.syslog.set(syslog);
    }

    /// Lets config swaps change the log level: `hook` gets each new `verbose` value. Set once;
    /// a second call is ignored.
    pub fn set_verbosity_hook(&self, hook: VerbosityHook) {
        let _ = self.verbosity.set(hook);
    }

    /// Current phase.
    pub fn phase(&self) -> Phase {
        match self.phase.load(Ordering::Acquire) {
            0 => Phase::Running,
            1 => Phase::DrainClients,
            2 => Phase::DrainTransactions,
            3 => Phase::DrainServers,
            _ => Phase::Stopping,
        }
    }

    /// Moves to a later phase (never back).
    pub fn enter(&self, phase: Phase) {
        self.phase.fetch_max(phase as u8, Ordering::AcqRel);
        if phase != Phase::Running {
            self.drain.cancel();
        }
        if phase == Phase::DrainTransactions {
            // Idle clients go now, busy ones after their transaction. PgBouncer's SIGTERM and
            // SIGINT leave idle clients be (after SIGINT their next query gets `server shutting
            // down`).
            for c in self.clients.all() {
                c.drain();
            }
        }
        if phase == Phase::Stopping {
            self.shutdown.cancel();
            for c in self.clients.all() {
                c.kill(KillReason::Shutdown);
            }
        }
    }

    /// Whether SUSPEND is in force.
    pub fn is_suspended(&self) -> bool {
        self.suspended.load(Ordering::Acquire)
    }

    /// SUSPEND (true) or RESUME after it (false).
    pub fn set_suspended(&self, on: bool) {
        self.suspended.store(on, Ordering::Release);
        if !on {
            self.unsuspended.notify_waiters();
        }
    }

    /// Returns once SUSPEND is lifted (at once when it is not in force).
    pub async fn wait_unsuspended(&self) {
        loop {
            let woken = self.unsuspended.notified();
            tokio::pin!(woken);
            // Registered before the flag is read, so a RESUME in between is not missed.
            woken.as_mut().enable();
            if !self.is_suspended() {
                return;
            }
            woken.await;
        }
    }

    fn pools_of(&self, db: Option<&str>) -> Vec<Arc<Pool>> {
        match db {
            Some(db) => self.pools.of_db(db),
            None => self.pools.all(),
        }
    }

    /// PAUSE [db]: new checkouts wait; returns once the servers are back, then closes them.
    pub async fn pause_db(&self, db: Option<&str>) {
        self.pools.pause(db, PauseReasons::ADMIN);
        let pools = self.pools_of(db);
        loop {
            if pools.iter().all(|p| p.snapshot().active == 0) {
                break;
            }
            tokio::select! {
                _ = self.shutdown.cancelled() => break,
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
        }
        for p in &pools {
            p.close_idle();
        }
    }

    /// RESUME [db]: undoes PAUSE / KILL. A plain RESUME undoes a plain PAUSE only (`PAUSE db` /
    /// `KILL db` need `RESUME db`), and neither lifts a shutdown or a failover hold.
    pub fn resume_db(&self, db: Option<&str>) {
        self.pools.resume(db, PauseReasons::ADMIN);
    }

    /// True when PAUSE/KILL (or a shutdown) holds every database.
    pub fn paused_all(&self) -> bool {
        !self.pools.pauses().all().is_empty()
    }

    /// True when `PAUSE db` / `KILL db` holds `db` itself.
    pub fn db_paused(&self, db: &str) -> bool {
        !self.pools.pauses().of_db(db).is_empty()
    }

    /// KILL [db]: drops every client and server of db at once and leaves it paused.
    pub fn kill_db(&self, db: Option<&str>) {
        self.pools.pause(db, PauseReasons::ADMIN);
        for p in self.pools_of(db) {
            p.fail_waiters(|| Error::DatabaseRemoved);
            p.close_idle();
            p.reconnect();
        }
        for c in self.clients.all() {
            if c.is_admin.load(Ordering::Relaxed) {
                continue;
            }
            if db.is_none_or(|d| *c.db.lock() == d) {
                c.kill(KillReason::DatabaseRemoved);
            }
        }
    }

    /// Re-reads the config file; keeps the running one on any error. Returns whether it applied.
    pub fn reload(&self) -> bool {
        let old = self.config();
        match Config::load(&old.path) {
            Ok(mut new) => {
                new.warn_unimplemented();
                for key in crate::config::GENERAL_KEYS.iter().filter(|k| !k.reloadable) {
                    let was = old.raw_general.iter().find(|(k2, _)| k2 == key.name);
                    let now = new.raw_general.iter().find(|(k2, _)| k2 == key.name);
                    if was != now {
                        tracing::warn!(
                            "setting {} cannot be changed on reload; restart to apply",
                            key.name
                        );
                    }
                }
                // Keys that cannot change keep their running values.
                new.general.listen_addr = old.general.listen_addr.clone();
                new.general.listen_port = old.general.listen_port;
                new.general.unix_socket_dir = old.general.unix_socket_dir.clone();
                new.general.unix_socket_mode = old.general.unix_socket_mode;
                new.general.listen_backlog = old.general.listen_backlog;
                new.general.track_extra_parameters = old.general.track_extra_parameters.clone();
                new.general.pidfile = old.general.pidfile.clone();
                new.general.user = old.general.user.clone();
                new.general.so_reuseport = old.general.so_reuseport;
                new.general.unix_socket_group = old.general.unix_socket_group.clone();
                new.general.disable_pqexec = old.general.disable_pqexec;
                // SHOW CONFIG must show what is in force for the keys that did not change.
                for key in crate::config::GENERAL_KEYS.iter().filter(|k| !k.reloadable) {
                    new.raw_general.retain(|(k, _)| k != key.name);
                    if let Some(kv) = old.raw_general.iter().find(|(k, _)| k == key.name) {
                        new.raw_general.push(kv.clone());
                    }
                }
                self.replace_config(new);
                tracing::info!("configuration reloaded");
                true
            }
            Err(e) => {
                // PgBouncer's lines: each problem, then this warning; the running config stays.
                e.log();
                tracing::warn!("config file loading failed");
                false
            }
        }
    }

    /// Starts a drain (SIGTERM: clients, or their transactions as `shutdown_drain` says;
    /// SIGINT: servers) and the watcher that stops the process when it completes or
    /// shutdown_timeout passes.
    pub fn begin_drain(self: &Arc<Self>, phase: Phase) {
        let phase = match phase {
            Phase::DrainClients => self.client_drain(),
            other => other,
        };
        self.enter(phase);
        if phase == Phase::DrainServers {
            // PgBouncer's safe shutdown: PAUSE (running transactions finish, new ones wait),
            // and the process exits once the servers are back. Clients already queued for a
            // server are told by the watcher below, on its janitor tick, as PgBouncer does.
            self.pools.pause(None, PauseReasons::SHUTDOWN);
        }
        let ctx = self.clone();
        // Tracked like every task; it is what moves the process to Stopping.
        self.tasks.spawn(async move {
            let limit = ctx.config().general.shutdown_timeout;
            let started = tokio::time::Instant::now();
            let deadline = started + limit;
            let mut janitor_ticks = 0;
            loop {
                // PgBouncer closes a client queued for a server at its janitor's next pass
                // (every third of a second), not at the SHUTDOWN itself; a transaction still
                // running on its server gets its next statement through before that.
                let tick = (started.elapsed().as_millis() / JANITOR_MS) as u32;
                if ctx.phase() == Phase::DrainServers && tick > janitor_ticks {
                    janitor_ticks = tick;
                    for p in ctx.pools.all() {
                        p.fail_waiters(|| Error::ServerShuttingDown);
                    }
                }
                // Read each time: SET/RELOAD may turn a client drain into a transaction drain.
                let done = match ctx.phase() {
                    Phase::DrainServers => ctx.pools.all().iter().all(|p| p.snapshot().active == 0),
                    // PgBouncer counts every client object: console sessions and logins too.
                    Phase::DrainClients => ctx.clients.is_empty(),
                    // Clients still logging in count too: a drain takes in the TCP clients
                    // accepted before it (see `listener`), and they are not yet counted.
                    _ => {
                        ctx.clients.count.load(Ordering::Relaxed) == 0
                            && ctx.clients.logging_in_tcp() == 0
                    }
                };
                if done || (!limit.is_zero() && tokio::time::Instant::now() >= deadline) {
                    if !done {
                        tracing::warn!("shutdown_timeout reached, closing remaining clients");
                    }
                    ctx.enter(Phase::Stopping);
                    return;
                }
                tokio::select! {
                    _ = ctx.shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                }
            }
        });
    }
}
