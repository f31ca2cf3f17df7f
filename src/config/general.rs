//! The `[pgbouncer]` section's typed settings and their PgBouncer defaults (the one `impl Default`
//! that is the source of every global default).

use std::path::PathBuf;
use std::time::Duration;

use super::{AuthType, PoolMode, ReplicaFallback, Security};

/// The `[pgbouncer]` section. A zero `Duration` means "disabled" where PgBouncer uses 0 that way.
#[derive(Debug, Clone, PartialEq)]
pub struct General {
    pub listen_addr: Vec<String>,
    pub listen_port: u16,
    pub unix_socket_dir: String,
    pub unix_socket_mode: u32,
    pub auth_type: AuthType,
    pub auth_file: Option<PathBuf>,
    pub pool_mode: PoolMode,
    pub max_client_conn: u32,
    pub default_pool_size: u32,
    pub min_pool_size: u32,
    pub reserve_pool_size: u32,
    pub reserve_pool_timeout: Duration,
    pub max_db_connections: u32,
    pub max_user_connections: u32,
    pub server_round_robin: bool,
    /// Lower-cased names.
    pub ignore_startup_parameters: Vec<String>,
    /// As written (case preserved for display; compared case-insensitively).
    pub track_extra_parameters: Vec<String>,
    pub server_reset_query: String,
    pub server_reset_query_always: bool,
    pub server_check_query: String,
    pub server_check_delay: Duration,
    pub server_lifetime: Duration,
    pub server_idle_timeout: Duration,
    pub server_connect_timeout: Duration,
    pub server_login_retry: Duration,
    pub client_login_timeout: Duration,
    pub query_timeout: Duration,
    pub query_wait_timeout: Duration,
    pub client_idle_timeout: Duration,
    pub idle_transaction_timeout: Duration,
    /// `transaction_timeout`: longest a transaction may stay open (0 = off).
    pub transaction_timeout: Duration,
    /// `query_wait_notify`: a queued client gets a NOTICE after waiting this long (0 = never).
    pub query_wait_notify: Duration,
    /// `server_fast_close`: in session mode, close a server marked close_needed at the end of
    /// the transaction instead of at the end of the session.
    pub server_fast_close: bool,
    /// `max_db_client_connections` / `max_user_client_connections`: client caps (0 = none).
    pub max_db_client_connections: u32,
    pub max_user_client_connections: u32,
    /// `cancel_wait_timeout`: how long a forwarded cancel may wait for a slot (0 = no bound).
    pub cancel_wait_timeout: Duration,
    /// `suspend_timeout`: how long SUSPEND waits for clients to reach a transaction boundary.
    pub suspend_timeout: Duration,
    /// `so_reuseport`: bind the TCP listeners with SO_REUSEPORT (several processes, one port).
    pub so_reuseport: bool,
    /// `tcp_defer_accept`: TCP_DEFER_ACCEPT seconds on the listeners (0 = off).
    pub tcp_defer_accept: u32,
    /// `tcp_socket_buffer`: SO_SNDBUF/SO_RCVBUF in bytes for every TCP socket (0 = OS default).
    pub tcp_socket_buffer: u32,
    /// `unix_socket_group`: group that owns the Unix socket (`None` = unchanged).
    pub unix_socket_group: Option<String>,
    /// `syslog`, `syslog_ident`, `syslog_facility`: also log to syslog(3).
    pub syslog: bool,
    pub syslog_ident: String,
    pub syslog_facility: String,
    pub max_packet_size: u32,
    /// Protocol-level named statements tracked per server in transaction/statement mode; 0 = off.
    pub max_prepared_statements: u32,
    pub listen_backlog: u32,
    pub tcp_keepalive: bool,
    pub tcp_keepcnt: u32,
    pub tcp_keepidle: u32,
    pub tcp_keepintvl: u32,
    pub tcp_user_timeout: u32,
    pub admin_users: Vec<String>,
    pub stats_users: Vec<String>,
    pub application_name_add_host: bool,
    pub logfile: Option<PathBuf>,
    pub pidfile: Option<PathBuf>,
    pub log_connections: bool,
    pub log_disconnections: bool,
    pub log_pooler_errors: bool,
    pub log_stats: bool,
    pub stats_period: Duration,
    pub verbose: u32,
    pub user: Option<String>,
    /// `shutdown_drain` (ours): what SIGTERM / SHUTDOWN WAIT_FOR_CLIENTS waits for.
    pub shutdown_drain: ShutdownDrain,
    /// `shutdown_timeout` (ours): the longest a SIGTERM drain waits before it closes the clients
    /// left; zero waits as long as PgBouncer does (no limit).
    pub shutdown_timeout: Duration,
    /// `http_listen_addr` (ours): address of the /metrics, /livez, /readyz endpoint;
    /// `None` = 127.0.0.1, `*` = every address.
    pub http_listen_addr: Option<String>,
    /// `http_listen_port` (ours): the HTTP endpoint is off while this is `None`.
    pub http_listen_port: Option<u16>,
    /// `peer_id`: this process's id inside its cancel keys (0 = peering off; at most 16383).
    pub peer_id: u16,
    /// TLS on both sides, auth_query and HBA (config/security.rs).
    pub security: Security,
    /// `patroni_poll_interval` (ours): how often each cluster's `GET /cluster` runs (plus jitter).
    pub patroni_poll_interval: Duration,
    /// `patroni_timeout` (ours): bound on one Patroni request (connect, answer and body).
    pub patroni_timeout: Duration,
    /// `max_replica_lag` (ours): bytes of lag (as Patroni reports it) above which a replica
    /// takes no reads; 0 = no limit.
    pub max_replica_lag: u64,
    /// `failover_hold_timeout` (ours): how long transactions wait for a new confirmed leader.
    pub failover_hold_timeout: Duration,
    /// `replica_fallback` (ours): where a `role=replica` database goes when no replica is usable.
    pub replica_fallback: ReplicaFallback,
    /// `dns_max_ttl` / `dns_nxdomain_ttl`: how long a resolved host name / a failed lookup is
    /// reused before the name is looked up again (the record's own TTL is ignored, as in PgBouncer).
    pub dns_max_ttl: Duration,
    pub dns_nxdomain_ttl: Duration,
    /// `autodb_idle_timeout`: a database made from `*` with no client and no server for this
    /// long is dropped (0 = never).
    pub autodb_idle_timeout: Duration,
    /// `pool_idle_timeout` (PgBouncer 1.26): a pool with no client and no server for this long
    /// is freed (0 = never).
    pub pool_idle_timeout: Duration,
    /// `disable_pqexec`: the simple Query message closes the client (`PQexec disallowed`).
    pub disable_pqexec: bool,
    /// `scram_iterations`: PBKDF2 iterations when a SCRAM secret is derived from a plain password.
    pub scram_iterations: u32,
    /// `login_notify_message`: a NOTICE every client gets after login (empty = none).
    pub login_notify_message: String,
}

