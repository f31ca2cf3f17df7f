//! The table of every `[pgbouncer]` setting PgBouncer knows, with its default as PgBouncer's
//! `SHOW CONFIG` prints it, whether RELOAD may change it, and whether this pooler implements it.
//!
//! Owns only the static table and lookups into it. It must not parse values: `ini.rs` does that.
//! Source: PgBouncer 1.25.2 `main.c` (`bouncer_params`), plus the master/1.26 keys
//! `login_notify_message` and `pool_idle_timeout`, plus our own `shutdown_drain`,
//! `shutdown_timeout`, `http_listen_addr`, `http_listen_port` and the Patroni keys
//! (`patroni_poll_interval`, `patroni_timeout`, `max_replica_lag`, `failover_hold_timeout`).

/// One `[pgbouncer]` setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyInfo {
    /// The ini key (lower case).
    pub name: &'static str,
    /// PgBouncer's default as `SHOW CONFIG` prints it; `""` when unset.
    pub default: &'static str,
    /// `false` for the keys RELOAD cannot change (PgBouncer's `CF_NO_RELOAD`).
    pub reloadable: bool,
    /// `true` when `General` has a field for it; otherwise it is accepted and reported as a
    /// start-up warning through `Config::unimplemented_keys`.
    pub implemented: bool,
}

/// Shorthand for the table rows.
const fn key(
    name: &'static str,
    default: &'static str,
    reloadable: bool,
    implemented: bool,
) -> KeyInfo {
    KeyInfo {
        name,
        default,
        reloadable,
        implemented,
    }
}

const RELOAD: bool = true;
const NO_RELOAD: bool = false;
const IMPL: bool = true;
const UNIMPL: bool = false;

