//! Replication connections (PgBouncer 1.23+): a client whose startup packet carries
//! `replication=database` (logical) or `replication=true` (physical) gets a server connection of
//! its own, logged in with the same `replication` parameter, never taken from or given back to a
//! pool. After the welcome the bytes are relayed both ways untouched (replication commands,
//! CopyBoth streams) until either side closes; the server is then closed.
//! Must not share anything with the pools beyond the config they are built from.

use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::registry::{ClientInfo, ClientState};
use super::startup::StartupParams;
use crate::config::{Config, DatabaseConfig};
use crate::error::{Error, Result};
use crate::logsafe::Clean;
use crate::net::Stream;
use crate::pool;
use crate::proto::build;
use crate::server::{self, ServerConn, ServerCredential};

/// PgBouncer's SHOW CLIENTS `replication` column for a startup value.
pub fn kind(value: &str) -> &'static str {
    if value.eq_ignore_ascii_case("database") {
        "logical"
    } else {
        "physical"
    }
}

/// Opens the dedicated server connection: the database's target, the client's tracked
/// parameters, and `replication` as the client gave it.
pub async fn open(
    cfg: &Config,
    db: &DatabaseConfig,
    params: &StartupParams<'_>,
    replication: &str,
    scram_keys: Option<([u8; 32], [u8; 32])>,
    dns: &crate::server::dns::DnsCache,
) -> Result<ServerConn> {
    let server_user = pool::server_user(db, params.user);
    let mut target = pool::target_for(cfg, db, server_user);
    for (k, v) in &params.tracked {
        if !target
            .startup_params
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case(k))
        {
            target.startup_params.push((k.to_string(), v.to_string()));
        }
    }
    target.startup_params.extend(
        params
            .passthrough
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    target
        .startup_params
        .push(("replication".to_string(), replication.to_string()));
    let mut cred = pool::credential_for(cfg, db, server_user);
    if let (ServerCredential::ScramSecretOnly, Some((client_key, server_key))) = (&cred, scram_keys)
    {
        // SCRAM pass-through, as for pooled servers: the client's proof gave us the keys.
        cred = ServerCredential::ScramKeys {
            client_key,
            server_key,
        };
    }
    let started = std::time::Instant::now();
    server::connect(&target, &cred, cfg.general.max_packet_size, dns)
        .await
        .map_err(|e| match e {
            Error::ServerLogin(fields) => {
                // The server's words go to the log only, in PgBouncer's form, then the server's
                // disconnect line (the client's follows with the same reason).
                tracing::warn!(
                    "server login failed: {} {}",
                    Clean(&fields.severity),
                    Clean(&fields.message)
                );
                if cfg.general.log_disconnections {
                    tracing::info!(
                        "S {}/{}@{}:{} closing because: login failed (age={}s)",
                        Clean(params.database),
                        Clean(&target.user),
                        target.host_text(),
                        target.port,
                        started.elapsed().as_secs()
                    );
                }
                Error::ReplicationLoginFailed
            }
            other => other,
        })
}

/// Relays both ways until EITHER side ends. What one side sent before its end is passed on
/// first (a client's Terminate reaches the server; a server's last ErrorResponse reaches the
/// client), then the relay is over and the server is closed by the caller. Waiting for the
/// other side to end as well (as `copy_bidirectional` does) would keep the session, and its
/// max_*_client_connections place, alive for as long as a busy or quiet server does not
/// notice that its client left.
async fn pump<C, S>(client: &mut C, server: &mut S) -> Result<()>
where
    C: AsyncRead + AsyncWrite + Unpin,
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut from_client, mut to_client) = tokio::io::split(client);
    let (mut from_server, mut to_server) = tokio::io::split(server);
    let ended = |r: std::io::Result<u64>| match r {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(()),
        Err(e) => Err(Error::ServerIo(e)),
    };
    tokio::select! {
        r = tokio::io::copy(&mut from_client, &mut to_server) => ended(r),
        r = tokio::io::copy(&mut from_server, &mut to_client) => ended(r),
    }
}

/// Sends the welcome (AuthenticationOk, the server's own parameters, our cancel key) and relays until one side
/// closes or the client is killed.
pub async fn relay(
    info: &Arc<ClientInfo>,
    client: &mut Stream,
    mut server: ServerConn,
) -> Result<()> {
    let mut out = BytesMut::with_capacity(512);
    // The login sent no AuthenticationOk (pooled clients get it at the head of their welcome).
    build::auth_ok(&mut out);
    for (k, v) in &server.params {
        build::parameter_status(&mut out, k, v);
    }
    build::backend_key_data(&mut out, info.cancel_key.0, info.cancel_key.1);
    build::ready_for_query(&mut out, server.tx_status);
    // Anything the server sent after its ReadyForQuery already sits in its read buffer.
    out.extend_from_slice(&server.buf);
    server.buf.clear();
    client.write_all(&out).await.map_err(Error::ClientIo)?;
    // Cancel requests for this client go to its server, as for pooled ones.
    *info.linked.lock() = Some((server.id, server.cancel.clone()));
    info.set_state(ClientState::Active);
    let result = tokio::select! {
        r = pump(client, &mut server.stream) => r,
        _ = info.signal(false) => Err(info
            .kill_reason
            .lock()
            .map(|r| r.error())
            .unwrap_or(Error::AdminForcedDisconnect)),
    };
    *info.linked.lock() = None;
    result
}
