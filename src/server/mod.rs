//! One PostgreSQL server connection: connect, log in, run the pooler's own small queries, and
//! hold the state pooling needs (parameters, cancel key, age). Never sees a pool or a client.

pub mod dns;
pub mod inflight;
mod login;
pub mod registry;
pub mod statements;

pub use login::{connect, open_cancel, send_cancel};
pub use registry::{Registration, ServerInfo, ServerState, Servers};

use std::time::{Duration, Instant};

use bytes::BytesMut;
use postgres_protocol::message::frontend;

use crate::config::ServerHost;
use crate::error::{Error, Result};
use crate::net::Stream;
use crate::proto::{self, build};

/// Where and as whom to log in. Built by the pool from the config; cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTarget {
    /// Host or Unix socket directory.
    pub host: ServerHost,
    /// TCP port, also names the Unix socket.
    pub port: u16,
    /// Database on the server.
    pub dbname: String,
    /// Role on the server.
    pub user: String,
    /// Extra startup parameters (client_encoding, datestyle, timezone, application_name).
    pub startup_params: Vec<(String, String)>,
    /// Run once after each login; errors are only logged.
    pub connect_query: Option<String>,
    /// Checked after the login (and connect_query): a server that does not satisfy it is
    /// closed with `Error::TargetSessionAttrs`.
    pub target_session_attrs: crate::config::TargetSessionAttrs,
    /// Bound on connect + login.
    pub connect_timeout: Duration,
    /// TCP socket options.
    pub tcp: crate::net::TcpOptions,
    /// server_tls_sslmode and the rustls config for it (TCP servers only).
    pub tls: crate::net::ServerTls,
}

impl ServerTarget {
    /// `host:port` for logs and SHOW output.
    pub fn host_text(&self) -> String {
        match &self.host {
            ServerHost::Tcp(h) => h.clone(),
            ServerHost::Unix(p) => p.display().to_string(),
        }
    }
}

/// What we prove our identity to the server with.
#[derive(Clone, PartialEq, Eq)]
pub enum ServerCredential {
    /// Nothing: only trust-authenticated servers will accept us.
    None,
    /// A plain password (works for every method).
    Password(String),
    /// An `md5...` secret: works only when the server asks for md5.
    Md5Secret(String),
    /// SCRAM pass-through keys recovered from a client's proof.
    ScramKeys {
        client_key: [u8; 32],
        server_key: [u8; 32],
    },
    /// A SCRAM secret without keys: cannot log in until a client brings keys.
    ScramSecretOnly,
}

impl std::fmt::Debug for ServerCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print secrets.
        let kind = match self {
            ServerCredential::None => "None",
            ServerCredential::Password(_) => "Password",
            ServerCredential::Md5Secret(_) => "Md5Secret",
            ServerCredential::ScramKeys { .. } => "ScramKeys",
            ServerCredential::ScramSecretOnly => "ScramSecretOnly",
        };
        f.write_str(kind)
    }
}

/// A set of tracked parameters, (canonical name, value) in the config's tracked order. One set
/// is shared by the clients that want the same values and by the servers synced to it, so
/// "is this server set up for this client already" is usually one pointer comparison.
pub type ParamSet = std::sync::Arc<[(std::sync::Arc<str>, std::sync::Arc<str>)]>;

/// The server's real cancel key and address, for forwarding a client's CancelRequest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CancelTarget {
    /// Host or socket directory.
    pub host: ServerHost,
    /// Port.
    pub port: u16,
    /// The address the server was reached at (TCP): a cancel must reach the same backend, and
    /// a name may resolve to several servers.
    pub addr: Option<std::net::SocketAddr>,
    /// Backend PID.
    pub pid: u32,
    /// Backend secret key.
    pub key: u32,
    /// Cancels forwarded to this backend that it has not closed yet (see [`inflight`]).
    pub inflight: inflight::InFlight,
}

/// A logged-in server connection.
#[derive(Debug)]
pub struct ServerConn {
    /// The socket.
    pub stream: Stream,
    /// Read buffer; the server's answers land here and are forwarded from here.
    pub buf: BytesMut,
    /// Every ParameterStatus the server reported, latest value wins.
    pub params: Vec<(String, String)>,
    /// Where a cancel for this server goes. Shared, so linking a client to the server costs a
    /// reference count, not a copy of the host name.
    pub cancel: std::sync::Arc<CancelTarget>,
    /// Unique id for logs and the console.
    pub id: u64,
    /// When the login finished.
    pub created: Instant,
    /// When it was last released to the pool.
    pub last_used: Instant,
    /// A client has used it. server_check_query tests only such servers: one fresh from its
    /// login has just answered, and PgBouncer hands it out untested (SV_IDLE, not SV_USED).
    pub served: bool,
    /// The pool generation this connection was made for; older ones close at release.
    pub generation: u64,
    /// Local address text and port, for SHOW SERVERS.
    pub local_addr: (String, u16),
    /// Last ReadyForQuery status seen (`I`, `T`, `E`).
    pub tx_status: u8,
    /// Presence in the server registry (set by the pool once the login succeeded).
    pub registration: Option<Registration>,
    /// The tracked parameters this server was last found to match (a client's set, shared):
    /// lets the next client with the same set skip the comparison by name. `None` whenever the
    /// server reports a parameter change.
    pub synced: Option<ParamSet>,
    /// Tracked parameters the server does not report (no ParameterStatus, e.g. search_path
    /// before PostgreSQL 18) that the pooler SET on it: their values live in `params` too, so
    /// the next client's comparison sees them.
    pub unreported: Vec<String>,
    /// A client ran SET, RESET or DISCARD ALL: the values of unreported parameters are unknown
    /// and are set (or reset) again for the next client.
    pub unreported_unknown: bool,
    /// The shared prepared statements this server holds (an LRU capped at
    /// max_prepared_statements; see `statements`).
    pub prepared: statements::ServerStatements,
}