/// Every `[pgbouncer]` key, sorted by name (the order `SHOW CONFIG` uses).
pub static GENERAL_KEYS: &[KeyInfo] = &[
    key("admin_users", "", RELOAD, IMPL),
    key("application_name_add_host", "0", RELOAD, IMPL),
    key("auth_dbname", "", RELOAD, IMPL),
    key("auth_file", "", RELOAD, IMPL),
    key("auth_hba_file", "", RELOAD, IMPL),
    key("auth_ident_file", "", RELOAD, IMPL),
    key("auth_ldap_options", "", RELOAD, IMPL),
    key(
        "auth_query",
        "SELECT rolname, CASE WHEN rolvaliduntil < now() THEN NULL ELSE rolpassword END \
         FROM pg_authid WHERE rolname=$1 AND rolcanlogin",
        RELOAD,
        IMPL,
    ),
    key("auth_type", "md5", RELOAD, IMPL),
    key("auth_user", "", RELOAD, IMPL),
    key("autodb_idle_timeout", "3600", RELOAD, IMPL),
    key("cancel_wait_timeout", "10", RELOAD, IMPL),
    key("client_idle_timeout", "0", RELOAD, IMPL),
    key("client_login_timeout", "60", RELOAD, IMPL),
    key("client_tls13_ciphers", "", RELOAD, IMPL),
    key("client_tls_ca_file", "", RELOAD, IMPL),
    key("client_tls_cert_file", "", RELOAD, IMPL),
    key("client_tls_ciphers", "default", RELOAD, IMPL),
    key("client_tls_dheparams", "auto", RELOAD, UNIMPL),
    key("client_tls_ecdhcurve", "auto", RELOAD, IMPL),
    key("client_tls_key_file", "", RELOAD, IMPL),
    key("client_tls_protocols", "secure", RELOAD, IMPL),
    key("client_tls_sslmode", "disable", RELOAD, IMPL),
    key("conffile", "", RELOAD, IMPL),
    key("default_pool_size", "20", RELOAD, IMPL),
    key("disable_pqexec", "0", NO_RELOAD, IMPL),
    key("dns_max_ttl", "15", RELOAD, IMPL),
    key("dns_nxdomain_ttl", "15", RELOAD, IMPL),
    key("dns_zone_check_period", "0", RELOAD, UNIMPL),
    // Ours (Patroni): how long transactions wait for a new confirmed leader.
    key("failover_hold_timeout", "30", RELOAD, IMPL),
    // Ours: the HTTP endpoint for /metrics, /livez and /readyz; off while the port is unset.
    key("http_listen_addr", "", NO_RELOAD, IMPL),
    key("http_listen_port", "", NO_RELOAD, IMPL),
    key("idle_transaction_timeout", "0", RELOAD, IMPL),
    key("ignore_startup_parameters", "", RELOAD, IMPL),
    key("job_name", "pgbouncer", NO_RELOAD, UNIMPL),
    key("listen_addr", "", NO_RELOAD, IMPL),
    key("listen_backlog", "128", NO_RELOAD, IMPL),
    key("listen_port", "6432", NO_RELOAD, IMPL),
    key("log_connections", "1", RELOAD, IMPL),
    key("log_disconnections", "1", RELOAD, IMPL),
    key("log_pooler_errors", "1", RELOAD, IMPL),
    key("log_stats", "1", RELOAD, IMPL),
    key("logfile", "", RELOAD, IMPL),
    key("login_notify_message", "", RELOAD, IMPL),
    key("max_client_conn", "100", RELOAD, IMPL),
    key("max_db_client_connections", "0", RELOAD, IMPL),
    key("max_db_connections", "0", RELOAD, IMPL),
    key("max_packet_size", "2147483647", RELOAD, IMPL),
    key("max_prepared_statements", "200", RELOAD, IMPL),
    // Ours (Patroni): replica lag in bytes above which a replica takes no reads; 0 = no limit.
    key("max_replica_lag", "1048576", RELOAD, IMPL),
    key("max_user_client_connections", "0", RELOAD, IMPL),
    key("max_user_connections", "0", RELOAD, IMPL),
    key("min_pool_size", "0", RELOAD, IMPL),
    // Ours (Patroni): the `GET /cluster` poll interval and the bound on one request.
    key("patroni_poll_interval", "1", RELOAD, IMPL),
    key("patroni_timeout", "2", RELOAD, IMPL),
    key("peer_id", "0", RELOAD, IMPL),
    key("pidfile", "", NO_RELOAD, IMPL),
    key("pkt_buf", "4096", NO_RELOAD, UNIMPL),
    key("pool_idle_timeout", "0", RELOAD, IMPL),
    key("pool_mode", "session", RELOAD, IMPL),
    key("query_timeout", "0", RELOAD, IMPL),
    key("query_wait_notify", "5", RELOAD, IMPL),
    key("query_wait_timeout", "120", RELOAD, IMPL),
    // Ours (Patroni): where a role=replica database goes when no replica is usable.
    key("replica_fallback", "primary", RELOAD, IMPL),
    key("reserve_pool_size", "0", RELOAD, IMPL),
    key("reserve_pool_timeout", "5", RELOAD, IMPL),
    key("resolv_conf", "", NO_RELOAD, UNIMPL),
    key("sbuf_loopcnt", "5", RELOAD, UNIMPL),
    key("scram_iterations", "4096", RELOAD, IMPL),
    key("server_check_delay", "30", RELOAD, IMPL),
    key("server_check_query", "<empty>", RELOAD, IMPL),
    key("server_connect_timeout", "15", RELOAD, IMPL),
    key("server_fast_close", "0", RELOAD, IMPL),
    key("server_idle_timeout", "600", RELOAD, IMPL),
    key("server_lifetime", "3600", RELOAD, IMPL),
    key("server_login_retry", "15", RELOAD, IMPL),
    key("server_reset_query", "DISCARD ALL", RELOAD, IMPL),
    key("server_reset_query_always", "0", RELOAD, IMPL),
    key("server_round_robin", "0", RELOAD, IMPL),
    key("server_tls13_ciphers", "", RELOAD, IMPL),
    key("server_tls_ca_file", "", RELOAD, IMPL),
    key("server_tls_cert_file", "", RELOAD, IMPL),
    key("server_tls_ciphers", "default", RELOAD, IMPL),
    key("server_tls_key_file", "", RELOAD, IMPL),
    key("server_tls_protocols", "secure", RELOAD, IMPL),
    key("server_tls_sslmode", "prefer", RELOAD, IMPL),
    // Windows-only alias of job_name in PgBouncer; accepted so such files still load.
    key("service_name", "", NO_RELOAD, UNIMPL),
    // Ours: what SIGTERM waits for (PgBouncer's: every client to leave by itself).
    key("shutdown_drain", "clients", RELOAD, IMPL),
    // Ours: the longest SIGTERM waits; PgBouncer has no limit.
    key("shutdown_timeout", "0", RELOAD, IMPL),
    key("so_reuseport", "0", NO_RELOAD, IMPL),
    key("stats_period", "60", RELOAD, IMPL),
    key("stats_users", "", RELOAD, IMPL),
    // Zalando's PgBouncer fork; accepted so the operator's generated pgbouncer.ini loads.
    key("stats_users_prefix", "", RELOAD, UNIMPL),
    key("suspend_timeout", "10", RELOAD, IMPL),
    key("syslog", "0", RELOAD, IMPL),
    key("syslog_facility", "daemon", RELOAD, IMPL),
    key("syslog_ident", "pgbouncer", RELOAD, IMPL),
    key("tcp_defer_accept", "1", RELOAD, IMPL),
    key("tcp_keepalive", "1", RELOAD, IMPL),
    key("tcp_keepcnt", "0", RELOAD, IMPL),
    key("tcp_keepidle", "0", RELOAD, IMPL),
    key("tcp_keepintvl", "0", RELOAD, IMPL),
    key("tcp_socket_buffer", "0", RELOAD, IMPL),
    key("tcp_user_timeout", "0", RELOAD, IMPL),
    key("track_extra_parameters", "IntervalStyle", NO_RELOAD, IMPL),
    key("transaction_timeout", "0", RELOAD, IMPL),
    key("unix_socket_dir", "/tmp", NO_RELOAD, IMPL),
    key("unix_socket_group", "", NO_RELOAD, IMPL),
    key("unix_socket_mode", "0777", NO_RELOAD, IMPL),
    key("user", "", NO_RELOAD, IMPL),
    // PgBouncer's table has no default (NULL); the effective value is 0.
    key("verbose", "0", RELOAD, IMPL),
];

/// Keys that are parsed and validated (and shown by SHOW CONFIG) but that nothing uses yet.
/// Setting one is reported like an unimplemented key, so it is never silently without effect.
/// Empty since the pools follow Patroni (replica routing, the failover hold).
pub static NO_EFFECT_YET: &[&str] = &[];

/// The table row for `name` (exact, lower-case match), if PgBouncer knows the key.
pub fn find_key(name: &str) -> Option<&'static KeyInfo> {
    GENERAL_KEYS
        .binary_search_by(|k| k.name.cmp(name))
        .ok()
        .and_then(|i| GENERAL_KEYS.get(i))
}
