//! Read-only views of the registries, computed on demand: the rows behind SHOW POOLS /
//! DATABASES / STATS / LISTS and the /metrics families built from them. Having one function per
//! view is what makes the console and Prometheus show the same numbers.
//!
//! Must not change anything, hold a lock across `.await` (there is none here), or cache: every
//! call reads the live counters.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;

use crate::config::{Config, ServerHost};
use crate::context::Context;
use crate::pool::stats::StatsSnapshot;
use crate::pool::PoolKey;
use crate::server::ServerState;
use crate::session::registry::{now_us, ClientState};

use super::Averages;

/// The console's virtual database, and the user its fake pool is forced to.
pub const ADMIN_DB: &str = "pgbouncer";
/// PgBouncer's admin pool: pool_size 2, statement mode, forced user `pgbouncer`.
const ADMIN_POOL_SIZE: u32 = 2;

/// One SHOW POOLS row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolRow {
    pub database: String,
    pub user: String,
    /// Logged-in clients of the pool that are not queued (linked or idle), as PgBouncer counts.
    pub cl_active: u32,
    pub cl_waiting: u32,
    pub sv_active: u32,
    pub sv_idle: u32,
    pub sv_used: u32,
    pub sv_tested: u32,
    /// Back from a client, waiting for forwarded cancels to close.
    pub sv_being_canceled: u32,
    pub sv_login: u32,
    /// Servers marked to close at release (ours; not a PgBouncer column).
    pub sv_close_needed: u32,
    /// Age of the oldest queued client, µs.
    pub maxwait_us: u64,
    pub pool_mode: &'static str,
    pub paused: bool,
    /// `round-robin` / `disable` for a host list, else `None` (NULL).
    pub load_balance_hosts: Option<&'static str>,
}

/// Client counts per (database, pool user).
#[derive(Default, Clone, Copy)]
struct ClientCounts {
    active: u32,
    waiting: u32,
}

/// The pool a logged-in client belongs to: (database, server user).
fn client_pool(cfg: &Config, db: &str, user: &str, admin: bool) -> (String, String) {
    if admin {
        return (ADMIN_DB.to_string(), ADMIN_DB.to_string());
    }
    let pool_user = cfg
        .database(db)
        .and_then(|d| d.user)
        .unwrap_or_else(|| user.to_string());
    (db.to_string(), pool_user)
}

fn client_counts(ctx: &Context, cfg: &Config) -> HashMap<(String, String), ClientCounts> {
    let mut out: HashMap<(String, String), ClientCounts> = HashMap::new();
    for c in ctx.clients.all() {
        let state = c.state();
        if state == ClientState::Login {
            continue;
        }
        let admin = c.is_admin.load(Ordering::Relaxed);
        let key = client_pool(cfg, &c.db.lock(), &c.user.lock(), admin);
        let e = out.entry(key).or_default();
        match state {
            ClientState::Waiting => e.waiting += 1,
            _ => e.active += 1,
        }
    }
    out
}

