//! `[databases]` connection strings, `[users]` settings and `[clusters]` entries:
//! `key=value key='quoted value' ...`.
//!
//! Owns the libpq-style tokenizer and the meaning of each per-database and per-user key. It must
//! not look at `[pgbouncer]` settings (precedence is `Config`'s job) and must never repeat a
//! `password=` value, or any text of a broken connection string, in a message.

use super::value::{self, dec_u32, pool_mode, seconds};
use crate::config::{
    ClusterConfig, DatabaseConfig, LoadBalanceHosts, PatroniUrl, Role, ServerHost,
    TargetSessionAttrs, UserConfig,
};

/// The result of one entry: the value when it had no errors, every error, and the keys that were
/// accepted but are not implemented.
pub(super) struct Outcome<T> {
    pub(super) value: Option<T>,
    pub(super) errors: Vec<String>,
    pub(super) unimplemented: Vec<String>,
}

impl<T> Outcome<T> {
    fn new() -> Self {
        Outcome {
            value: None,
            errors: Vec::new(),
            unimplemented: Vec::new(),
        }
    }

    fn finish(mut self, value: T) -> Self {
        if self.errors.is_empty() {
            self.value = Some(value);
        }
        self
    }
}

/// Connection-string keys PgBouncer accepts that we do not implement yet.
const DB_UNIMPLEMENTED: &[&str] = &[];

/// `[users]` keys PgBouncer accepts that we do not implement yet.
const USER_UNIMPLEMENTED: &[&str] = &[];

/// Parses the connection string of `[databases] name = ...`. `name` may be `*`.
pub(super) fn parse_database(name: &str, connstr: &str) -> Outcome<DatabaseConfig> {
    let mut out = Outcome::new();
    let mut db = DatabaseConfig::new(name);
    let pairs = match split_pairs(connstr) {
        Ok(pairs) => pairs,
        Err(message) => {
            out.errors.push(message);
            return out;
        }
    };
    let mut port_set = false;
    // host= and port= may be lists; they are paired once both are known.
    let (mut hosts, mut ports) = (None, None);
    for (key, val) in pairs {
        port_set |= key == "port";
        let result = match key.as_str() {
            "host" => host_list(&val).map(|h| hosts = Some(h)),
            "port" => port_list(&val).map(|p| ports = Some(p)),
            _ => set_database_key(&mut db, &key, val),
        };
        if let Err(message) = result {
            out.errors.push(message);
        } else if DB_UNIMPLEMENTED.contains(&key.as_str()) {
            out.unimplemented.push(key);
        }
    }
    if let Err(message) = pair_hosts(&mut db, hosts, ports) {
        out.errors.push(message);
    }
    if db.cluster.is_some() {
        // The servers of a cluster database are Patroni's members: a fixed address would be
        // ignored, so it is refused rather than silently overridden.
        if db.host.is_some() {
            out.errors.push(
                "host: a cluster= database takes its servers from Patroni; remove host="
                    .to_string(),
            );
        }
        if port_set {
            out.errors.push(
                "port: a cluster= database takes its servers from Patroni; remove port="
                    .to_string(),
            );
        }
        if db.target_session_attrs != TargetSessionAttrs::Any {
            out.errors.push(
                "target_session_attrs: a cluster= database routes by role=; use role= instead"
                    .to_string(),
            );
        }
    } else if db.role.is_some() {
        out.errors
            .push("role: only a cluster= database has a role; add cluster=<name>".to_string());
    }
    out.finish(db)
}

/// `host=a,b,c`: each element as [`host`] reads it.
fn host_list(val: &str) -> Result<Vec<ServerHost>, String> {
    val.split(',')
        .map(|h| host(h.trim()).map_err(|m| format!("host: {m}")))
        .collect()
}

/// `port=p` or `port=p1,p2,...`.
fn port_list(val: &str) -> Result<Vec<u16>, String> {
    val.split(',')
        .map(|p| port(p.trim()).map_err(|m| format!("port: {m}")))
        .collect()
}

/// PgBouncer's rule: one port for every host, or one port per host.
fn pair_hosts(
    db: &mut DatabaseConfig,
    hosts: Option<Vec<ServerHost>>,
    ports: Option<Vec<u16>>,
) -> Result<(), String> {
    let ports = ports.unwrap_or_else(|| vec![db.port]);
    let Some(hosts) = hosts else {
        if ports.len() > 1 {
            return Err(
                "port: invalid number of ports (a port list needs a host list of the same length)"
                    .to_string(),
            );
        }
        db.port = ports[0];
        return Ok(());
    };
    if ports.len() != 1 && ports.len() != hosts.len() {
        return Err(format!(
            "port: invalid number of ports: {} ports for {} hosts (give one port, or one per host)",
            ports.len(),
            hosts.len()
        ));
    }
    let pairs: Vec<(ServerHost, u16)> = hosts
        .into_iter()
        .enumerate()
        .map(|(i, h)| (h, ports.get(i).copied().unwrap_or(ports[0])))
        .collect();
    db.host = Some(pairs[0].0.clone());
    db.port = pairs[0].1;
    if pairs.len() > 1 {
        db.hosts = pairs;
    }
    Ok(())
}

