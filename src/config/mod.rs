//! The configuration model: what an unchanged `pgbouncer.ini` + `userlist.txt` mean to the pooler.
//!
//! Owns the typed settings, their PgBouncer 1.2x defaults (one `impl Default` per struct is the single
//! source of defaults) and `load()`. Parsing of the ini syntax lives in `ini.rs`, the auth file in
//! `userlist.rs`. Running code holds an `Arc<Config>` snapshot; a reload builds a new one.
//! Must not do I/O beyond reading the files it is pointed at.

mod cluster;
mod general;
mod ini;
mod keys;
pub mod operator;
mod report;
mod security;
mod userlist;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use cluster::{ClusterConfig, PatroniUrl, ReplicaFallback, Role};
pub use general::{General, ShutdownDrain};
pub use ini::parse_ini_str;
pub use keys::{KeyInfo, GENERAL_KEYS};
pub use security::{EcdhCurve, Security, SslMode, TlsSettings, DEFAULT_AUTH_QUERY};
pub use userlist::{parse_userlist, Secret, UserList};

/// A configuration problem, with enough context to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {key}: {message}")]
pub struct ConfigIssue {
    /// File the problem is in.
    pub file: String,
    /// 1-based line number (0 when the problem is not tied to a line).
    pub line: usize,
    /// The key (or section) concerned.
    pub key: String,
    /// What was wrong / what was expected.
    pub message: String,
    /// The value as written, when the problem is a `[pgbouncer]` line's value (or key): the log
    /// then quotes it as PgBouncer's parser does.
    pub value: Option<String>,
}

/// Every problem found in one load; the config is rejected when this is non-empty.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration:\n{}", .0.iter().map(|i| i.to_string()).collect::<Vec<_>>().join("\n"))]
pub struct ConfigErrors(pub Vec<ConfigIssue>);

/// How long a server stays with a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PoolMode {
    /// Server is released when the client disconnects.
    Session,
    /// Server is released after each transaction.
    Transaction,
    /// Server is released after each statement; transactions are refused.
    Statement,
}

impl PoolMode {
    /// The ini spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            PoolMode::Session => "session",
            PoolMode::Transaction => "transaction",
            PoolMode::Statement => "statement",
        }
    }
}

/// Client authentication method (`auth_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthType {
    /// No password, user name ignored; databases need a forced user.
    Any,
    /// No password; the user must be known.
    Trust,
    /// Cleartext password.
    Plain,
    /// MD5 challenge (SCRAM for users whose stored secret is SCRAM).
    Md5,
    /// SCRAM-SHA-256.
    ScramSha256,
    /// Unix-socket clients whose OS user (peer credentials) has the name they log in with; the
    /// user must be known (auth_file). TCP clients are refused.
    Peer,
    /// TLS client certificate; the user name must be the certificate's CN.
    Cert,
    /// Method chosen per connection by the auth_hba_file.
    Hba,
    /// Cleartext password checked against LDAP with `auth_ldap_options` (PgBouncer 1.25).
    Ldap,
}

impl AuthType {
    /// The ini spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthType::Any => "any",
            AuthType::Trust => "trust",
            AuthType::Plain => "plain",
            AuthType::Md5 => "md5",
            AuthType::ScramSha256 => "scram-sha-256",
            AuthType::Cert => "cert",
            AuthType::Hba => "hba",
            AuthType::Peer => "peer",
            AuthType::Ldap => "ldap",
        }
    }
}

/// `load_balance_hosts` of a database with a host list (PgBouncer 1.24).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LoadBalanceHosts {
    /// Each new client goes to the next host in turn.
    #[default]
    RoundRobin,
    /// The first host that works, until it fails.
    Disable,
}

impl LoadBalanceHosts {
    /// The ini spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            LoadBalanceHosts::RoundRobin => "round-robin",
            LoadBalanceHosts::Disable => "disable",
        }
    }
}

