//! SHOW CLIENTS, SERVERS, SOCKETS and ACTIVE_SOCKETS: one row per connection, PgBouncer 1.25's
//! 21 columns (SOCKETS adds its 7 buffer columns).
//!
//! What we cannot know is shown as PgBouncer shows "none" (`tls` is empty for plain sockets), no
//! peer PID of Unix-socket clients (0), no per-socket buffer positions
//! (0). `ptr`/`link` are stable per-connection tokens (there are no C pointers to print).
//! Timestamps are `YYYY-MM-DD HH:MM:SS UTC`.

use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{num, rows, text, Cmd};
use crate::admin::{oid, CommandError, Reply};
use crate::server::ServerState;
use crate::session::registry::{now_us, ClientInfo, ClientState};
use crate::stats::view::{self, ADMIN_DB};

const STD_COLUMNS: [(&str, u32); 21] = [
    ("type", oid::TEXT),
    ("user", oid::TEXT),
    ("database", oid::TEXT),
    ("replication", oid::TEXT),
    ("state", oid::TEXT),
    ("addr", oid::TEXT),
    ("port", oid::INT4),
    ("local_addr", oid::TEXT),
    ("local_port", oid::INT4),
    ("connect_time", oid::TEXT),
    ("request_time", oid::TEXT),
    ("wait", oid::INT4),
    ("wait_us", oid::INT4),
    ("close_needed", oid::INT4),
    ("ptr", oid::TEXT),
    ("link", oid::TEXT),
    ("remote_pid", oid::INT4),
    ("tls", oid::TEXT),
    ("application_name", oid::TEXT),
    ("prepared_statements", oid::INT4),
    ("id", oid::INT4),
];

const DEBUG_COLUMNS: [(&str, u32); 7] = [
    ("recv_pos", oid::INT4),
    ("pkt_pos", oid::INT4),
    ("pkt_remain", oid::INT4),
    ("send_pos", oid::INT4),
    ("send_remain", oid::INT4),
    ("pkt_avail", oid::INT4),
    ("send_avail", oid::INT4),
];

/// One connection, whichever side.
struct Sock {
    server: bool,
    user: String,
    database: String,
    /// SHOW CLIENTS / SERVERS state name.
    state: &'static str,
    /// SHOW SOCKETS list name (cl_active, sv_idle, ...).
    list: &'static str,
    /// Linked to its peer right now.
    linked: bool,
    addr: String,
    port: u16,
    local_addr: String,
    local_port: u16,
    connect_time: SystemTime,
    request_time: SystemTime,
    wait_us: u64,
    close_needed: bool,
    ptr: String,
    link: String,
    remote_pid: u32,
    application_name: String,
    prepared_statements: u32,
    /// `none`, `logical` or `physical` (replication connections).
    replication: &'static str,
    /// PgBouncer's TLS description, empty for plain sockets.
    tls: String,
    id: u64,
}

fn client_ptr(id: u64) -> String {
    format!("{:#014x}", (1u64 << 44) | id)
}

fn server_ptr(id: u64) -> String {
    format!("{:#014x}", (2u64 << 44) | id)
}

/// A time on the registries' µs clock, as wall-clock time.
fn wall_time(us: u64) -> SystemTime {
    SystemTime::now() - Duration::from_micros(now_us().saturating_sub(us))
}