fn set_database_key(db: &mut DatabaseConfig, key: &str, val: String) -> Result<(), String> {
    let with_key = |message: String| format!("{key}: {message}");
    match key {
        "dbname" => db.dbname = Some(val),
        "user" => db.user = Some(val),
        "password" => db.password = Some(val),
        "auth_user" => db.auth_user = Some(val),
        "auth_query" => db.auth_query = Some(val),
        "auth_dbname" => db.auth_dbname = Some(val),
        "pool_size" => db.pool_size = Some(dec_u32(&val).map_err(with_key)?),
        "min_pool_size" => db.min_pool_size = Some(dec_u32(&val).map_err(with_key)?),
        "reserve_pool_size" | "reserve_pool" => {
            db.reserve_pool_size = Some(dec_u32(&val).map_err(with_key)?)
        }
        "pool_mode" => db.pool_mode = Some(pool_mode(&val).map_err(with_key)?),
        "max_db_connections" => db.max_db_connections = Some(dec_u32(&val).map_err(with_key)?),
        "server_lifetime" => db.server_lifetime = Some(seconds(&val).map_err(with_key)?),
        "max_db_client_connections" => {
            db.max_db_client_connections = Some(dec_u32(&val).map_err(with_key)?)
        }
        "query_wait_timeout" => db.query_wait_timeout = optional_seconds(&val).map_err(with_key)?,
        "load_balance_hosts" => {
            db.load_balance_hosts = match val.to_ascii_lowercase().as_str() {
                "round-robin" => LoadBalanceHosts::RoundRobin,
                "disable" => LoadBalanceHosts::Disable,
                _ => {
                    return Err(with_key(format!(
                        "expected round-robin or disable, got \"{}\"",
                        value::shown(&val)
                    )))
                }
            }
        }
        "target_session_attrs" => {
            db.target_session_attrs = TargetSessionAttrs::parse(&val).ok_or_else(|| {
                // PgBouncer's text.
                format!("invalid target_session_attrs: {}", value::shown(&val))
            })?
        }
        "connect_query" => db.connect_query = Some(val),
        "client_encoding" => db.client_encoding = Some(val),
        "datestyle" => db.datestyle = Some(val),
        "timezone" => db.timezone = Some(val),
        "application_name" => db.application_name = Some(val),
        "cluster" => db.cluster = Some(val),
        "role" => db.role = Some(Role::parse(&val).map_err(with_key)?),
        k if DB_UNIMPLEMENTED.contains(&k) => {}
        _ => {
            return Err(format!(
                "unrecognized connection parameter: {}",
                value::shown(key)
            ))
        }
    }
    Ok(())
}

/// Parses the settings of `[users] name = ...`.
pub(super) fn parse_user(name: &str, settings: &str) -> Outcome<UserConfig> {
    let mut out = Outcome::new();
    let mut user = UserConfig {
        name: name.to_string(),
        ..UserConfig::default()
    };
    let pairs = match split_pairs(settings) {
        Ok(pairs) => pairs,
        Err(message) => {
            out.errors.push(message);
            return out;
        }
    };
    for (key, val) in pairs {
        if let Err(message) = set_user_key(&mut user, &key, &val) {
            out.errors.push(message);
        } else if USER_UNIMPLEMENTED.contains(&key.as_str()) {
            out.unimplemented.push(key);
        }
    }
    out.finish(user)
}

fn set_user_key(user: &mut UserConfig, key: &str, val: &str) -> Result<(), String> {
    let with_key = |message: String| format!("{key}: {message}");
    match key {
        "pool_mode" => user.pool_mode = Some(pool_mode(val).map_err(with_key)?),
        "pool_size" => user.pool_size = Some(dec_u32(val).map_err(with_key)?),
        "reserve_pool_size" => user.reserve_pool_size = Some(dec_u32(val).map_err(with_key)?),
        "max_user_connections" => user.max_user_connections = Some(dec_u32(val).map_err(with_key)?),
        "query_timeout" => user.query_timeout = Some(seconds(val).map_err(with_key)?),
        "idle_transaction_timeout" => {
            user.idle_transaction_timeout = Some(seconds(val).map_err(with_key)?)
        }
        "client_idle_timeout" => user.client_idle_timeout = Some(seconds(val).map_err(with_key)?),
        "max_user_client_connections" => {
            user.max_user_client_connections = Some(dec_u32(val).map_err(with_key)?)
        }
        "transaction_timeout" => user.transaction_timeout = Some(seconds(val).map_err(with_key)?),
        "query_wait_timeout" => {
            user.query_wait_timeout = optional_seconds(val).map_err(with_key)?
        }
        k if USER_UNIMPLEMENTED.contains(&k) => {}
        _ => {
            return Err(format!(
                "unrecognized user parameter: {}",
                value::shown(key)
            ))
        }
    }
    Ok(())
}

