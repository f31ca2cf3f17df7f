//! The pooler's one error type and the only place that maps errors to what a client is told
//! (severity, SQLSTATE, PgBouncer's exact text). Depends on nothing else in the crate except the
//! protocol's decoded error fields.

use std::io;

use crate::proto::build::{ErrorFields, Severity};

/// SQLSTATE codes the pooler itself uses.
pub mod sqlstate {
    /// Every pooler-generated error, as PgBouncer does.
    pub const PROTOCOL_VIOLATION: &str = "08P01";
    /// RELOAD failed on the console.
    pub const CONFIG_FILE_ERROR: &str = "F0000";
    /// Informational notice.
    pub const SUCCESSFUL_COMPLETION: &str = "00000";
    /// The server is being shut down by an administrator (fast/immediate stop, switchover).
    pub const ADMIN_SHUTDOWN: &str = "57P01";
    /// The server is restarting after a crash of another backend.
    pub const CRASH_SHUTDOWN: &str = "57P02";
    /// The database system is starting up / shutting down / in recovery mode.
    pub const CANNOT_CONNECT_NOW: &str = "57P03";
    /// A write on a read-only server (a demoted primary, a replica).
    pub const READ_ONLY_SQL_TRANSACTION: &str = "25006";
}

/// Which party an error came from: it decides whether the other side can go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The client misbehaved or went away.
    Client,
    /// The server failed or refused.
    Server,
    /// The pooler decided (limits, timeouts, shutdown).
    Pooler,
}