impl ServerConn {
    /// A connection over `stream` that has not logged in yet (the login fills in parameters,
    /// the cancel key and the transaction status). Tests use it to build a connection over a
    /// socket pair without a PostgreSQL server.
    pub fn new(stream: Stream, cancel: CancelTarget, local_addr: (String, u16)) -> ServerConn {
        let now = Instant::now();
        ServerConn {
            stream,
            buf: BytesMut::with_capacity(8192),
            params: Vec::new(),
            cancel: std::sync::Arc::new(cancel),
            id: ServerConn::next_id(),
            created: now,
            last_used: now,
            served: false,
            generation: 0,
            local_addr,
            tx_status: b'I',
            registration: None,
            synced: None,
            unreported: Vec::new(),
            unreported_unknown: false,
            prepared: statements::ServerStatements::default(),
        }
    }

    /// A fresh id for a new connection.
    pub fn next_id() -> u64 {
        registry::next_socket_id()
    }

    /// The server's current value of a parameter (case-insensitive name).
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Records a ParameterStatus.
    pub fn set_param(&mut self, name: &str, value: &str) {
        if let Some(slot) = self
            .params
            .iter_mut()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
        {
            if slot.1 != value {
                slot.1 = value.to_string();
                self.synced = None;
            }
        } else {
            self.params.push((name.to_string(), value.to_string()));
            self.synced = None;
        }
    }

    /// Records the value the pooler SET for a parameter the server does not report.
    pub fn set_unreported(&mut self, name: &str, value: Option<&str>) {
        self.params.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
        self.unreported.retain(|k| !k.eq_ignore_ascii_case(name));
        if let Some(v) = value {
            self.params.push((name.to_string(), v.to_string()));
            self.unreported.push(name.to_string());
        }
    }

    /// A client's SET, RESET or DISCARD ALL (seen as its CommandComplete tag) may have changed
    /// parameters the server does not report: forget what the pooler set.
    pub fn forget_unreported(&mut self) {
        if self.unreported.is_empty() && self.unreported_unknown {
            return;
        }
        for k in std::mem::take(&mut self.unreported) {
            self.params.retain(|(n, _)| !n.eq_ignore_ascii_case(&k));
        }
        self.unreported_unknown = true;
        self.synced = None;
    }

    /// Runs one simple query for the pooler's own purposes (SET re-sync, reset, check,
    /// connect_query), swallowing every answer. Returns the server's error, if it sent one.
    pub async fn run_internal(
        &mut self,
        sql: &str,
        max_packet: u32,
    ) -> Result<Option<build::ErrorFields>> {
        let mut out = BytesMut::with_capacity(sql.len() + 6);
        frontend::query(sql, &mut out).map_err(|e| Error::ServerProtocol(e.to_string()))?;
        self.stream.send(&out).await.map_err(Error::ServerIo)?;
        let mut error = None;
        loop {
            let frame = self.read_frame(max_packet).await?;
            match frame.tag {
                b'Z' => {
                    self.tx_status = frame.body.first().copied().unwrap_or(b'I');
                    return Ok(error);
                }
                b'S' => {
                    if let Ok((k, v)) = build::parse_parameter_status(&frame.body) {
                        let (k, v) = (k.to_string(), v.to_string());
                        self.set_param(&k, &v);
                    }
                }
                b'E' if error.is_none() => {
                    error = build::parse_error_fields(&frame.body).ok();
                }
                // A reset (DISCARD ALL) or DEALLOCATE ALL drops the prepared statements too.
                b'C' if frame.body.starts_with(b"DISCARD ALL")
                    || frame.body.starts_with(b"DEALLOCATE ALL") =>
                {
                    self.prepared.clear();
                }
                _ => {}
            }
        }
    }

    /// Reads one whole frame from the server (login and internal queries only; the hot path
    /// streams instead).
    pub async fn read_frame(&mut self, max_packet: u32) -> Result<proto::Frame> {
        use crate::net::ReadError;
        match crate::net::read_frame(&mut self.stream, &mut self.buf, max_packet).await {
            Ok(f) => Ok(f),
            Err(ReadError::Io(e)) => Err(Error::ServerIo(e)),
            Err(ReadError::Eof) => Err(Error::ServerGone),
            Err(ReadError::Frame(e)) => Err(Error::ServerProtocol(e.to_string())),
        }
    }

    /// The server's address text (host name or socket directory).
    pub fn cancel_host_text(&self) -> String {
        match &self.cancel.host {
            ServerHost::Tcp(h) => h.clone(),
            ServerHost::Unix(p) => p.display().to_string(),
        }
    }

    /// Sets the registry state, if registered.
    pub fn set_state(&self, state: ServerState) {
        if let Some(r) = &self.registration {
            r.info.set_state(state);
        }
    }

    /// True when this idle connection can no longer be used (peer closed or sent something).
    pub fn is_broken_while_idle(&self) -> bool {
        !self.buf.is_empty() || self.stream.is_readable_now()
    }
}