/// Every pool, plus the console's own, sorted by (database, user).
pub fn pools(ctx: &Context) -> Vec<PoolRow> {
    let cfg = ctx.config();
    let counts = client_counts(ctx, &cfg);
    let servers = ctx.servers.all();
    let mut rows = Vec::new();
    // One row per (database, user), summing the set's member pools: tools such as
    // pgbouncer_exporter key rows by (database, user), so a Patroni database with several
    // members must not repeat its row.
    for set in ctx.pools.sets() {
        let mut snap = crate::pool::PoolSnapshot::default();
        for p in set.pools() {
            let m = p.snapshot();
            snap.idle += m.idle;
            snap.used += m.used;
            snap.active += m.active;
            snap.login += m.login;
            snap.waiting += m.waiting;
            snap.maxwait_us = snap.maxwait_us.max(m.maxwait_us);
            snap.paused |= m.paused;
        }
        let key = (set.key.db.clone(), set.key.user.clone());
        let load_balance_hosts = set.load_balance_hosts().map(|lb| lb.as_str());
        let c = counts.get(&key).copied().unwrap_or_default();
        // One pass over the pool's servers for the three counts the registry holds.
        let (mut tested, mut being_canceled, mut close_needed) = (0u32, 0u32, 0u32);
        for s in servers
            .iter()
            .filter(|s| s.db == set.key.db && s.user == set.key.user)
        {
            match s.state() {
                ServerState::Tested => tested += 1,
                ServerState::BeingCanceled => being_canceled += 1,
                _ => {}
            }
            close_needed += u32::from(s.close_needed());
        }
        rows.push(PoolRow {
            database: key.0,
            user: key.1,
            cl_active: c.active,
            cl_waiting: c.waiting,
            // Servers running a check or reset are handed out by the pool, but are not a client's.
            // ... nor are servers held back for their last client's cancels.
            sv_active: snap.active.saturating_sub(tested + being_canceled),
            sv_idle: snap.idle,
            sv_used: snap.used,
            sv_tested: tested,
            sv_being_canceled: being_canceled,
            sv_login: snap.login,
            sv_close_needed: close_needed,
            maxwait_us: snap.maxwait_us,
            pool_mode: set.settings().pool_mode.as_str(),
            paused: snap.paused,
            load_balance_hosts,
        });
    }
    let admin = counts
        .get(&(ADMIN_DB.to_string(), ADMIN_DB.to_string()))
        .copied()
        .unwrap_or_default();
    rows.push(PoolRow {
        database: ADMIN_DB.into(),
        user: ADMIN_DB.into(),
        cl_active: admin.active,
        cl_waiting: 0,
        sv_active: 0,
        sv_idle: 0,
        sv_used: 0,
        sv_tested: 0,
        sv_being_canceled: 0,
        sv_login: 0,
        sv_close_needed: 0,
        maxwait_us: 0,
        pool_mode: "statement",
        paused: false,
        load_balance_hosts: None,
    });
    rows.sort_by(|a, b| (&a.database, &a.user).cmp(&(&b.database, &b.user)));
    rows
}

/// One SHOW DATABASES row (NULL columns are `None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseRow {
    pub name: String,
    pub host: Option<String>,
    pub port: u16,
    pub database: String,
    pub force_user: Option<String>,
    pub pool_size: u32,
    pub min_pool_size: u32,
    pub reserve_pool_size: u32,
    pub server_lifetime_s: u64,
    /// `None` when inherited from the global pool_mode.
    pub pool_mode: Option<&'static str>,
    pub max_connections: u32,
    pub current_connections: u32,
    pub max_client_connections: u32,
    pub current_client_connections: u32,
    /// `round-robin` / `disable` for a host list, else `None` (NULL).
    pub load_balance_hosts: Option<&'static str>,
    pub paused: bool,
    pub disabled: bool,
}

