//! The control commands: PAUSE, RESUME, DISABLE, ENABLE, RECONNECT, KILL, KILL_CLIENT,
//! WAIT_CLOSE, RELOAD, SHUTDOWN, SUSPEND. Admin users only. Messages and checks follow PgBouncer
//! 1.25's `admin.c` (`no such database: x`, `already suspended/paused`, ...).
//!
//! The work itself is done by `Context` methods (pause/resume/kill/reload/drain); this file only
//! validates, logs "X command issued" like PgBouncer, and answers.

use std::time::Duration;

use super::command::Cmd;
use super::{CommandError, Reply};
use crate::context::Phase;
use crate::error::sqlstate;
use crate::session::registry::{ClientState, KillReason};
use crate::stats::view::ADMIN_DB;

/// How often PAUSE / WAIT_CLOSE look again while they wait.
const POLL: Duration = Duration::from_millis(20);

/// Runs control command `name` (lower case); unknown names are `invalid command`.
pub async fn run(cmd: &Cmd<'_>, name: &str) -> Result<Reply, CommandError> {
    match name {
        "pause" => pause(cmd).await,
        "resume" => resume(cmd),
        "disable" => disable(cmd, true),
        "enable" => disable(cmd, false),
        "reconnect" => reconnect(cmd),
        "kill" => kill(cmd),
        "kill_client" => kill_client(cmd),
        "wait_close" => wait_close(cmd).await,
        "reload" => reload(cmd),
        "shutdown" => shutdown(cmd),
        "suspend" => suspend(cmd).await,
        _ => Err(cmd.syntax_error()),
    }
}

fn done(tag: &str) -> Result<Reply, CommandError> {
    Ok(Reply::Tag {
        tag: tag.into(),
        notice: None,
    })
}

fn issued(cmd: &Cmd<'_>, what: &str) {
    if cmd.arg.is_empty() {
        tracing::info!("{what} command issued");
    } else {
        tracing::info!("{what} '{}' command issued", cmd.arg);
    }
}

/// Checks that `db` names a database a client could connect to (a `[databases]` entry, or any
/// name when a `*` fallback exists), and is not the console's own.
fn database(cmd: &Cmd<'_>, verb: &str) -> Result<(), CommandError> {
    if cmd.arg == ADMIN_DB {
        return Err(CommandError::new(format!(
            "cannot {verb} admin db: {}",
            cmd.arg
        )));
    }
    if cmd.s.ctx.config().database(cmd.arg).is_none() {
        return Err(CommandError::new(format!("no such database: {}", cmd.arg)));
    }
    Ok(())
}

/// PAUSE or SUSPEND without a database is in force (PgBouncer's `cf_pause_mode`).
fn paused_all(cmd: &Cmd<'_>) -> bool {
    cmd.s.ctx.paused_all() || cmd.s.ctx.is_suspended()
}

/// SUSPEND: stop accepting connections and starting transactions; answer once no client is
/// inside one. A client still inside one after suspend_timeout is disconnected with
/// `suspend_timeout`, as PgBouncer does with sockets it cannot flush. RESUME undoes it.
async fn suspend(cmd: &Cmd<'_>) -> Result<Reply, CommandError> {
    if !cmd.arg.is_empty() {
        return Err(cmd.syntax_error());
    }
    cmd.require_admin()?;
    if paused_all(cmd) {
        return Err(CommandError::new("already suspended/paused"));
    }
    let ctx = &cmd.s.ctx;
    let cfg = ctx.config();
    let db_paused = cfg.databases.keys().any(|d| ctx.db_paused(d))
        || ctx.pools.all().iter().any(|p| ctx.db_paused(&p.key.db));
    if db_paused {
        return Err(CommandError::new("cannot suspend with paused databases"));
    }
    tracing::info!("SUSPEND command issued");
    ctx.set_suspended(true);
    let limit = cfg.general.suspend_timeout;
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let busy: Vec<_> = ctx
            .clients
            .all()
            .into_iter()
            .filter(|c| {
                !c.is_admin.load(std::sync::atomic::Ordering::Relaxed)
                    && matches!(c.state(), ClientState::Active | ClientState::Waiting)
            })
            .collect();
        if busy.is_empty() {
            return done("SUSPEND");
        }
        if !limit.is_zero() && tokio::time::Instant::now() >= deadline {
            for c in busy {
                c.kill(KillReason::SuspendTimeout);
            }
            return done("SUSPEND");
        }
        tokio::select! {
            _ = ctx.shutdown.cancelled() => return done("SUSPEND"),
            _ = tokio::time::sleep(POLL) => {}
        }
    }
}

/// PAUSE [db]: returns once the servers are back in the pool, then closes them.
async fn pause(cmd: &Cmd<'_>) -> Result<Reply, CommandError> {
    cmd.require_admin()?;
    if paused_all(cmd) {
        return Err(CommandError::new("already suspended/paused"));
    }
    issued(cmd, "PAUSE");
    if cmd.arg.is_empty() {
        cmd.s.ctx.pause_db(None).await;
    } else {
        database(cmd, "pause")?;
        cmd.s.ctx.pause_db(Some(cmd.arg)).await;
    }
    done("PAUSE")
}

