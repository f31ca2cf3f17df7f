//! The seam between a pool and the network: a [`Connector`] opens and logs in one server
//! connection. The pool's state machine only ever calls this trait, so it can be unit-tested
//! with a scripted connector and tokio's paused clock, without PostgreSQL.

use std::future::Future;
use std::pin::Pin;

use crate::error::Result;
use crate::server::{self, ServerConn, ServerCredential, ServerTarget};

/// The future a [`Connector`] returns: boxed once per server login (never per transaction).
pub type ConnectFuture<'a> = Pin<Box<dyn Future<Output = Result<ServerConn>> + Send + 'a>>;

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
}

/// The real connector: TCP or Unix socket to PostgreSQL (`server::connect`).
#[derive(Debug, Default, Clone, Copy)]
pub struct PgConnector;

impl Connector for PgConnector {
    fn connect<'a>(
        &'a self,
        target: &'a ServerTarget,
        cred: &'a ServerCredential,
        max_packet: u32,
    ) -> ConnectFuture<'a> {
        Box::pin(server::connect(target, cred, max_packet))
    }
}