/// Every configured database, every database created through the `*` fallback, and the
/// console's, sorted by name.
pub fn databases(ctx: &Context) -> Vec<DatabaseRow> {
    let cfg = ctx.config();
    let g = &cfg.general;
    let mut names: Vec<String> = cfg.databases.keys().cloned().collect();
    for p in ctx.pools.all() {
        if !names.contains(&p.key.db) {
            names.push(p.key.db.clone());
        }
    }
    let mut clients: HashMap<String, u32> = HashMap::new();
    for c in ctx.clients.all() {
        if c.state() == ClientState::Login {
            continue;
        }
        let db = if c.is_admin.load(Ordering::Relaxed) {
            ADMIN_DB.to_string()
        } else {
            c.db.lock().clone()
        };
        *clients.entry(db).or_default() += 1;
    }
    let mut rows: Vec<DatabaseRow> = names
        .iter()
        .filter_map(|name| cfg.database(name))
        .map(|db| DatabaseRow {
            host: match db.host_list() {
                // As written: `a,b,c`.
                Some(list) => Some(
                    list.iter()
                        .map(|(h, _)| host_text(h))
                        .collect::<Vec<_>>()
                        .join(","),
                ),
                None => db.host.as_ref().map(host_text),
            },
            load_balance_hosts: db.host_list().map(|_| db.load_balance_hosts.as_str()),
            port: db.port,
            database: db.dbname.clone().unwrap_or_else(|| db.name.clone()),
            force_user: db.user.clone(),
            pool_size: db.pool_size.unwrap_or(g.default_pool_size),
            min_pool_size: db.min_pool_size.unwrap_or(g.min_pool_size),
            reserve_pool_size: db.reserve_pool_size.unwrap_or(g.reserve_pool_size),
            server_lifetime_s: db.server_lifetime.unwrap_or(g.server_lifetime).as_secs(),
            pool_mode: db.pool_mode.map(|m| m.as_str()),
            max_connections: db.max_db_connections.unwrap_or(g.max_db_connections),
            current_connections: ctx.pools.db_connections(&db.name),
            max_client_connections: cfg.max_db_client_connections(&db),
            current_client_connections: clients.get(&db.name).copied().unwrap_or(0),
            paused: ctx.db_paused(&db.name),
            disabled: ctx.disabled_dbs.contains(&db.name),
            name: db.name,
        })
        .collect();
    rows.push(DatabaseRow {
        name: ADMIN_DB.into(),
        host: None,
        port: g.listen_port,
        database: ADMIN_DB.into(),
        force_user: Some(ADMIN_DB.into()),
        pool_size: ADMIN_POOL_SIZE,
        min_pool_size: 0,
        reserve_pool_size: 0,
        server_lifetime_s: g.server_lifetime.as_secs(),
        pool_mode: Some("statement"),
        max_connections: g.max_db_connections,
        current_connections: 0,
        max_client_connections: g.max_db_client_connections,
        current_client_connections: clients.get(ADMIN_DB).copied().unwrap_or(0),
        load_balance_hosts: None,
        paused: false,
        disabled: false,
    });
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    rows
}

fn host_text(h: &ServerHost) -> String {
    match h {
        ServerHost::Tcp(h) => h.clone(),
        ServerHost::Unix(p) => p.display().to_string(),
    }
}

/// One SHOW USERS row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRow {
    pub name: String,
    pub pool_size: Option<u32>,
    pub reserve_pool_size: Option<u32>,
    pub pool_mode: Option<&'static str>,
    pub max_user_connections: u32,
    /// Server connections logged in as this user.
    pub current_connections: u32,
    pub max_user_client_connections: u32,
    /// Clients logged in as this user.
    pub current_client_connections: u32,
}

/// Users of auth_file and `[users]`, sorted by name.
pub fn users(ctx: &Context) -> Vec<UserRow> {
    let cfg = ctx.config();
    let mut names: Vec<String> = cfg.userlist.iter().map(|(n, _)| n.to_string()).collect();
    names.extend(cfg.users.keys().cloned());
    // The console's forced user, which PgBouncer lists too.
    names.push(ADMIN_DB.to_string());
    names.sort();
    names.dedup();
    let mut servers: HashMap<String, u32> = HashMap::new();
    for p in ctx.pools.all() {
        *servers.entry(p.key.user.clone()).or_default() += p.total();
    }
    let mut clients: HashMap<String, u32> = HashMap::new();
    for c in ctx.clients.all() {
        if c.state() != ClientState::Login {
            *clients.entry(c.user.lock().clone()).or_default() += 1;
        }
    }
    names
        .into_iter()
        .map(|name| {
            let u = cfg.users.get(&name);
            UserRow {
                pool_size: u.and_then(|u| u.pool_size),
                reserve_pool_size: u.and_then(|u| u.reserve_pool_size),
                pool_mode: u.and_then(|u| u.pool_mode).map(|m| m.as_str()),
                max_user_connections: u
                    .and_then(|u| u.max_user_connections)
                    .unwrap_or(cfg.general.max_user_connections),
                current_connections: servers.get(&name).copied().unwrap_or(0),
                max_user_client_connections: cfg.max_user_client_connections(&name),
                current_client_connections: clients.get(&name).copied().unwrap_or(0),
                name,
            }
        })
        .collect()
}