fn resume(cmd: &Cmd<'_>) -> Result<Reply, CommandError> {
    cmd.require_admin()?;
    issued(cmd, "RESUME");
    let ctx = &cmd.s.ctx;
    if cmd.arg.is_empty() {
        if ctx.phase() != Phase::Running {
            return Err(CommandError::new("pooler is shutting down"));
        }
        if !paused_all(cmd) {
            return Err(CommandError::new("pooler is not paused/suspended"));
        }
        if ctx.is_suspended() {
            ctx.set_suspended(false);
        } else {
            ctx.resume_db(None);
        }
    } else {
        if cmd.arg != ADMIN_DB && ctx.config().database(cmd.arg).is_none() {
            return Err(CommandError::new(format!("no such database: {}", cmd.arg)));
        }
        if !ctx.db_paused(cmd.arg) {
            return Err(CommandError::new(format!(
                "database {} is not paused",
                cmd.arg
            )));
        }
        ctx.resume_db(Some(cmd.arg));
    }
    done("RESUME")
}

/// DISABLE db / ENABLE db: new clients of db are refused / accepted again.
fn disable(cmd: &Cmd<'_>, disable: bool) -> Result<Reply, CommandError> {
    cmd.require_admin()?;
    if cmd.arg.is_empty() {
        return Err(CommandError::new("a database is required"));
    }
    let (verb, tag) = if disable {
        ("disable", "DISABLE")
    } else {
        ("enable", "ENABLE")
    };
    issued(cmd, tag);
    database(cmd, verb)?;
    if disable {
        cmd.s.ctx.disabled_dbs.insert(cmd.arg.to_string());
    } else {
        cmd.s.ctx.disabled_dbs.remove(cmd.arg);
    }
    done(tag)
}

/// RECONNECT [db]: every server closes when it is next released.
fn reconnect(cmd: &Cmd<'_>) -> Result<Reply, CommandError> {
    cmd.require_admin()?;
    issued(cmd, "RECONNECT");
    let pools = if cmd.arg.is_empty() {
        cmd.s.ctx.pools.all()
    } else {
        database(cmd, "reconnect")?;
        cmd.s.ctx.pools.of_db(cmd.arg)
    };
    for p in pools {
        p.reconnect();
    }
    done("RECONNECT")
}

/// KILL [db]: drops the clients and servers at once and leaves the database paused.
fn kill(cmd: &Cmd<'_>) -> Result<Reply, CommandError> {
    cmd.require_admin()?;
    if paused_all(cmd) {
        return Err(CommandError::new("already suspended/paused"));
    }
    issued(cmd, "KILL");
    if cmd.arg.is_empty() {
        cmd.s.ctx.kill_db(None);
    } else {
        database(cmd, "kill")?;
        cmd.s.ctx.kill_db(Some(cmd.arg));
    }
    done("KILL")
}

/// KILL_CLIENT id: one client (by SHOW CLIENTS `id`) and its server.
fn kill_client(cmd: &Cmd<'_>) -> Result<Reply, CommandError> {
    cmd.require_admin()?;
    let id: u64 = cmd
        .arg
        .parse()
        .map_err(|_| CommandError::new("invalid client pointer supplied"))?;
    issued(cmd, "KILL_CLIENT");
    match cmd.s.ctx.clients.get(id) {
        Some(c) if c.state() != ClientState::Login => {
            c.kill(KillReason::AdminForced);
            done("KILL_CLIENT")
        }
        _ => Err(CommandError::new("client not found")),
    }
}

/// WAIT_CLOSE [db]: returns once no server (of db) is marked to close at release.
async fn wait_close(cmd: &Cmd<'_>) -> Result<Reply, CommandError> {
    cmd.require_admin()?;
    issued(cmd, "WAIT_CLOSE");
    if !cmd.arg.is_empty() {
        if cmd.arg == ADMIN_DB {
            return Err(CommandError::new(format!(
                "cannot wait in admin db: {}",
                cmd.arg
            )));
        }
        database(cmd, "wait in")?;
    }
    let ctx = &cmd.s.ctx;
    loop {
        let pending = ctx
            .servers
            .all()
            .iter()
            .any(|s| s.close_needed() && (cmd.arg.is_empty() || s.db == cmd.arg));
        if !pending {
            return done("WAIT_CLOSE");
        }
        tokio::select! {
            _ = ctx.shutdown.cancelled() => return done("WAIT_CLOSE"),
            _ = tokio::time::sleep(POLL) => {}
        }
    }
}

fn reload(cmd: &Cmd<'_>) -> Result<Reply, CommandError> {
    if !cmd.arg.is_empty() {
        return Err(cmd.syntax_error());
    }
    cmd.require_admin()?;
    tracing::info!("RELOAD command issued");
    if cmd.s.ctx.reload() {
        done("RELOAD")
    } else {
        Err(CommandError {
            code: sqlstate::CONFIG_FILE_ERROR,
            message: "RELOAD failed, see logs for additional details".into(),
        })
    }
}

/// SHUTDOWN: exit now, the console gets EOF. WAIT_FOR_SERVERS / WAIT_FOR_CLIENTS: SIGINT /
/// SIGTERM behaviour, answered with `SHUTDOWN`.
fn shutdown(cmd: &Cmd<'_>) -> Result<Reply, CommandError> {
    let phase = match cmd.arg.to_ascii_lowercase().as_str() {
        "" => Phase::Stopping,
        "wait_for_servers" => Phase::DrainServers,
        "wait_for_clients" => Phase::DrainClients,
        _ => return Err(cmd.syntax_error()),
    };
    cmd.require_admin()?;
    match phase {
        Phase::Stopping => {
            tracing::info!("SHUTDOWN command issued");
            cmd.s.ctx.enter(Phase::Stopping);
            Ok(Reply::Close)
        }
        _ => {
            tracing::info!("SHUTDOWN {} command issued", cmd.arg.to_ascii_uppercase());
            cmd.s.ctx.begin_drain(phase);
            done("SHUTDOWN")
        }
    }
}
