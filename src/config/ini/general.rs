//! `[pgbouncer]`: turns one implemented key's text into the matching `General` field.
//!
//! Owns the per-key value rules (types, ranges, accepted spellings). It must not decide which keys
//! exist or are implemented (that is `keys.rs`) and does no I/O: file paths are kept as written.

use std::path::PathBuf;

use super::value::{self, boolean, c_uint, list, seconds};
use crate::config::{AuthType, General};

/// Smallest `max_packet_size` accepted: below this, ordinary startup packets and queries would be
/// refused. (PgBouncer's own floor is higher still; this only catches typos.)
const MIN_MAX_PACKET_SIZE: u64 = 1024;

/// Sets `key` (a lower-case name from `GENERAL_KEYS` marked implemented) from `value`.
/// The error is what was expected; the caller adds file, line and key.
pub(super) fn apply(g: &mut General, key: &str, value: &str) -> Result<(), String> {
    if let Some(r) = crate::config::security::apply(&mut g.security, key, value) {
        return r;
    }
    match key {
        "listen_addr" => g.listen_addr = list(value),
        "listen_port" => g.listen_port = listen_port(value)?,
        "unix_socket_dir" => g.unix_socket_dir = value.to_string(),
        "unix_socket_mode" => g.unix_socket_mode = socket_mode(value)?,
        "auth_type" => g.auth_type = auth_type(value)?,
        "auth_file" => g.auth_file = path(value),
        "pool_mode" => g.pool_mode = value::pool_mode(value)?,
        "max_client_conn" => g.max_client_conn = u32_value(value)?,
        "default_pool_size" => g.default_pool_size = u32_value(value)?,
        "min_pool_size" => g.min_pool_size = u32_value(value)?,
        "reserve_pool_size" => g.reserve_pool_size = u32_value(value)?,
        "reserve_pool_timeout" => g.reserve_pool_timeout = seconds(value)?,
        "max_db_connections" => g.max_db_connections = u32_value(value)?,
        "max_user_connections" => g.max_user_connections = u32_value(value)?,
        "server_round_robin" => g.server_round_robin = boolean(value)?,
        "ignore_startup_parameters" => {
            g.ignore_startup_parameters = list(&value.to_ascii_lowercase())
        }
        "track_extra_parameters" => g.track_extra_parameters = list(value),
        "server_reset_query" => g.server_reset_query = value.to_string(),
        "server_reset_query_always" => g.server_reset_query_always = boolean(value)?,
        "server_check_query" => g.server_check_query = value.to_string(),
        "server_check_delay" => g.server_check_delay = seconds(value)?,
        "server_lifetime" => g.server_lifetime = seconds(value)?,
        "server_idle_timeout" => g.server_idle_timeout = seconds(value)?,
        "server_connect_timeout" => g.server_connect_timeout = seconds(value)?,
        "server_login_retry" => g.server_login_retry = seconds(value)?,
        "client_login_timeout" => g.client_login_timeout = seconds(value)?,
        "query_timeout" => g.query_timeout = seconds(value)?,
        "query_wait_timeout" => g.query_wait_timeout = seconds(value)?,
        "client_idle_timeout" => g.client_idle_timeout = seconds(value)?,
        "idle_transaction_timeout" => g.idle_transaction_timeout = seconds(value)?,
        "max_packet_size" => g.max_packet_size = max_packet_size(value)?,
        "transaction_timeout" => g.transaction_timeout = seconds(value)?,
        "query_wait_notify" => g.query_wait_notify = seconds(value)?,
        "server_fast_close" => g.server_fast_close = boolean(value)?,
        "max_db_client_connections" => g.max_db_client_connections = u32_value(value)?,
        "max_user_client_connections" => g.max_user_client_connections = u32_value(value)?,
        "suspend_timeout" => g.suspend_timeout = seconds(value)?,
        "cancel_wait_timeout" => g.cancel_wait_timeout = seconds(value)?,
        "so_reuseport" => g.so_reuseport = boolean(value)?,
        "tcp_defer_accept" => g.tcp_defer_accept = u32_value(value)?,
        "tcp_socket_buffer" => g.tcp_socket_buffer = u32_value(value)?,
        "unix_socket_group" => g.unix_socket_group = non_empty(value),
        "syslog" => g.syslog = boolean(value)?,
        "syslog_ident" => g.syslog_ident = value.to_string(),
        "syslog_facility" => g.syslog_facility = syslog_facility(value)?,
        "listen_backlog" => g.listen_backlog = u32_value(value)?,
        "max_prepared_statements" => g.max_prepared_statements = prepared_cap(value)?,
        "tcp_keepalive" => g.tcp_keepalive = boolean(value)?,
        "tcp_keepcnt" => g.tcp_keepcnt = u32_value(value)?,
        "tcp_keepidle" => g.tcp_keepidle = u32_value(value)?,
        "tcp_keepintvl" => g.tcp_keepintvl = u32_value(value)?,
        "tcp_user_timeout" => g.tcp_user_timeout = u32_value(value)?,
        "admin_users" => g.admin_users = list(value),
        "stats_users" => g.stats_users = list(value),
        "application_name_add_host" => g.application_name_add_host = boolean(value)?,
        "logfile" => g.logfile = path(value),
        "pidfile" => g.pidfile = path(value),
        "log_connections" => g.log_connections = boolean(value)?,
        "log_disconnections" => g.log_disconnections = boolean(value)?,
        "log_pooler_errors" => g.log_pooler_errors = boolean(value)?,
        "log_stats" => g.log_stats = boolean(value)?,
        "stats_period" => g.stats_period = seconds(value)?,
        "verbose" => g.verbose = u32_value(value)?,
        "user" => g.user = non_empty(value),
        "shutdown_drain" => g.shutdown_drain = super::super::ShutdownDrain::parse(value)?,
        "shutdown_timeout" => g.shutdown_timeout = seconds(value)?,
        "http_listen_addr" => g.http_listen_addr = non_empty(value),
        "peer_id" => g.peer_id = peer_id(value)?,
        "http_listen_port" => {
            g.http_listen_port = match value {
                "" => None,
                v => Some(listen_port(v)?),
            }
        }
        "patroni_poll_interval" => g.patroni_poll_interval = positive_seconds(value)?,
        "patroni_timeout" => g.patroni_timeout = positive_seconds(value)?,
        "max_replica_lag" => g.max_replica_lag = c_uint(value, u64::MAX)?,
        "failover_hold_timeout" => g.failover_hold_timeout = seconds(value)?,
        "dns_max_ttl" => g.dns_max_ttl = seconds(value)?,
        "dns_nxdomain_ttl" => g.dns_nxdomain_ttl = seconds(value)?,
        "autodb_idle_timeout" => g.autodb_idle_timeout = seconds(value)?,
        "pool_idle_timeout" => g.pool_idle_timeout = seconds(value)?,
        "disable_pqexec" => g.disable_pqexec = boolean(value)?,
        "scram_iterations" => g.scram_iterations = scram_iterations(value)?,
        "login_notify_message" => g.login_notify_message = value.to_string(),
        "replica_fallback" => g.replica_fallback = super::super::ReplicaFallback::parse(value)?,
        _ => {
            return Err(format!(
                "internal error: {key} is marked implemented but has no parser"
            ))
        }
    }
    Ok(())
}