/// `target_session_attrs` of a database (PgBouncer 1.25): which servers a login may keep,
/// judged from the `in_hot_standby` and `default_transaction_read_only` the server reports
/// (PostgreSQL 14+; a parameter not reported counts as `off`). PgBouncer has no
/// `prefer-standby`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TargetSessionAttrs {
    /// Every server.
    #[default]
    Any,
    /// `default_transaction_read_only` off.
    ReadWrite,
    /// `default_transaction_read_only` on.
    ReadOnly,
    /// `in_hot_standby` off.
    Primary,
    /// `in_hot_standby` on.
    Standby,
}

impl TargetSessionAttrs {
    /// The ini spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            TargetSessionAttrs::Any => "any",
            TargetSessionAttrs::ReadWrite => "read-write",
            TargetSessionAttrs::ReadOnly => "read-only",
            TargetSessionAttrs::Primary => "primary",
            TargetSessionAttrs::Standby => "standby",
        }
    }

    /// Parses the ini value; `None` for anything else (PgBouncer's values are exact).
    pub fn parse(val: &str) -> Option<Self> {
        Some(match val {
            "any" => TargetSessionAttrs::Any,
            "read-write" => TargetSessionAttrs::ReadWrite,
            "read-only" => TargetSessionAttrs::ReadOnly,
            "primary" => TargetSessionAttrs::Primary,
            "standby" => TargetSessionAttrs::Standby,
            _ => return None,
        })
    }

    /// Whether a server that reported `in_hot_standby` and `default_transaction_read_only`
    /// as given (`None`: not reported, taken as off) satisfies this.
    pub fn accepts(self, in_hot_standby: Option<&str>, read_only: Option<&str>) -> bool {
        let hot_standby = in_hot_standby == Some("on");
        let read_only = read_only == Some("on");
        match self {
            TargetSessionAttrs::Any => true,
            TargetSessionAttrs::ReadWrite => !read_only,
            TargetSessionAttrs::ReadOnly => read_only,
            TargetSessionAttrs::Primary => !hot_standby,
            TargetSessionAttrs::Standby => hot_standby,
        }
    }
}

/// Where a server lives.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ServerHost {
    /// Host name or IP address.
    Tcp(String),
    /// Directory holding `.s.PGSQL.<port>`.
    Unix(PathBuf),
}