/// SHOW DNS_HOSTS: the server host names the DNS cache holds.
pub fn dns_hosts(ctx: &Context) -> Vec<crate::server::dns::HostRow> {
    ctx.dns.hosts()
}

/// SHOW LISTS, in PgBouncer's row order. We keep no free lists and poll no DNS zones, so those
/// counts are truly zero.
pub fn lists(ctx: &Context) -> Vec<(&'static str, u64)> {
    let (dns_names, dns_queries, dns_pending) = ctx.dns.counts();
    let clients = ctx.clients.all();
    let login = clients
        .iter()
        .filter(|c| c.state() == ClientState::Login)
        .count() as u64;
    let pools = ctx.pools.all();
    let logging_in: u64 = pools.iter().map(|p| u64::from(p.snapshot().login)).sum();
    vec![
        ("databases", databases(ctx).len() as u64),
        ("users", users(ctx).len() as u64),
        ("peers", ctx.config().peers.len() as u64),
        ("pools", pools.len() as u64 + 1),
        ("peer_pools", ctx.peer_pools.len() as u64),
        ("free_clients", 0),
        ("used_clients", clients.len() as u64),
        ("login_clients", login),
        ("free_servers", 0),
        ("used_servers", ctx.servers.len() as u64 + logging_in),
        ("dns_names", dns_names),
        ("dns_zones", 0),
        ("dns_queries", dns_queries),
        ("dns_pending", dns_pending),
    ]
}

/// Counters of one database, summed over its pools, with the averages of the current period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbStats {
    pub database: String,
    pub totals: StatsSnapshot,
    pub averages: Averages,
}

/// The key the console's virtual pool has in the stats baselines.
pub fn console_pool() -> PoolKey {
    PoolKey {
        db: ADMIN_DB.to_string(),
        user: ADMIN_DB.to_string(),
    }
}

/// SHOW STATS rows: one per database that has pools, plus the console's.
pub fn stats_per_database(ctx: &Context) -> Vec<DbStats> {
    let mut by_db: BTreeMap<String, (StatsSnapshot, StatsSnapshot)> = BTreeMap::new();
    by_db.insert(
        ADMIN_DB.to_string(),
        (
            ctx.stats.console.snapshot(),
            ctx.stats.baseline(&console_pool()).0,
        ),
    );
    for pool in ctx.pools.all() {
        let (old, _) = ctx.stats.baseline(&pool.key);
        let e = by_db.entry(pool.key.db.clone()).or_default();
        e.0.add(&pool.stats.snapshot());
        e.1.add(&old);
    }
    let elapsed = ctx.stats.elapsed_us();
    by_db
        .into_iter()
        .map(|(database, (cur, old))| DbStats {
            database,
            averages: Averages::between(&cur, &old, elapsed),
            totals: cur,
        })
        .collect()
}

/// Everything summed (SHOW TOTALS and the periodic `stats:` log line).
pub fn stats_overall(ctx: &Context) -> (StatsSnapshot, Averages) {
    let mut cur = ctx.stats.console.snapshot();
    let mut old = ctx.stats.baseline(&console_pool()).0;
    for pool in ctx.pools.all() {
        cur.add(&pool.stats.snapshot());
        old.add(&ctx.stats.baseline(&pool.key).0);
    }
    let avg = Averages::between(&cur, &old, ctx.stats.elapsed_us());
    (cur, avg)
}

/// µs a waiting client has been queued (0 when not waiting).
pub fn client_wait_us(wait_start_us: u64) -> u64 {
    if wait_start_us == 0 {
        0
    } else {
        now_us().saturating_sub(wait_start_us)
    }
}