/// Seconds that must be above zero (a poll loop with no pause would spin), at least 10 ms.
fn positive_seconds(value: &str) -> Result<std::time::Duration, String> {
    let d = seconds(value)?;
    if d < std::time::Duration::from_millis(10) {
        return Err(format!(
            "must be at least 0.01 seconds, got \"{}\"",
            value::shown(value)
        ));
    }
    Ok(d)
}

/// At least 1 (PBKDF2 needs one round); PostgreSQL's own `scram_iterations` allows up to i32::MAX.
fn scram_iterations(value: &str) -> Result<u32, String> {
    match c_uint(value, i32::MAX as u64)? {
        0 => Err("expected an iteration count of at least 1, got \"0\"".to_string()),
        n => Ok(n as u32),
    }
}

fn u32_value(value: &str) -> Result<u32, String> {
    c_uint(value, u64::from(u32::MAX)).map(|n| n as u32)
}

/// PgBouncer reads it as a C int, so 2147483648 and above are refused (SET: `SET failed`),
/// not kept as a cap no server could reach.
fn prepared_cap(value: &str) -> Result<u32, String> {
    c_uint(value, i32::MAX as u64).map(|n| n as u32)
}

/// PgBouncer keeps the id in two bytes of the cancel key and caps it at 16383.
fn peer_id(value: &str) -> Result<u16, String> {
    c_uint(value, 16383).map(|n| n as u16)
}