/// Everything that can end or refuse a client's request.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("client I/O: {0}")]
    ClientIo(#[source] io::Error),
    #[error("client closed the connection")]
    ClientGone,
    #[error("client protocol violation: {0}")]
    ClientProtocol(String),
    #[error("server I/O: {0}")]
    ServerIo(#[source] io::Error),
    #[error("server closed the connection")]
    ServerGone,
    #[error("server protocol violation: {0}")]
    ServerProtocol(String),
    /// The server refused the login: forwarded with the server's own SQLSTATE. Displayed as the
    /// server's message alone, as PgBouncer's `closing because:` line shows it.
    #[error("{}", .0.message)]
    ServerLogin(Box<ErrorFields>),
    /// A replication connection's own server refused the login. PgBouncer closes such a client
    /// with its generic reason (08P01, as every pooler-side close) and only logs the server's
    /// error, unlike a pooled login whose server error is forwarded.
    #[error("login failed")]
    ReplicationLoginFailed,
    /// We could not do the authentication the server asked for.
    #[error("server login failed: {0}")]
    ServerAuth(String),
    #[error("server login has been failing, cached error: {0} (server_login_retry)")]
    ServerLoginRetry(String),
    /// Opening the socket failed or timed out (`TimedOut`). The io::Error is kept whole so the
    /// pool can tell "connection refused" (a stopped or demoted server) from the rest.
    #[error("server connect to {addr}: {source}")]
    ServerConnect {
        /// `host:port` (or the socket directory and port) that was tried.
        addr: String,
        #[source]
        source: io::Error,
    },
    /// The server logged in but does not satisfy the database's `target_session_attrs`
    /// (PgBouncer's reason text); with a host list the next host is tried.
    #[error("server does not satisfy target_session_attrs")]
    TargetSessionAttrs {
        /// `host:port` of the server.
        addr: String,
    },
    /// No member of the database's pool set serves the role asked for (no primary known yet).
    #[error("no server available for role {0}")]
    NoServerForRole(&'static str),
    /// A SET of tracked parameters failed on the server.
    #[error("invalid server parameter")]
    InvalidServerParameter,
    #[error("no more connections allowed (max_client_conn)")]
    MaxClientConn,
    #[error("query_wait_timeout")]
    QueryWaitTimeout,
    #[error("client_idle_timeout")]
    ClientIdleTimeout,
    #[error("idle transaction timeout")]
    IdleTransactionTimeout,
    #[error("query timeout")]
    QueryTimeout,
    /// query_timeout passed while the client still waited for a server: PgBouncer's queue
    /// sweeper spells this one with an underscore.
    #[error("query_timeout")]
    QueryTimeoutWaiting,
    /// server_fast_close in session mode: the client's server was marked to close (RECONNECT, a
    /// changed database), and the session ends with it, as in PgBouncer.
    #[error("database configuration changed")]
    DatabaseConfigChanged,
    #[error("client_login_timeout")]
    ClientLoginTimeout,
    /// The login timed out while the pool's first server login (its welcome) was pending.
    #[error("client_login_timeout (server down)")]
    ClientLoginTimeoutServerDown,
    #[error("no such database: {0}")]
    NoSuchDatabase(String),
    #[error("password authentication failed")]
    PasswordAuthFailed,
    #[error("SASL authentication failed")]
    SaslAuthFailed,
    #[error("\"trust\" authentication failed")]
    TrustAuthFailed,
    /// auth_query found no row for the user: PgBouncer has no mock login there and says so.
    #[error("no such user")]
    NoSuchUser,
    /// A configuration the login cannot use (the reason is logged where it is found, as
    /// PgBouncer logs it; the client only learns this).
    #[error("bouncer config error")]
    BouncerConfig,
    #[error("no username supplied")]
    NoUsername,
    #[error("unsupported startup parameter: {0}")]
    UnsupportedStartupParameter(String),
    #[error("unsupported startup parameter in options: {0}")]
    UnsupportedOptionsParameter(String),
    #[error("unsupported options startup parameter: only '-c config=val' and '--config=val' are allowed")]
    UnsupportedOptions,
    #[error("old V2 protocol not supported")]
    OldProtocol,
    #[error("pooler is shutting down")]
    ShuttingDown,
    #[error("server shutting down")]
    ServerShuttingDown,
    /// The process stops now (SHUTDOWN, SIGQUIT, a second SIGINT/SIGTERM, shutdown_timeout):
    /// the client's socket is closed without a word, as PgBouncer's exit closes it.
    #[error("pooler exiting")]
    Exiting,
    #[error("database \"{0}\" is disabled")]
    DatabaseDisabled(String),
    /// The database auth_query runs in (auth_dbname) is DISABLEd.
    #[error("authentication database \"{0}\" is disabled")]
    AuthDatabaseDisabled(String),
    #[error("not allowed")]
    NotAllowed,
    #[error("server conn crashed?")]
    ServerCrashed,
    #[error("transaction blocks not allowed in statement pooling mode")]
    StatementModeTransaction,
    #[error("database removed")]
    DatabaseRemoved,
    #[error("admin forced disconnect")]
    AdminForcedDisconnect,
    #[error("client connections exceeded (max_user_connections)")]
    MaxUserConnections,
    #[error("client connections exceeded (max_db_client_connections)")]
    MaxDbClientConnections,
    #[error("client connections exceeded (max_user_client_connections)")]
    MaxUserClientConnections,
    #[error("transaction timeout")]
    TransactionTimeout,
    /// disable_pqexec: the client sent a simple Query.
    #[error("PQexec disallowed")]
    PqexecDisallowed,
    /// auth_type peer (or the console's own-user rule) refused a Unix-socket client.
    #[error("unix socket login rejected")]
    UnixSocketLoginRejected,
    /// Host lists: the host a client was queued on is unreachable (the route moves the client
    /// to another host; a client only sees it when every try failed).
    #[error("server connection failed")]
    HostDown,
    /// SUSPEND did not find the client at a boundary within suspend_timeout.
    #[error("suspend_timeout")]
    SuspendTimeout,
    /// client_tls_sslmode demands TLS and the client did not ask for it.
    #[error("SSL required")]
    SslRequired,
    /// The client's TLS handshake failed (bad or missing certificate, protocol mismatch).
    #[error("TLS handshake failed: {0}")]
    ClientTls(String),
    /// auth cert: no certificate, or its CN is not the user name.
    #[error("certificate authentication failed")]
    CertAuthFailed,
    /// auth_type ldap / an HBA ldap line: the directory did not accept the password (the reason
    /// is logged, never told).
    #[error("LDAP authentication failed")]
    LdapAuthFailed,
    /// auth_type ldap for a database with an auth_user (logged; the client gets PgBouncer's
    /// `bouncer config error`).
    #[error("LDAP can't be used together with database authentication")]
    LdapWithAuthUser,
    /// An HBA line with method reject matched.
    #[error("login rejected")]
    LoginRejected,
    /// No HBA line matched.
    #[error("no authentication method is found")]
    NoAuthMethod,
    /// auth_query could not run or answered in a shape we cannot use (logged; the client is told
    /// only that the login failed, never the query or its secrets).
    #[error("auth_query failed: {0}")]
    AuthQuery(String),
    /// The server refused TLS that server_tls_sslmode requires, or its certificate failed the check.
    #[error("server TLS: {0}")]
    ServerTls(String),
    /// No confirmed leader (or usable member for the role) came within failover_hold_timeout:
    /// the queued client gets this, in the style of PgBouncer's `query_wait_timeout`.
    #[error("failover_hold_timeout")]
    FailoverHoldTimeout,
    /// A new connection to a member serving the primary role found it in recovery (a demoted
    /// or not yet promoted node): never used for writes.
    #[error("server {addr} is in recovery, not a primary")]
    ServerInRecovery {
        /// `host:port` of the member.
        addr: String,
    },
    /// A Parse of a statement name the client still holds, with prepared statements tracked.
    /// PgBouncer closes the client rather than answer 42P05 mid-pipeline, and so do we.
    #[error("prepared statement name is already in use")]
    PreparedStatementInUse,
    /// A Bind or Describe of a statement name the client does not hold (never prepared, closed,
    /// or forgotten by DEALLOCATE ALL / DISCARD ALL), with prepared statements tracked: closed
    /// as PgBouncer does.
    #[error("prepared statement did not exist")]
    PreparedStatementMissing,
    /// The member a client queued on stopped serving the client's role (a failover hold, a ban,
    /// a removed member): the route picks again. Never reaches a client.
    #[error("member withdrawn from the role; pick again")]
    Rerouted,
}

impl Error {
    /// Which side failed.
    pub fn side(&self) -> Side {
        use Error::*;
        match self {
            ClientIo(_)
            | ClientGone
            | ClientProtocol(_)
            | PreparedStatementInUse
            | PreparedStatementMissing => Side::Client,
            ServerIo(_)
            | ServerGone
            | ServerProtocol(_)
            | ServerLogin(_)
            | ServerAuth(_)
            | ServerLoginRetry(_)
            | ServerConnect { .. }
            | TargetSessionAttrs { .. }
            | NoServerForRole(_)
            | ServerInRecovery { .. }
            | InvalidServerParameter
            | ReplicationLoginFailed
            | ServerTls(_)
            | ServerCrashed => Side::Server,
            ClientTls(_) => Side::Client,
            _ => Side::Pooler,
        }
    }

    /// Whether the client is to be told anything: its socket is believed healthy, and this is
    /// not an exit (which PgBouncer's clients see as a plain close).
    pub fn client_reachable(&self) -> bool {
        !matches!(
            self,
            Error::ClientIo(_) | Error::ClientGone | Error::Exiting | Error::ClientTls(_)
        )
    }

    /// The one mapping from an error to (severity, SQLSTATE, message) for the client.
    /// Pooler errors close the connection, so they are FATAL with 08P01 as in PgBouncer; a server's
    /// login error keeps the server's SQLSTATE (PgBouncer 1.20+).
    pub fn to_response(&self) -> (Severity, String, String) {
        use Error::*;
        match self {
            ServerLogin(fields) => (Severity::Fatal, fields.code.clone(), fields.message.clone()),
            ServerAuth(msg) => (
                Severity::Fatal,
                sqlstate::PROTOCOL_VIOLATION.to_string(),
                format!("server login failed: {msg}"),
            ),
            ClientProtocol(msg) => (
                Severity::Fatal,
                sqlstate::PROTOCOL_VIOLATION.to_string(),
                msg.clone(),
            ),
            ServerIo(_) | ServerGone | ServerProtocol(_) => (
                Severity::Fatal,
                sqlstate::PROTOCOL_VIOLATION.to_string(),
                "server conn crashed?".to_string(),
            ),
            ClientTls(_) => (
                Severity::Fatal,
                sqlstate::PROTOCOL_VIOLATION.to_string(),
                "TLS handshake failed".to_string(),
            ),
            // Never tell a client how auth_query failed: it would leak the query's shape.
            AuthQuery(_) | LdapWithAuthUser => (
                Severity::Fatal,
                sqlstate::PROTOCOL_VIOLATION.to_string(),
                "bouncer config error".to_string(),
            ),
            ServerConnect { .. } | ServerTls(_) => (
                Severity::Fatal,
                sqlstate::PROTOCOL_VIOLATION.to_string(),
                "server connection failed".to_string(),
            ),
            other => (
                Severity::Fatal,
                sqlstate::PROTOCOL_VIOLATION.to_string(),
                other.to_string(),
            ),
        }
    }

    /// True when this error suggests the server changed role or is going away (a stopped,
    /// restarting or demoted PostgreSQL): discovery should look again now rather than at its
    /// next poll. Connection refused (or a vanished Unix socket), an admin/crash shutdown or
    /// "starting up / shutting down" at login (57P01/57P02/57P03), and a write refused by a
    /// read-only server (25006).
    pub fn is_role_change_signal(&self) -> bool {
        match self {
            Error::ServerConnect { source, .. } => matches!(
                source.kind(),
                io::ErrorKind::ConnectionRefused | io::ErrorKind::NotFound
            ),
            Error::ServerLogin(fields) => is_role_change_sqlstate(&fields.code),
            Error::ServerInRecovery { .. } => true,
            _ => false,
        }
    }

    /// True for a server login refusal that is temporary (the server is starting up or
    /// shutting down): queued clients keep waiting and the login is retried, as PgBouncer does.
    pub fn is_temporary_login_failure(&self) -> bool {
        matches!(self, Error::ServerLogin(f) if f.code == sqlstate::CANNOT_CONNECT_NOW)
    }

    /// True when this is a peer simply going away: logged at debug, not error.
    pub fn is_disconnect(&self) -> bool {
        match self {
            Error::ClientGone | Error::ServerGone => true,
            Error::ClientIo(e) | Error::ServerIo(e) => matches!(
                e.kind(),
                io::ErrorKind::ConnectionReset
                    | io::ErrorKind::BrokenPipe
                    | io::ErrorKind::UnexpectedEof
                    | io::ErrorKind::ConnectionAborted
            ),
            _ => false,
        }
    }
}

/// True for the SQLSTATEs a server sends when it is shutting down, starting up or read-only:
/// 57P01 admin_shutdown, 57P02 crash_shutdown, 57P03 cannot_connect_now, 25006
/// read_only_sql_transaction. The session can test a forwarded ErrorResponse with this too.
pub fn is_role_change_sqlstate(code: &str) -> bool {
    matches!(
        code,
        sqlstate::ADMIN_SHUTDOWN
            | sqlstate::CRASH_SHUTDOWN
            | sqlstate::CANNOT_CONNECT_NOW
            | sqlstate::READ_ONLY_SQL_TRANSACTION
    )
}

/// Result with the pooler's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pooler_errors_are_fatal_08p01_with_pgbouncer_texts() {
        let cases = [
            (
                Error::MaxClientConn,
                "no more connections allowed (max_client_conn)",
            ),
            (Error::QueryWaitTimeout, "query_wait_timeout"),
            (
                Error::ClientLoginTimeoutServerDown,
                "client_login_timeout (server down)",
            ),
            (Error::IdleTransactionTimeout, "idle transaction timeout"),
            (Error::QueryTimeout, "query timeout"),
            (Error::QueryTimeoutWaiting, "query_timeout"),
            (
                Error::DatabaseConfigChanged,
                "database configuration changed",
            ),
            (Error::TransactionTimeout, "transaction timeout"),
            (Error::PqexecDisallowed, "PQexec disallowed"),
            (
                Error::MaxDbClientConnections,
                "client connections exceeded (max_db_client_connections)",
            ),
            (
                Error::MaxUserClientConnections,
                "client connections exceeded (max_user_client_connections)",
            ),
            (Error::UnixSocketLoginRejected, "unix socket login rejected"),
            (Error::ClientIdleTimeout, "client_idle_timeout"),
            (Error::NoSuchDatabase("x".into()), "no such database: x"),
            (Error::PasswordAuthFailed, "password authentication failed"),
            (Error::OldProtocol, "old V2 protocol not supported"),
            (Error::SslRequired, "SSL required"),
            (Error::CertAuthFailed, "certificate authentication failed"),
            (Error::LoginRejected, "login rejected"),
            (Error::NoAuthMethod, "no authentication method is found"),
            (Error::AuthQuery("secret".into()), "bouncer config error"),
            (
                Error::AuthDatabaseDisabled("authdb".into()),
                "authentication database \"authdb\" is disabled",
            ),
            (Error::LdapAuthFailed, "LDAP authentication failed"),
            (Error::LdapWithAuthUser, "bouncer config error"),
            (
                Error::PreparedStatementInUse,
                "prepared statement name is already in use",
            ),
            (
                Error::PreparedStatementMissing,
                "prepared statement did not exist",
            ),
        ];
        for (err, text) in cases {
            let (sev, code, msg) = err.to_response();
            assert_eq!(sev, Severity::Fatal);
            assert_eq!(code, "08P01");
            assert_eq!(msg, text);
        }
    }

    fn login_error(code: &str) -> Error {
        Error::ServerLogin(Box::new(ErrorFields {
            severity: "FATAL".into(),
            code: code.into(),
            message: "x".into(),
            detail: None,
            hint: None,
            all: vec![],
        }))
    }

    fn connect_error(kind: io::ErrorKind) -> Error {
        Error::ServerConnect {
            addr: "127.0.0.1:5432".into(),
            source: io::Error::from(kind),
        }
    }

    #[test]
    fn role_change_signals_are_recognised() {
        assert!(connect_error(io::ErrorKind::ConnectionRefused).is_role_change_signal());
        assert!(connect_error(io::ErrorKind::NotFound).is_role_change_signal());
        assert!(!connect_error(io::ErrorKind::TimedOut).is_role_change_signal());
        for code in ["57P01", "57P02", "57P03", "25006"] {
            assert!(login_error(code).is_role_change_signal(), "{code}");
        }
        assert!(!login_error("28P01").is_role_change_signal());
        assert!(!login_error("3D000").is_role_change_signal());
        assert!(!Error::QueryWaitTimeout.is_role_change_signal());
        assert!(!Error::ServerGone.is_role_change_signal());
    }

    #[test]
    fn only_57p03_is_a_temporary_login_failure() {
        assert!(login_error("57P03").is_temporary_login_failure());
        assert!(!login_error("57P01").is_temporary_login_failure());
        assert!(!login_error("28P01").is_temporary_login_failure());
        assert!(!connect_error(io::ErrorKind::ConnectionRefused).is_temporary_login_failure());
    }

    #[test]
    fn connect_errors_keep_their_io_kind_and_a_pgbouncer_text() {
        let e = connect_error(io::ErrorKind::ConnectionRefused);
        let src = std::error::Error::source(&e).expect("source kept");
        let io = src.downcast_ref::<io::Error>().expect("an io::Error");
        assert_eq!(io.kind(), io::ErrorKind::ConnectionRefused);
        let (_, code, msg) = e.to_response();
        assert_eq!(
            (code.as_str(), msg.as_str()),
            ("08P01", "server connection failed")
        );
    }

    #[test]
    fn server_login_error_keeps_server_sqlstate() {
        let fields = ErrorFields {
            severity: "FATAL".into(),
            code: "28P01".into(),
            message: "password authentication failed for user \"x\"".into(),
            detail: None,
            hint: None,
            all: vec![],
        };
        let (_, code, msg) = Error::ServerLogin(Box::new(fields)).to_response();
        assert_eq!(code, "28P01");
        assert!(msg.starts_with("password authentication failed"));
    }
}