/// One `[databases]` entry (or the `*` fallback).
#[derive(Debug, Clone, PartialEq)]
pub struct DatabaseConfig {
    /// The name clients connect to (the ini key).
    pub name: String,
    /// `host=`; `None` means the default Unix socket directory of libpq (`/var/run/postgresql`) as PgBouncer does.
    pub host: Option<ServerHost>,
    /// `port=` (5432).
    pub port: u16,
    /// `host=a,b,...` with `port=p` or `port=p1,p2,...`: every (host, port), in order. Empty for
    /// a single host (then `host`/`port` say where); `host`/`port` hold the first entry.
    pub hosts: Vec<(ServerHost, u16)>,
    /// `load_balance_hosts=` (only meaningful with a host list).
    pub load_balance_hosts: LoadBalanceHosts,
    /// `target_session_attrs=`: which servers a login keeps (the others are closed and, with a
    /// host list, the next host is tried).
    pub target_session_attrs: TargetSessionAttrs,
    /// `dbname=`; `None` = the client's database name.
    pub dbname: Option<String>,
    /// `user=`: forced server user (single pool for the database).
    pub user: Option<String>,
    /// `password=` for the forced user or for logging in.
    pub password: Option<String>,
    /// `pool_size=`; `None` = `default_pool_size`.
    pub pool_size: Option<u32>,
    /// `min_pool_size=`.
    pub min_pool_size: Option<u32>,
    /// `reserve_pool_size=` (alias `reserve_pool`).
    pub reserve_pool_size: Option<u32>,
    /// `pool_mode=`.
    pub pool_mode: Option<PoolMode>,
    /// `max_db_connections=`; `None` = global.
    pub max_db_connections: Option<u32>,
    /// `server_lifetime=`.
    pub server_lifetime: Option<Duration>,
    /// `max_db_client_connections=`; `None` = global.
    pub max_db_client_connections: Option<u32>,
    /// `query_wait_timeout=`; `None` (or -1) = the user's or the global value.
    pub query_wait_timeout: Option<Duration>,
    /// `connect_query=`: run once after each server login.
    pub connect_query: Option<String>,
    /// `client_encoding=` sent in the server startup packet.
    pub client_encoding: Option<String>,
    /// `datestyle=` sent in the server startup packet.
    pub datestyle: Option<String>,
    /// `timezone=` sent in the server startup packet.
    pub timezone: Option<String>,
    /// `application_name=` sent in the server startup packet.
    pub application_name: Option<String>,
    /// `auth_user=`: who runs auth_query for this database (overrides the global one).
    pub auth_user: Option<String>,
    /// `auth_query=`: this database's own auth_query.
    pub auth_query: Option<String>,
    /// `auth_dbname=`: where this database's auth_query runs.
    pub auth_dbname: Option<String>,
    /// `cluster=`: the `[clusters]` entry whose Patroni members serve this database (then
    /// `host`/`port` are unset: servers come from the topology).
    pub cluster: Option<String>,
    /// `role=`: which members of `cluster` (default primary); only with `cluster=`.
    pub role: Option<Role>,
}

impl DatabaseConfig {
    /// Every (host, port) of a host list; `None` for a single host.
    pub fn host_list(&self) -> Option<&[(ServerHost, u16)]> {
        (self.hosts.len() > 1).then_some(self.hosts.as_slice())
    }

    /// An entry with only a name and PgBouncer's defaults.
    pub fn new(name: &str) -> Self {
        DatabaseConfig {
            name: name.to_string(),
            host: None,
            port: 5432,
            hosts: Vec::new(),
            load_balance_hosts: LoadBalanceHosts::RoundRobin,
            target_session_attrs: TargetSessionAttrs::Any,
            dbname: None,
            user: None,
            password: None,
            pool_size: None,
            min_pool_size: None,
            reserve_pool_size: None,
            pool_mode: None,
            max_db_connections: None,
            server_lifetime: None,
            max_db_client_connections: None,
            query_wait_timeout: None,
            connect_query: None,
            client_encoding: None,
            datestyle: None,
            timezone: None,
            application_name: None,
            auth_user: None,
            auth_query: None,
            auth_dbname: None,
            cluster: None,
            role: None,
        }
    }
}

/// One `[users]` entry.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct UserConfig {
    /// User name (the ini key).
    pub name: String,
    /// `pool_mode=`.
    pub pool_mode: Option<PoolMode>,
    /// `pool_size=`.
    pub pool_size: Option<u32>,
    /// `reserve_pool_size=`.
    pub reserve_pool_size: Option<u32>,
    /// `max_user_connections=`.
    pub max_user_connections: Option<u32>,
    /// `query_timeout=`.
    pub query_timeout: Option<Duration>,
    /// `idle_transaction_timeout=`.
    pub idle_transaction_timeout: Option<Duration>,
    /// `client_idle_timeout=`.
    pub client_idle_timeout: Option<Duration>,
    /// `max_user_client_connections=`; `None` = global.
    pub max_user_client_connections: Option<u32>,
    /// `transaction_timeout=`.
    pub transaction_timeout: Option<Duration>,
    /// `query_wait_timeout=`; `None` (or -1) = the database's or the global value.
    pub query_wait_timeout: Option<Duration>,
}