fn listen_port(value: &str) -> Result<u16, String> {
    match c_uint(value, u64::from(u16::MAX))? {
        0 => Err("expected a port number from 1 to 65535, got \"0\"".to_string()),
        n => Ok(n as u16),
    }
}

/// Always octal, with or without the leading `0` (PgBouncer would read `777` as decimal, which
/// nobody means).
fn socket_mode(value: &str) -> Result<u32, String> {
    let digits = value.strip_prefix("0o").unwrap_or(value);
    if digits.is_empty() || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return Err(format!(
            "expected an octal file mode such as 0777, got \"{}\"",
            value::shown(value)
        ));
    }
    match u32::from_str_radix(digits, 8) {
        Ok(mode) if mode <= 0o7777 => Ok(mode),
        _ => Err(format!(
            "file mode \"{}\" is larger than 07777",
            value::shown(value)
        )),
    }
}

fn auth_type(value: &str) -> Result<AuthType, String> {
    match value.to_ascii_lowercase().as_str() {
        "any" => Ok(AuthType::Any),
        "trust" => Ok(AuthType::Trust),
        "plain" => Ok(AuthType::Plain),
        "md5" => Ok(AuthType::Md5),
        "scram-sha-256" => Ok(AuthType::ScramSha256),
        "peer" => Ok(AuthType::Peer),
        "cert" => Ok(AuthType::Cert),
        "hba" => Ok(AuthType::Hba),
        "ldap" => Ok(AuthType::Ldap),
        "pam" => Err(
            "auth_type pam is not supported (use any, trust, plain, md5, scram-sha-256, cert, hba, peer or ldap)"
                .to_string(),
        ),
        _ => Err(format!(
            "expected one of any, trust, plain, md5, scram-sha-256, cert, hba, peer, ldap, got \"{}\"",
            value::shown(value)
        )),
    }
}

/// The facility names PgBouncer accepts (`auth`, `authpriv`, `daemon`, `user`, `local0`..`local7`).
fn syslog_facility(value: &str) -> Result<String, String> {
    let lower = value.to_ascii_lowercase();
    let known = matches!(lower.as_str(), "auth" | "authpriv" | "daemon" | "user")
        || (lower.len() == 6
            && lower.starts_with("local")
            && (b'0'..=b'7').contains(&lower.as_bytes()[5]));
    if known {
        Ok(lower)
    } else {
        Err(format!(
            "expected auth, authpriv, daemon, user or local0..local7, got \"{}\"",
            value::shown(value)
        ))
    }
}

fn max_packet_size(value: &str) -> Result<u32, String> {
    let n = c_uint(value, u64::from(u32::MAX))?;
    if n < MIN_MAX_PACKET_SIZE {
        return Err(format!(
            "must be at least {MIN_MAX_PACKET_SIZE} bytes, got \"{}\"",
            value::shown(value)
        ));
    }
    Ok(n as u32)
}

/// An unset path is written as an empty value.
fn path(value: &str) -> Option<PathBuf> {
    non_empty(value).map(PathBuf::from)
}

fn non_empty(value: &str) -> Option<String> {
    (!value.is_empty()).then(|| value.to_string())
}