/// `YYYY-MM-DD HH:MM:SS UTC`.
pub fn format_time(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (year, month, day) = crate::logsafe::civil_from_days(secs / 86_400);
    let rem = secs % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn client_sock(c: &ClientInfo) -> Sock {
    let admin = c.is_admin.load(Ordering::Relaxed);
    let linked = c.linked.lock().as_ref().map(|(id, _)| *id);
    let link = linked.map(server_ptr).unwrap_or_default();
    let state = c.state();
    let (state_name, list) = match state {
        ClientState::Login => ("login", "cl_login"),
        ClientState::Waiting => ("waiting", "cl_waiting"),
        // PgBouncer 1.25 shows a logged-in client without a server as idle.
        _ if linked.is_none() || admin => ("idle", "cl_active"),
        _ => ("active", "cl_active"),
    };
    let or = |s: String, none: &str| if s.is_empty() { none.to_string() } else { s };
    Sock {
        server: false,
        user: or(c.user.lock().clone(), "(nouser)"),
        database: if admin {
            ADMIN_DB.to_string()
        } else {
            or(c.db.lock().clone(), "(nodb)")
        },
        state: state_name,
        list,
        linked: linked.is_some(),
        addr: c.peer.host(),
        port: c.peer.port(),
        local_addr: c.local.host(),
        local_port: c.local.port(),
        connect_time: c.connect_time,
        request_time: wall_time(c.request_time_us.load(Ordering::Relaxed)),
        wait_us: if state == ClientState::Waiting {
            view::client_wait_us(c.wait_start_us.load(Ordering::Relaxed))
        } else {
            0
        },
        close_needed: false,
        ptr: client_ptr(c.id),
        link,
        remote_pid: 0,
        application_name: c
            .application_name
            .lock()
            .as_deref()
            .unwrap_or_default()
            .to_string(),
        prepared_statements: c.prepared_statements.load(Ordering::Relaxed),
        replication: *c.replication.lock(),
        tls: c.tls.get().cloned().unwrap_or_default(),
        id: c.id,
    }
}

fn client_socks(cmd: &Cmd<'_>, with_login: bool) -> Vec<Sock> {
    let mut v: Vec<Sock> = cmd
        .s
        .ctx
        .clients
        .all()
        .iter()
        .filter(|c| with_login || c.state() != ClientState::Login)
        .map(|c| client_sock(c))
        .collect();
    v.sort_by(|a, b| (&a.database, &a.user, a.id).cmp(&(&b.database, &b.user, b.id)));
    v
}

fn server_socks(cmd: &Cmd<'_>) -> Vec<Sock> {
    let mut v: Vec<Sock> = cmd
        .s
        .ctx
        .servers
        .all()
        .iter()
        .map(|s| {
            let (state, list) = match s.state() {
                ServerState::Login => ("new", "sv_login"),
                ServerState::Idle => ("idle", "sv_idle"),
                ServerState::Active => ("active", "sv_active"),
                ServerState::Used => ("used", "sv_used"),
                ServerState::Tested => ("tested", "sv_tested"),
                ServerState::BeingCanceled => ("being_canceled", "sv_being_canceled"),
            };
            let linked = s.linked_client();
            let request_us = s.request_time_us.load(Ordering::Relaxed);
            Sock {
                server: true,
                user: s.user.clone(),
                database: s.db.clone(),
                state,
                list,
                linked: linked.is_some(),
                addr: s.addr.clone(),
                port: s.port,
                local_addr: s.local_addr.0.clone(),
                local_port: s.local_addr.1,
                connect_time: s.connect_time,
                request_time: if request_us == 0 {
                    s.connect_time
                } else {
                    wall_time(request_us)
                },
                wait_us: 0,
                close_needed: s.close_needed(),
                ptr: server_ptr(s.id),
                link: linked.map(client_ptr).unwrap_or_default(),
                remote_pid: s.remote_pid,
                application_name: s.application_name.lock().clone(),
                prepared_statements: s.prepared_statements.load(Ordering::Relaxed),
                // Replication servers are not pooled, so none is listed here.
                replication: "none",
                tls: s.tls.get().cloned().unwrap_or_default(),
                id: s.id,
            }
        })
        .collect();
    v.sort_by(|a, b| (&a.database, &a.user, a.id).cmp(&(&b.database, &b.user, b.id)));
    v
}

fn render(socks: Vec<Sock>, debug: bool) -> Reply {
    let mut columns = STD_COLUMNS.to_vec();
    if debug {
        columns.extend(DEBUG_COLUMNS);
    }
    let data = socks
        .into_iter()
        .map(|s| {
            let mut row = vec![
                text(if s.server { "S" } else { "C" }),
                text(s.user),
                text(s.database),
                text(s.replication),
                text(if debug { s.list } else { s.state }),
                text(s.addr),
                num(s.port),
                text(s.local_addr),
                num(s.local_port),
                text(format_time(s.connect_time)),
                text(format_time(s.request_time)),
                num(s.wait_us / 1_000_000),
                num(s.wait_us % 1_000_000),
                num(u8::from(s.close_needed)),
                text(s.ptr),
                text(s.link),
                num(s.remote_pid),
                text(s.tls),
                text(s.application_name),
                num(s.prepared_statements),
                num(s.id),
            ];
            if debug {
                row.extend(std::iter::repeat_n(num(0), DEBUG_COLUMNS.len()));
            }
            row
        })
        .collect();
    rows(&columns, data)
}

pub fn clients(cmd: &Cmd<'_>) -> Result<Reply, CommandError> {
    Ok(render(client_socks(cmd, false), false))
}

pub fn servers(cmd: &Cmd<'_>) -> Result<Reply, CommandError> {
    Ok(render(server_socks(cmd), false))
}

/// Every client (logging-in ones as `cl_login`) and server, with the debug columns.
pub fn sockets(cmd: &Cmd<'_>) -> Result<Reply, CommandError> {
    let mut all = client_socks(cmd, true);
    all.extend(server_socks(cmd));
    Ok(render(all, true))
}

/// The sockets with traffic in flight: clients and servers linked to each other right now.
pub fn active_sockets(cmd: &Cmd<'_>) -> Result<Reply, CommandError> {
    let mut all = client_socks(cmd, true);
    all.extend(server_socks(cmd));
    all.retain(|s| s.linked);
    Ok(render(all, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_utc_civil() {
        assert_eq!(format_time(UNIX_EPOCH), "1970-01-01 00:00:00 UTC");
        let t = UNIX_EPOCH + Duration::from_secs(951_827_696); // 2000-02-29 12:34:56
        assert_eq!(format_time(t), "2000-02-29 12:34:56 UTC");
        let t = UNIX_EPOCH + Duration::from_secs(1_798_761_599); // 2026-12-31 23:59:59
        assert_eq!(format_time(t), "2026-12-31 23:59:59 UTC");
    }
}
