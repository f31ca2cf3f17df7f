//! Prometheus metrics and the health endpoints, served over HTTP on `http_listen_addr:
//! http_listen_port` (off while the port is unset).
//!
//! Metric names are pgbouncer_exporter's, so dashboards and alerts built for PgBouncer keep
//! working; our own additions start with `ollyscale_pooler_`. Every value is read at scrape time
//! from the same views SHOW reads (`stats::view`), so the hot path records nothing extra.
//! `scrape.rs` maps views to metrics, `http.rs` serves them.

pub mod http;
mod patroni;
mod scrape;

pub use scrape::render;

/// Prefix of the metrics pgbouncer_exporter defines.
pub const EXPORTER_PREFIX: &str = "pgbouncer_";
/// Prefix of our own additions.
pub const OWN_PREFIX: &str = "ollyscale_pooler_";

// ---- scrape (pgbouncer_exporter)
pub const UP: &str = "pgbouncer_up";
pub const VERSION_INFO: &str = "pgbouncer_version_info";

// ---- SHOW STATS_TOTALS, label `database`
pub const STATS_QUERIES_POOLED: &str = "pgbouncer_stats_queries_pooled_total";
pub const STATS_QUERIES_DURATION: &str = "pgbouncer_stats_queries_duration_seconds_total";
pub const STATS_RECEIVED_BYTES: &str = "pgbouncer_stats_received_bytes_total";
pub const STATS_SENT_BYTES: &str = "pgbouncer_stats_sent_bytes_total";
pub const STATS_CLIENT_WAIT: &str = "pgbouncer_stats_client_wait_seconds_total";
pub const STATS_XACTS_POOLED: &str = "pgbouncer_stats_sql_transactions_pooled_total";
pub const STATS_IN_XACT: &str = "pgbouncer_stats_server_in_transaction_seconds_total";
pub const STATS_CLIENT_PARSES: &str = "pgbouncer_stats_client_parses_total";
pub const STATS_SERVER_PARSES: &str = "pgbouncer_stats_server_parses_total";
pub const STATS_BINDS: &str = "pgbouncer_stats_binds_total";

// ---- SHOW POOLS, labels `database`, `user`
pub const POOLS_CL_ACTIVE: &str = "pgbouncer_pools_client_active_connections";
pub const POOLS_CL_WAITING: &str = "pgbouncer_pools_client_waiting_connections";
pub const POOLS_CL_ACTIVE_CANCEL: &str = "pgbouncer_pools_client_active_cancel_connections";
pub const POOLS_CL_WAITING_CANCEL: &str = "pgbouncer_pools_client_waiting_cancel_connections";
pub const POOLS_SV_ACTIVE: &str = "pgbouncer_pools_server_active_connections";
pub const POOLS_SV_ACTIVE_CANCEL: &str = "pgbouncer_pools_server_active_cancel_connections";
pub const POOLS_SV_BEING_CANCELED: &str = "pgbouncer_pools_server_being_canceled_connections";
pub const POOLS_SV_IDLE: &str = "pgbouncer_pools_server_idle_connections";
pub const POOLS_SV_USED: &str = "pgbouncer_pools_server_used_connections";
pub const POOLS_SV_TESTED: &str = "pgbouncer_pools_server_testing_connections";
pub const POOLS_SV_LOGIN: &str = "pgbouncer_pools_server_login_connections";
pub const POOLS_MAXWAIT: &str = "pgbouncer_pools_client_maxwait_seconds";

// ---- SHOW DATABASES, labels `name`, `host`, `port`, `database`, `force_user`, `pool_mode`
pub const DB_POOL_SIZE: &str = "pgbouncer_databases_pool_size";
/// Named after the 1.18 column the exporter reads (`reserve_pool`).
pub const DB_RESERVE_POOL: &str = "pgbouncer_databases_reserve_pool";
pub const DB_MAX_CONNECTIONS: &str = "pgbouncer_databases_max_connections";
pub const DB_CURRENT_CONNECTIONS: &str = "pgbouncer_databases_current_connections";
pub const DB_PAUSED: &str = "pgbouncer_databases_paused";
pub const DB_DISABLED: &str = "pgbouncer_databases_disabled";

// ---- SHOW LISTS, no labels: (list row, metric)
pub const LISTS: &[(&str, &str)] = &[
    ("databases", "pgbouncer_databases"),
    ("users", "pgbouncer_users"),
    ("pools", "pgbouncer_pools"),
    ("free_clients", "pgbouncer_free_clients"),
    ("used_clients", "pgbouncer_used_clients"),
    ("login_clients", "pgbouncer_login_clients"),
    ("free_servers", "pgbouncer_free_servers"),
    ("used_servers", "pgbouncer_used_servers"),
    ("dns_names", "pgbouncer_cached_dns_names"),
    ("dns_zones", "pgbouncer_cached_dns_zones"),
    ("dns_queries", "pgbouncer_in_flight_dns_queries"),
];

