//! The seam between a pool and the network: a [`Connector`] opens and logs in one server
//! connection. The pool's state machine only ever calls this trait, so it can be unit-tested
//! with a scripted connector and tokio's paused clock, without PostgreSQL.

use std::future::Future;
use std::pin::Pin;

use bytes::BytesMut;
use postgres_protocol::message::frontend;
use tokio::io::AsyncWriteExt;

use crate::error::{Error, Result};
use crate::server::{self, ServerConn, ServerCredential, ServerTarget};

/// The future a [`Connector`] returns: boxed once per server login (never per transaction).
pub type ConnectFuture<'a> = Pin<Box<dyn Future<Output = Result<ServerConn>> + Send + 'a>>;

/// The future of [`Connector::in_recovery`]: boxed once per primary login.
pub type RecoveryFuture<'a> = Pin<Box<dyn Future<Output = Result<bool>> + Send + 'a>>;

/// The leader confirmation query. Schema-qualified so no `search_path` trick can answer it.
const RECOVERY_QUERY: &str = "SELECT pg_catalog.pg_is_in_recovery()";

/// Opens one logged-in server connection for a pool.
///
/// Errors must keep their type: `Error::ServerConnect` (with the io::Error) for a socket that
/// could not be opened, `Error::ServerLogin` (with the server's fields) for a refused login,
/// `Error::ServerAuth` for an authentication we cannot do. The pool decides on them (retry,
/// cache, fail the queue) and discovery reads `Error::is_role_change_signal` from them.
pub trait Connector: Send + Sync + 'static {
    /// Connects to `target` and logs in with `cred`, bounded by the target's connect timeout.
    fn connect<'a>(
        &'a self,
        target: &'a ServerTarget,
        cred: &'a ServerCredential,
        max_packet: u32,
    ) -> ConnectFuture<'a>;

    /// `pg_is_in_recovery()` on a freshly logged-in connection: how a leader is confirmed
    /// before it takes writes, and how every new connection to it is checked while it is not
    /// re-confirmed. The connection is left idle (ReadyForQuery `I`) on success.
    fn in_recovery<'a>(&'a self, conn: &'a mut ServerConn, max_packet: u32) -> RecoveryFuture<'a> {
        Box::pin(query_in_recovery(conn, max_packet))
    }
}

/// Runs [`RECOVERY_QUERY`] and reads its one boolean (`t`/`f`).
pub async fn query_in_recovery(conn: &mut ServerConn, max_packet: u32) -> Result<bool> {
    let mut out = BytesMut::with_capacity(64);
    frontend::query(RECOVERY_QUERY, &mut out).map_err(|e| Error::ServerProtocol(e.to_string()))?;
    conn.stream.write_all(&out).await.map_err(Error::ServerIo)?;
    let mut answer = None;
    let mut failed = None;
    loop {
        let frame = conn.read_frame(max_packet).await?;
        match frame.tag {
            // DataRow: int16 column count, int32 length, value.
            b'D' if answer.is_none() => {
                let b = &frame.body;
                answer = match &b[..] {
                    [0, 1, 0, 0, 0, 1, v] => Some(*v == b't'),
                    _ => None,
                };
            }
            b'E' => failed = crate::proto::build::parse_error_fields(&frame.body).ok(),
            b'Z' => {
                conn.tx_status = frame.body.first().copied().unwrap_or(b'I');
                break;
            }
            _ => {}
        }
    }
    if let Some(f) = failed {
        return Err(Error::ServerLogin(Box::new(f)));
    }
    answer.ok_or_else(|| Error::ServerProtocol("no answer to pg_is_in_recovery()".into()))
}

/// The real connector: TCP or Unix socket to PostgreSQL (`server::connect`).
#[derive(Default, Clone)]
pub struct PgConnector {
    /// Host names are resolved through this cache (dns_max_ttl, dns_nxdomain_ttl).
    pub dns: std::sync::Arc<server::dns::DnsCache>,
}

impl Connector for PgConnector {
    fn connect<'a>(
        &'a self,
        target: &'a ServerTarget,
        cred: &'a ServerCredential,
        max_packet: u32,
    ) -> ConnectFuture<'a> {
        Box::pin(server::connect(target, cred, max_packet, &self.dns))
    }
}
