//! The admin console on the virtual database `pgbouncer`: welcome, the simple-query loop, and the
//! dispatch of one command per statement. Commands only read snapshots of the registries and call
//! explicit control methods; they never touch a client's or a server's socket.
//!
//! Layout: `command.rs` parses a statement and dispatches it; `show/` holds one entry per SHOW
//! subcommand; `control.rs` the control commands; `set.rs` SET.

pub mod command;
mod control;
mod set;
pub mod show;

use std::sync::Arc;

use bytes::BytesMut;

use crate::context::Context;
use crate::error::{sqlstate, Error, Result};
use crate::net::{self, ReadError, Stream};
use crate::pool::stats::PoolStats;
use crate::proto::build;
use crate::session::registry::{ClientInfo, ClientState};

/// Longest console message accepted: a statement, never data.
const MAX_CONSOLE_MSG: u32 = 1024 * 1024;

/// The version string the console reports (server_version and SHOW VERSION).
pub const PGBOUNCER_VERSION: &str = "1.25.2";

/// An authenticated console session.
pub struct AdminSession {
    /// Shared state of the pooler.
    pub ctx: Arc<Context>,
    /// This client's registry entry.
    pub info: Arc<ClientInfo>,
    /// The client socket.
    pub stream: Stream,
    /// Who logged in.
    pub user: String,
    /// `admin_users` member (may run control commands); otherwise stats-only.
    pub admin: bool,
}

/// What a command produced.
pub enum Reply {
    /// Rows, tag `SHOW`: column (name, type oid) + text values.
    Rows {
        columns: Vec<(&'static str, u32)>,
        rows: Vec<Vec<Option<String>>>,
    },
    /// Just a command tag (with optional notice before it).
    Tag {
        tag: String,
        notice: Option<(String, Option<String>)>,
    },
    /// Close the connection without answering (SHUTDOWN).
    Close,
}

/// Type OIDs used by console columns.
pub mod oid {
    pub const TEXT: u32 = 25;
    pub const INT4: u32 = 23;
    pub const INT8: u32 = 20;
    pub const NUMERIC: u32 = 1700;
}

/// A command failed: ERROR (not FATAL), the session goes on.
#[derive(Debug)]
pub struct CommandError {
    pub code: &'static str,
    pub message: String,
}

impl CommandError {
    /// An 08P01 error with `message`.
    pub fn new(message: impl Into<String>) -> Self {
        CommandError {
            code: sqlstate::PROTOCOL_VIOLATION,
            message: message.into(),
        }
    }
}

/// Serves the console until the client leaves.
pub async fn serve(mut s: AdminSession) -> Result<()> {
    let mut out = BytesMut::with_capacity(512);
    // AuthenticationOk was sent by the login.
    for (k, v) in [
        ("server_version", format!("{PGBOUNCER_VERSION}/bouncer")),
        ("client_encoding", "UTF8".into()),
        ("server_encoding", "UTF8".into()),
        ("DateStyle", "ISO".into()),
        ("TimeZone", "GMT".into()),
        ("standard_conforming_strings", "on".into()),
        ("is_superuser", "on".into()),
        // PgBouncer 1.26 announces itself at login: its version and the console's own pool
        // (statement mode, no prepared-statement tracking), as its suite's test_parameter_status
        // checks.
        ("pgbouncer.version", PGBOUNCER_VERSION.into()),
        ("pgbouncer.max_prepared_statements", "0".into()),
        ("pgbouncer.pool_mode", "statement".into()),
    ] {
        build::parameter_status(&mut out, k, &v);
    }
    build::backend_key_data(&mut out, s.info.cancel_key.0, s.info.cancel_key.1);
    build::ready_for_query(&mut out, b'I');
    s.stream.send(&out).await.map_err(Error::ClientIo)?;
    s.info.set_state(ClientState::Active);

    let mut buf = BytesMut::with_capacity(1024);
    loop {
        let frame = tokio::select! {
            r = net::read_frame(&mut s.stream, &mut buf, MAX_CONSOLE_MSG) => match r {
                Ok(f) => f,
                Err(ReadError::Eof) => return Ok(()),
                Err(ReadError::Io(e)) => return Err(Error::ClientIo(e)),
                Err(ReadError::Frame(e)) => return Err(Error::ClientProtocol(e.to_string())),
            },
            _ = s.ctx.shutdown.cancelled() => return Ok(()),
            _ = s.info.signal(false) => {
                // KILL_CLIENT on a console session: tell it why, as PgBouncer does (an exit
                // says nothing).
                let why = killed(&s.info);
                if why.client_reachable() {
                    let _ = crate::session::send_error(&mut s.stream, &why).await;
                }
                return Ok(());
            }
        };
        out.clear();
        match frame.tag {
            b'Q' => {
                // Counted on database `pgbouncer`, as PgBouncer does.
                let stats = &s.ctx.stats.console;
                PoolStats::add(&stats.query_count, 1);
                PoolStats::add(&stats.xact_count, 1);
                let text = String::from_utf8_lossy(&frame.body);
                let text = text.trim_end_matches('\0').to_string();
                match command::run(&s, &text).await {
                    Ok(Reply::Close) => return Ok(()),
                    Ok(reply) => write_reply(&mut out, reply),
                    Err(e) => {
                        tracing::warn!("{}", crate::logsafe::Clean(&e.message));
                        build::error_response(&mut out, build::Severity::Error, e.code, &e.message)
                    }
                }
                build::ready_for_query(&mut out, b'I');
            }
            b'X' => return Ok(()),
            b'P' | b'B' | b'E' | b'D' | b'S' | b'C' | b'H' => {
                build::error_response(
                    &mut out,
                    build::Severity::Error,
                    sqlstate::PROTOCOL_VIOLATION,
                    "extended query protocol not supported by admin console",
                );
                let _ = s.stream.send(&out).await;
                return Ok(());
            }
            other => {
                build::error_response(
                    &mut out,
                    build::Severity::Error,
                    sqlstate::PROTOCOL_VIOLATION,
                    &format!("unsupported packet type for admin console: {other}"),
                );
                let _ = s.stream.send(&out).await;
                return Ok(());
            }
        }
        s.stream.send(&out).await.map_err(Error::ClientIo)?;
    }
}

/// What KILL_CLIENT on a console session tells it (the session layer sends it).
fn killed(info: &ClientInfo) -> Error {
    info.kill_reason
        .lock()
        .map(|r| r.error())
        .unwrap_or(Error::AdminForcedDisconnect)
}

fn write_reply(out: &mut BytesMut, reply: Reply) {
    match reply {
        Reply::Rows { columns, rows } => {
            build::row_description(out, &columns);
            for row in &rows {
                let vals: Vec<Option<&[u8]>> = row
                    .iter()
                    .map(|v| v.as_deref().map(str::as_bytes))
                    .collect();
                build::data_row(out, &vals);
            }
            build::command_complete(out, "SHOW");
        }
        Reply::Tag { tag, notice } => {
            if let Some((msg, detail)) = notice {
                build::notice_response(
                    out,
                    sqlstate::SUCCESSFUL_COMPLETION,
                    &msg,
                    detail.as_deref(),
                );
            }
            build::command_complete(out, &tag);
        }
        Reply::Close => {}
    }
}