/// A whole loaded configuration.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Config {
    /// The ini file this came from (for RELOAD and messages).
    pub path: PathBuf,
    /// `[pgbouncer]`.
    pub general: General,
    /// `[databases]` without `*`, by name.
    pub databases: HashMap<String, DatabaseConfig>,
    /// The `*` fallback entry.
    pub fallback_database: Option<DatabaseConfig>,
    /// `[users]`, by name.
    pub users: HashMap<String, UserConfig>,
    /// `[clusters]`, by name (sorted, for SHOW CLUSTERS).
    pub clusters: BTreeMap<String, ClusterConfig>,
    /// The parsed `auth_file`.
    pub userlist: UserList,
    /// Keys that were accepted but are not implemented: reported at start-up as warnings.
    pub unimplemented_keys: Vec<String>,
    /// Raw `[pgbouncer]` values as written, for SHOW CONFIG.
    pub raw_general: Vec<(String, String)>,
    /// `[peers]`, by peer id (an entry for our own `peer_id` is kept here and ignored by users).
    pub peers: std::collections::BTreeMap<u16, PeerConfig>,
    /// The parsed `auth_hba_file` (read when auth_type is hba).
    pub hba: Option<crate::auth::hba::Hba>,
    /// The parsed `auth_ident_file` (read with the HBA file, when set).
    pub ident: Option<crate::auth::ident::IdentMap>,
    /// The parsed `auth_ldap_options` (when auth_type is ldap).
    pub ldap: Option<crate::auth::ldap::LdapOptions>,
}

/// One `[peers]` entry: another pooler process that cancel requests carrying its id go to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConfig {
    /// `host=`: name, IP address, or a Unix socket directory.
    pub host: ServerHost,
    /// `port=` (6432, PgBouncer's default for peers).
    pub port: u16,
    /// `pool_size=`: most cancel requests in flight to this peer at once (`default_pool_size`
    /// when unset).
    pub pool_size: Option<u32>,
}