// ---- SHOW CONFIG, no labels
pub const CONFIG_MAX_CLIENT_CONN: &str = "pgbouncer_config_max_client_connections";
pub const CONFIG_MAX_USER_CONN: &str = "pgbouncer_config_max_user_connections";

// ---- ours
/// Build info, label `version` (the crate version).
pub const OWN_INFO: &str = "ollyscale_pooler_info";
/// 1 while the pooler drains or stops (SIGTERM, SIGINT, SHUTDOWN), else 0.
pub const OWN_SHUTTING_DOWN: &str = "ollyscale_pooler_shutting_down";
/// 1 while a PAUSE without a database is in force.
pub const OWN_PAUSED: &str = "ollyscale_pooler_paused";
/// Server assignments per database (SHOW STATS `total_server_assignment_count`).
pub const OWN_SERVER_ASSIGNMENTS: &str = "ollyscale_pooler_stats_server_assignments_total";
/// Client logins per database (SHOW STATS `total_client_login_count`, PgBouncer 1.26; no
/// pgbouncer_exporter name exists for it yet).
pub const OWN_CLIENT_LOGINS: &str = "ollyscale_pooler_stats_client_logins_total";
/// Servers marked to close at release (RECONNECT, config change), labels `database`, `user`.
pub const OWN_SV_CLOSE_NEEDED: &str = "ollyscale_pooler_pools_server_close_needed_connections";
/// Clients connected to a database, labels as the databases family.
pub const OWN_DB_CLIENT_CONNECTIONS: &str = "ollyscale_pooler_databases_current_client_connections";

// ---- ours, Patroni clusters (SHOW CLUSTERS / MEMBERS); labels `cluster`, `member`, `role` only
/// 1 when the last poll of the cluster's Patroni API succeeded, label `cluster`.
pub const PATRONI_UP: &str = "ollyscale_pooler_patroni_up";
/// Members Patroni lists, label `cluster`.
pub const PATRONI_MEMBERS: &str = "ollyscale_pooler_patroni_members";
/// 1 when Patroni reports a leader, label `cluster`.
pub const PATRONI_HAS_LEADER: &str = "ollyscale_pooler_patroni_has_leader";
/// Failed polls since start, label `cluster`.
pub const PATRONI_POLL_ERRORS: &str = "ollyscale_pooler_patroni_poll_errors_total";
/// Failed polls since the last success, label `cluster`.
pub const PATRONI_CONSECUTIVE_ERRORS: &str = "ollyscale_pooler_patroni_consecutive_poll_errors";
/// Unix time of the last accepted answer, label `cluster` (absent until the first).
pub const PATRONI_LAST_SUCCESS: &str = "ollyscale_pooler_patroni_last_success_timestamp_seconds";
/// Leader changes seen since start, label `cluster`.
pub const PATRONI_LEADER_CHANGES: &str = "ollyscale_pooler_patroni_leader_changes_total";
/// 1 per member (`role` is Patroni's), labels `cluster`, `member`, `role`.
pub const PATRONI_MEMBER_INFO: &str = "ollyscale_pooler_patroni_member_info";
/// 1 when the member's PostgreSQL is running/streaming, labels `cluster`, `member`, `role`.
pub const PATRONI_MEMBER_RUNNING: &str = "ollyscale_pooler_patroni_member_running";
/// Replication lag in bytes as Patroni reports it (absent on the leader or when unknown).
pub const PATRONI_MEMBER_LAG: &str = "ollyscale_pooler_patroni_member_lag_bytes";
/// The member's timeline (absent when unknown).
pub const PATRONI_MEMBER_TIMELINE: &str = "ollyscale_pooler_patroni_member_timeline";
/// 1 while a failover hold is in progress (no confirmed leader), label `cluster`.
pub const PATRONI_HOLD: &str = "ollyscale_pooler_patroni_hold";
/// Clients waiting for a member serving their role, label `cluster`.
pub const PATRONI_HELD_CLIENTS: &str = "ollyscale_pooler_patroni_held_clients";
/// Failover holds since start, label `cluster`.
pub const PATRONI_HOLDS: &str = "ollyscale_pooler_patroni_holds_total";
/// Duration of the last finished hold in seconds, label `cluster` (absent before the first).
pub const PATRONI_LAST_HOLD: &str = "ollyscale_pooler_patroni_last_hold_seconds";
/// 1 for the member the pooler confirmed as leader, labels `cluster`, `member`, `role`.
pub const PATRONI_MEMBER_CONFIRMED: &str = "ollyscale_pooler_patroni_member_confirmed_leader";
/// 1 while the member is banned (its connections failed), labels `cluster`, `member`, `role`.
pub const PATRONI_MEMBER_BANNED: &str = "ollyscale_pooler_patroni_member_banned";
