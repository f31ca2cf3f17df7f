//! The Patroni side of the configuration: `[clusters]` entries (where a cluster's Patroni REST API
//! answers) and the `role=` a `cluster=` database routes to.
//!
//! Owns the typed values and the syntax of a Patroni URL. It must not do I/O (no DNS lookups: a
//! name is resolved by discovery at each poll, so a headless Service that gains members is
//! followed) and never panics on any input.

use std::fmt;

/// Which members of a cluster a `cluster=` database's clients are sent to (`role=`).
///
/// Config-side only: the pool has its own `Role` for checkouts; this is what the file says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Role {
    /// The confirmed Patroni leader (the default).
    #[default]
    Primary,
    /// Replicas in state running/streaming under `max_replica_lag`; the primary as a fallback.
    Replica,
    /// Synchronous standbys only.
    Sync,
    /// Any usable member, primary included.
    Any,
}

impl Role {
    /// The ini spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Primary => "primary",
            Role::Replica => "replica",
            Role::Sync => "sync",
            Role::Any => "any",
        }
    }

    /// Parses `primary|replica|sync|any` (any case). The error says what was expected.
    pub fn parse(value: &str) -> Result<Role, String> {
        match value.to_ascii_lowercase().as_str() {
            "primary" => Ok(Role::Primary),
            "replica" => Ok(Role::Replica),
            "sync" => Ok(Role::Sync),
            "any" => Ok(Role::Any),
            _ => Err(format!(
                "expected primary, replica, sync or any, got \"{}\"",
                super::ini::shown(value)
            )),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a `role=replica` database's clients go when no replica is usable (`replica_fallback`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ReplicaFallback {
    /// To the confirmed leader (the default): reads keep working while replicas are down.
    #[default]
    Primary,
    /// Nowhere: clients wait (up to `failover_hold_timeout`) for a replica to come back.
    None,
}

impl ReplicaFallback {
    /// The ini spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ReplicaFallback::Primary => "primary",
            ReplicaFallback::None => "none",
        }
    }

    /// Parses `primary|none` (any case). The error says what was expected.
    pub fn parse(value: &str) -> Result<ReplicaFallback, String> {
        match value.to_ascii_lowercase().as_str() {
            "primary" => Ok(ReplicaFallback::Primary),
            "none" => Ok(ReplicaFallback::None),
            _ => Err(format!(
                "expected primary or none, got \"{}\"",
                super::ini::shown(value)
            )),
        }
    }
}

/// One Patroni REST API address: `http://host:port`. `host` may be a DNS name that resolves to
/// several members (each address is tried).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PatroniUrl {
    /// Host name or IP address, without IPv6 brackets.
    pub host: String,
    /// TCP port (Patroni's default is 8008; the URL must say it).
    pub port: u16,
}

impl PatroniUrl {
    /// Parses `http://host:port[/path]`. The path is ignored: discovery always asks `/cluster`
    /// at the root, and Patroni's own `api_url`s end in `/patroni`. The error says what was
    /// expected and never repeats credentials.
    pub fn parse(text: &str) -> Result<PatroniUrl, String> {
        let lower = text.to_ascii_lowercase();
        let rest = if lower.starts_with("http://") {
            &text["http://".len()..]
        } else if lower.starts_with("https://") {
            return Err(
                "https is not supported for the Patroni API (no TLS client); use http://host:port"
                    .to_string(),
            );
        } else {
            return Err(format!(
                "expected http://host:port, got \"{}\"",
                super::ini::shown(text)
            ));
        };
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        if authority.contains('@') {
            return Err("user names or passwords in the Patroni URL are not supported".to_string());
        }
        let bracketed = authority.starts_with('[');
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| "unterminated [IPv6 address] in the Patroni URL".to_string())?;
            if !(after.is_empty() || after.starts_with(':')) {
                return Err(format!(
                    "expected http://[address]:port, got \"{}\"",
                    super::ini::shown(text)
                ));
            }
            (host, after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        let bad_char = |c: char| c.is_whitespace() || (c == ':' && !bracketed) || "[]".contains(c);
        if host.is_empty() || host.contains(bad_char) {
            return Err(format!(
                "expected http://host:port, got \"{}\"",
                super::ini::shown(text)
            ));
        }
        let port = match port {
            None => {
                return Err(format!(
                    "the Patroni URL needs a port (usually 8008): \"{}\"",
                    super::ini::shown(text)
                ))
            }
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n != 0 && p.bytes().all(|b| b.is_ascii_digit()) => n,
                _ => {
                    return Err(format!(
                        "expected a port number from 1 to 65535 in \"{}\"",
                        super::ini::shown(text)
                    ))
                }
            },
        };
        Ok(PatroniUrl {
            host: host.to_string(),
            port,
        })
    }
}

impl fmt::Display for PatroniUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "http://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "http://{}:{}", self.host, self.port)
        }
    }
}

/// One `[clusters]` entry: `name = patroni=http://a:8008,http://b:8008`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// The name `cluster=` refers to (the ini key).
    pub name: String,
    /// Where to ask `GET /cluster`, in the order written; at least one.
    pub patroni: Vec<PatroniUrl>,
}