impl Default for General {
    fn default() -> Self {
        General {
            listen_addr: Vec::new(),
            listen_port: 6432,
            unix_socket_dir: "/tmp".to_string(),
            unix_socket_mode: 0o777,
            auth_type: AuthType::Md5,
            auth_file: None,
            pool_mode: PoolMode::Session,
            max_client_conn: 100,
            default_pool_size: 20,
            min_pool_size: 0,
            reserve_pool_size: 0,
            reserve_pool_timeout: Duration::from_secs(5),
            max_db_connections: 0,
            max_user_connections: 0,
            server_round_robin: false,
            ignore_startup_parameters: Vec::new(),
            track_extra_parameters: vec!["IntervalStyle".to_string()],
            server_reset_query: "DISCARD ALL".to_string(),
            server_reset_query_always: false,
            // PgBouncer's default: send an empty query. An empty string turns the check off.
            server_check_query: "<empty>".to_string(),
            server_check_delay: Duration::from_secs(30),
            server_lifetime: Duration::from_secs(3600),
            server_idle_timeout: Duration::from_secs(600),
            server_connect_timeout: Duration::from_secs(15),
            server_login_retry: Duration::from_secs(15),
            client_login_timeout: Duration::from_secs(60),
            query_timeout: Duration::ZERO,
            query_wait_timeout: Duration::from_secs(120),
            client_idle_timeout: Duration::ZERO,
            idle_transaction_timeout: Duration::ZERO,
            transaction_timeout: Duration::ZERO,
            query_wait_notify: Duration::from_secs(5),
            server_fast_close: false,
            max_db_client_connections: 0,
            max_user_client_connections: 0,
            cancel_wait_timeout: Duration::from_secs(10),
            suspend_timeout: Duration::from_secs(10),
            so_reuseport: false,
            // PgBouncer's default on Linux.
            tcp_defer_accept: 1,
            tcp_socket_buffer: 0,
            unix_socket_group: None,
            syslog: false,
            syslog_ident: "pgbouncer".to_string(),
            syslog_facility: "daemon".to_string(),
            max_packet_size: 2147483647,
            max_prepared_statements: 200,
            listen_backlog: 128,
            tcp_keepalive: true,
            tcp_keepcnt: 0,
            tcp_keepidle: 0,
            tcp_keepintvl: 0,
            tcp_user_timeout: 0,
            admin_users: Vec::new(),
            stats_users: Vec::new(),
            application_name_add_host: false,
            logfile: None,
            pidfile: None,
            log_connections: true,
            log_disconnections: true,
            log_pooler_errors: true,
            log_stats: true,
            stats_period: Duration::from_secs(60),
            verbose: 0,
            user: None,
            shutdown_drain: ShutdownDrain::Clients,
            shutdown_timeout: Duration::ZERO,
            http_listen_addr: None,
            http_listen_port: None,
            peer_id: 0,
            security: Security::default(),
            patroni_poll_interval: Duration::from_secs(1),
            patroni_timeout: Duration::from_secs(2),
            max_replica_lag: 1024 * 1024,
            failover_hold_timeout: Duration::from_secs(30),
            replica_fallback: ReplicaFallback::Primary,
            dns_max_ttl: Duration::from_secs(15),
            dns_nxdomain_ttl: Duration::from_secs(15),
            autodb_idle_timeout: Duration::from_secs(3600),
            pool_idle_timeout: Duration::ZERO,
            disable_pqexec: false,
            scram_iterations: 4096,
            login_notify_message: String::new(),
        }
    }
}

/// What SIGTERM and `SHUTDOWN WAIT_FOR_CLIENTS` wait for before the process exits
/// (`shutdown_drain`). Either way the listeners stop taking TCP connections at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ShutdownDrain {
    /// PgBouncer's "super safe shutdown": every connected client, idle or not, is served until it
    /// disconnects by itself (console sessions count too, as in PgBouncer).
    #[default]
    Clients,
    /// Ours, for Kubernetes rolling restarts: an idle client is closed once quiet, a busy one
    /// right after its transaction, so a pod leaves within its grace period.
    Transaction,
}

impl ShutdownDrain {
    /// The ini spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ShutdownDrain::Clients => "clients",
            ShutdownDrain::Transaction => "transaction",
        }
    }

    /// Parses `clients|transaction` (any case). The error says what was expected.
    pub fn parse(value: &str) -> Result<ShutdownDrain, String> {
        match value.to_ascii_lowercase().as_str() {
            "clients" => Ok(ShutdownDrain::Clients),
            "transaction" => Ok(ShutdownDrain::Transaction),
            _ => Err(format!(
                "expected clients or transaction, got \"{}\"",
                super::ini::shown(value)
            )),
        }
    }
}