/// PgBouncer's per-database and per-user `query_wait_timeout`: -1 (its default) means "not set
/// here, use the next level"; anything else is seconds as usual.
fn optional_seconds(val: &str) -> Result<Option<std::time::Duration>, String> {
    if val.trim() == "-1" {
        return Ok(None);
    }
    seconds(val).map(Some)
}

/// Parses the settings of `[clusters] name = patroni=http://host:port,...`.
pub(super) fn parse_cluster(name: &str, settings: &str) -> Outcome<ClusterConfig> {
    let mut out = Outcome::new();
    let pairs = match split_pairs(settings) {
        Ok(pairs) => pairs,
        Err(message) => {
            out.errors.push(message);
            return out;
        }
    };
    let mut patroni = Vec::new();
    for (key, val) in pairs {
        match key.as_str() {
            "patroni" => {
                patroni.clear();
                for url in val.split(',').map(str::trim).filter(|u| !u.is_empty()) {
                    match PatroniUrl::parse(url) {
                        Ok(u) if !patroni.contains(&u) => patroni.push(u),
                        Ok(_) => {}
                        Err(message) => out.errors.push(format!("patroni: {message}")),
                    }
                }
            }
            _ => out.errors.push(format!(
                "unrecognized cluster parameter: {} (expected patroni=http://host:port,...)",
                value::shown(&key)
            )),
        }
    }
    if patroni.is_empty() && out.errors.is_empty() {
        out.errors
            .push("patroni: expected patroni=http://host:port[,http://host:port...]".to_string());
    }
    out.finish(ClusterConfig {
        name: name.to_string(),
        patroni,
    })
}

/// `host=`: a directory (starts with `/`) is a Unix socket; anything else a host name or address.
pub(super) fn host(val: &str) -> Result<ServerHost, String> {
    if val.is_empty() {
        return Err("expected a host name, address or socket directory, got \"\"".to_string());
    }
    if val.starts_with('@') {
        return Err("abstract Unix sockets (host=@name) are not supported".to_string());
    }
    if val.starts_with('/') {
        Ok(ServerHost::Unix(val.into()))
    } else {
        Ok(ServerHost::Tcp(val.to_string()))
    }
}

pub(super) fn port(val: &str) -> Result<u16, String> {
    match val.parse::<u16>() {
        Ok(p) if p != 0 && val.bytes().all(|b| b.is_ascii_digit()) => Ok(p),
        _ => Err(format!(
            "expected a port number from 1 to 65535, got \"{}\"",
            value::shown(val)
        )),
    }
}

/// Splits a libpq-style `key=value ...` string. Keys are lower-cased. A value is either a run of
/// non-blank characters or single-quoted, where `''` and `\'` are a quote and `\\` a backslash.
/// Messages never contain values: the string may hold a password.
pub(super) fn split_pairs(s: &str) -> Result<Vec<(String, String)>, String> {
    let mut pairs = Vec::new();
    let mut rest = s.trim_start_matches(is_blank);
    while !rest.is_empty() {
        let key_end = rest
            .find(|c: char| c == '=' || is_blank(c))
            .unwrap_or(rest.len());
        let (key, after_key) = rest.split_at(key_end);
        let Some(after_eq) = after_key.trim_start_matches(is_blank).strip_prefix('=') else {
            // Do not echo the token: it may be the tail of an unquoted password with a space.
            let place = match pairs.last() {
                Some((prev, _)) => format!("after the value of {prev}"),
                None => "at the start".to_string(),
            };
            return Err(format!(
                "syntax error in connection string: expected key=value {place} \
                 (quote values containing spaces: key='a b')"
            ));
        };
        if key.is_empty() {
            return Err("syntax error in connection string: '=' without a key".to_string());
        }
        let after_eq = after_eq.trim_start_matches(is_blank);
        let (val, after_val) = if let Some(quoted) = after_eq.strip_prefix('\'') {
            unquote_single(quoted).ok_or_else(|| {
                format!("syntax error in connection string: unterminated quoted value of {key}")
            })?
        } else {
            let end = after_eq.find(is_blank).unwrap_or(after_eq.len());
            if end == 0 {
                return Err(format!(
                    "syntax error in connection string: empty value for {key}"
                ));
            }
            (after_eq[..end].to_string(), &after_eq[end..])
        };
        pairs.push((key.to_ascii_lowercase(), val));
        rest = after_val.trim_start_matches(is_blank);
    }
    Ok(pairs)
}

fn is_blank(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// Reads a single-quoted value whose opening quote is consumed. Returns the value and the text
/// after the closing quote, or `None` when the quote is never closed.
fn unquote_single(s: &str) -> Option<(String, &str)> {
    let mut out = String::new();
    let mut chars = s.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => out.push(chars.next()?.1),
            '\'' if matches!(chars.peek(), Some((_, '\''))) => {
                out.push('\'');
                chars.next();
            }
            '\'' => return Some((out, &s[i + 1..])),
            _ => out.push(c),
        }
    }
    None
}