impl Config {
    /// Reads and validates `path` (and its `%include`s and `auth_file`).
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigIssue {
                file: path.display().to_string(),
                line: 0,
                key: String::new(),
                message: format!("cannot read file: {e}"),
                value: None,
            }])
        })?;
        // cfg.path is `path`, or what a `conffile` line names (the file later reloads read).
        let mut cfg = parse_ini_str(&text, path)?;
        if let Some(auth_file) = cfg.general.auth_file.clone() {
            let text = std::fs::read_to_string(&auth_file).map_err(|e| {
                ConfigErrors(vec![ConfigIssue {
                    file: auth_file.display().to_string(),
                    line: 0,
                    key: "auth_file".into(),
                    message: format!("cannot read file: {e}"),
                    value: None,
                }])
            })?;
            cfg.userlist = parse_userlist(&text, &auth_file)?;
        }
        cfg.load_hba().map_err(|message| {
            ConfigErrors(vec![ConfigIssue {
                file: path.display().to_string(),
                line: 0,
                key: "auth_hba_file".into(),
                message,
                value: None,
            }])
        })?;
        Ok(cfg)
    }

    /// Logs, once per load, every accepted key and every auth_hba_file line that has no effect
    /// (the contract: never ignored silently).
    pub fn warn_unimplemented(&self) {
        for w in self.warnings() {
            tracing::warn!("{w}");
        }
    }

    /// The texts [`Config::warn_unimplemented`] logs (`--check` prints them).
    pub fn warnings(&self) -> Vec<String> {
        let keys = self.unimplemented_keys.iter().map(|key| {
            format!("setting {key} is not supported by ollyscale-pooler and is ignored")
        });
        let hba = self.hba.iter().flat_map(|h| h.warnings());
        // A `map=` with no ident file can never let anyone in; say so rather than fail silently.
        let maps = self
            .hba
            .as_ref()
            .filter(|h| h.uses_maps() && self.ident.is_none())
            .map(|_| {
                "auth_hba_file uses map= but auth_ident_file is not set: those lines let nobody in"
                    .to_string()
            });
        keys.chain(hba).chain(maps).collect()
    }

    /// The database entry for a client's database name: an exact entry, else the `*` fallback
    /// with `name` filled in. `None` = `no such database`.
    pub fn database(&self, name: &str) -> Option<DatabaseConfig> {
        if let Some(db) = self.databases.get(name) {
            return Some(db.clone());
        }
        self.fallback_database.as_ref().map(|fb| {
            let mut db = fb.clone();
            db.name = name.to_string();
            db
        })
    }

    /// Pool mode for (db, user): user over database over global.
    pub fn pool_mode(&self, db: &DatabaseConfig, user: &str) -> PoolMode {
        self.users
            .get(user)
            .and_then(|u| u.pool_mode)
            .or(db.pool_mode)
            .unwrap_or(self.general.pool_mode)
    }

    /// Pool size for (db, user): user over database over global.
    pub fn pool_size(&self, db: &DatabaseConfig, user: &str) -> u32 {
        self.users
            .get(user)
            .and_then(|u| u.pool_size)
            .or(db.pool_size)
            .unwrap_or(self.general.default_pool_size)
    }

    /// Changes one `[pgbouncer]` setting at run time (console `SET key = value`): the key must be
    /// known, implemented and reloadable, and the value valid. `raw_general` follows, so
    /// SHOW CONFIG shows the new value. The error says what was wrong (for the log).
    pub fn set_general(&mut self, key: &str, value: &str) -> Result<(), String> {
        let mut next = self.clone();
        ini::set_general(&mut next, key, value)?;
        if matches!(
            key.to_ascii_lowercase().as_str(),
            "auth_type" | "auth_hba_file" | "auth_ident_file" | "auth_ldap_options"
        ) {
            next.load_hba()?;
        }
        *self = next;
        Ok(())
    }

    /// Reads `auth_hba_file` and `auth_ident_file` when auth_type is hba (an error names what is
    /// wrong), else clears them: PgBouncer reads the ident file only for hba.
    fn load_hba(&mut self) -> Result<(), String> {
        self.ldap = match self.general.auth_type {
            AuthType::Ldap => Some(
                crate::auth::ldap::LdapOptions::parse(&self.general.security.auth_ldap_options)
                    .map_err(|e| format!("auth_ldap_options: {e}"))?,
            ),
            _ => None,
        };
        if self.general.auth_type != AuthType::Hba {
            self.hba = None;
            self.ident = None;
            return Ok(());
        }
        self.ident = match &self.general.security.auth_ident_file {
            Some(file) => Some(crate::auth::ident::IdentMap::load(file)?),
            None => None,
        };
        let file = self
            .general
            .security
            .auth_hba_file
            .clone()
            .ok_or_else(|| "auth_type hba needs auth_hba_file".to_string())?;
        self.hba = Some(crate::auth::hba::Hba::load(&file)?);
        Ok(())
    }

    /// Client cap of a database: its own `max_db_client_connections`, else the global one
    /// (0 = none).
    pub fn max_db_client_connections(&self, db: &DatabaseConfig) -> u32 {
        db.max_db_client_connections
            .filter(|&n| n > 0)
            .unwrap_or(self.general.max_db_client_connections)
    }

    /// Client cap of a user: its `[users]` value, else the global one (0 = none).
    pub fn max_user_client_connections(&self, user: &str) -> u32 {
        self.users
            .get(user)
            .and_then(|u| u.max_user_client_connections)
            .filter(|&n| n > 0)
            .unwrap_or(self.general.max_user_client_connections)
    }

    /// Reserve pool size for (db, user).
    pub fn reserve_pool_size(&self, db: &DatabaseConfig, user: &str) -> u32 {
        self.users
            .get(user)
            .and_then(|u| u.reserve_pool_size)
            .or(db.reserve_pool_size)
            .unwrap_or(self.general.reserve_pool_size)
    }
}
