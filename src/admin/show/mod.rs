//! `SHOW <what>` (and its alias `SELECT <what>`): a table of entries, one per subcommand, plus
//! the fake parameters drivers ask for. The big result sets live in their own files; the small
//! fixed ones (HELP, VERSION, LISTS, STATE, MEM, DNS_*, PEERS, PEER_POOLS) are here.
//!
//! Add a subcommand by adding a [`ShowEntry`] (CLUSTERS / MEMBERS, our Patroni views, are added
//! this way).
//! Handlers only read registry snapshots; they never change anything.

mod clusters;
mod config;
mod databases;
mod pools;
mod sockets;
mod stats;

use super::command::Cmd;
use super::{oid, CommandError, Reply, PGBOUNCER_VERSION};
use crate::stats::view;

/// One SHOW subcommand.
pub struct ShowEntry {
    /// Lower-case name after SHOW.
    pub name: &'static str,
    /// Builds the result.
    pub run: fn(&Cmd<'_>) -> Result<Reply, CommandError>,
}

const fn entry(name: &'static str, run: fn(&Cmd<'_>) -> Result<Reply, CommandError>) -> ShowEntry {
    ShowEntry { name, run }
}

/// Every SHOW subcommand.
pub static SHOW_COMMANDS: &[ShowEntry] = &[
    entry("active_sockets", sockets::active_sockets),
    entry("clients", sockets::clients),
    entry("clusters", clusters::clusters),
    entry("config", config::config),
    entry("databases", databases::databases),
    entry("dns_hosts", dns_hosts),
    entry("dns_zones", dns_zones),
    entry("help", help),
    entry("lists", lists),
    entry("mem", mem),
    entry("members", clusters::members),
    entry("peer_pools", peer_pools),
    entry("peers", peers),
    entry("pools", pools::pools),
    entry("servers", sockets::servers),
    entry("sockets", sockets::sockets),
    entry("state", state),
    entry("stats", stats::stats),
    entry("stats_averages", stats::stats_averages),
    entry("stats_totals", stats::stats_totals),
    entry("totals", stats::totals),
    entry("users", databases::users),
    entry("version", version),
];

/// Parameters some drivers SHOW or SET at connect time; the console answers with fixed values
/// (SHOW) or `SET ignored` (SET), as PgBouncer does. extra_float_digits is JDBC's (PgBouncer
/// PR #1550); its value is PostgreSQL's default.
pub const FAKE_PARAMS: &[(&str, &str)] = &[
    ("client_encoding", "UTF-8"),
    ("default_transaction_isolation", "read committed"),
    ("standard_conforming_strings", "on"),
    ("datestyle", "ISO"),
    ("timezone", "GMT"),
    ("extra_float_digits", "1"),
];

/// The fake parameter `name` names (case-insensitive).
pub fn fake_param(name: &str) -> Option<(&'static str, &'static str)> {
    FAKE_PARAMS
        .iter()
        .copied()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
}

/// Runs `SHOW <arg>`.
pub fn run(cmd: &Cmd<'_>) -> Result<Reply, CommandError> {
    if let Some((name, value)) = fake_param(cmd.arg) {
        return Ok(rows(&[(name, oid::TEXT)], vec![vec![text(value)]]));
    }
    match SHOW_COMMANDS
        .iter()
        .find(|e| e.name.eq_ignore_ascii_case(cmd.arg))
    {
        Some(entry) => (entry.run)(cmd),
        None => Err(cmd.syntax_error()),
    }
}

/// One text cell.
pub(crate) fn text(v: impl Into<String>) -> Option<String> {
    Some(v.into())
}

/// One number cell.
pub(crate) fn num(v: impl std::fmt::Display) -> Option<String> {
    Some(v.to_string())
}

/// A 0/1 cell.
pub(crate) fn flag(v: bool) -> Option<String> {
    num(u8::from(v))
}

/// A result set.
pub(crate) fn rows(columns: &[(&'static str, u32)], rows: Vec<Vec<Option<String>>>) -> Reply {
    debug_assert!(rows.iter().all(|r| r.len() == columns.len()));
    Reply::Rows {
        columns: columns.to_vec(),
        rows,
    }
}

/// The usage notice. Lists what this pooler implements (no FDS: it goes with online restart,
/// which PgBouncer 1.26 removes too).
fn help(_: &Cmd<'_>) -> Result<Reply, CommandError> {
    let detail = "\n\tSHOW HELP|CONFIG|DATABASES|POOLS|CLIENTS|SERVERS|USERS|VERSION\n\
                  \tSHOW PEERS|PEER_POOLS\n\
                  \tSHOW SOCKETS|ACTIVE_SOCKETS|LISTS|MEM|STATE\n\
                  \tSHOW DNS_HOSTS|DNS_ZONES\n\
                  \tSHOW STATS|STATS_TOTALS|STATS_AVERAGES|TOTALS\n\
                  \tSHOW CLUSTERS|MEMBERS\n\
                  \tSET key = arg\n\
                  \tRELOAD\n\
                  \tPAUSE [<db>]\n\
                  \tRESUME [<db>]\n\
                  \tDISABLE <db>\n\
                  \tENABLE <db>\n\
                  \tRECONNECT [<db>]\n\
                  \tKILL [<db>]\n\
                  \tKILL_CLIENT <client_id>\n\
                  \tSUSPEND\n\
                  \tSHUTDOWN\n\
                  \tSHUTDOWN WAIT_FOR_SERVERS|WAIT_FOR_CLIENTS\n\
                  \tWAIT_CLOSE [<db>]";
    Ok(Reply::Tag {
        tag: "SHOW".into(),
        notice: Some(("Console usage".into(), Some(detail.into()))),
    })
}

fn version(_: &Cmd<'_>) -> Result<Reply, CommandError> {
    Ok(rows(
        &[("version", oid::TEXT)],
        vec![vec![text(format!("PgBouncer {PGBOUNCER_VERSION}"))]],
    ))
}

fn lists(cmd: &Cmd<'_>) -> Result<Reply, CommandError> {
    let data = view::lists(&cmd.s.ctx)
        .into_iter()
        .map(|(name, n)| vec![text(name), num(n)])
        .collect();
    Ok(rows(&[("list", oid::TEXT), ("items", oid::INT4)], data))
}

fn state(cmd: &Cmd<'_>) -> Result<Reply, CommandError> {
    let paused = cmd.s.ctx.paused_all();
    let suspended = cmd.s.ctx.is_suspended();
    let yes_no = |b: bool| text(if b { "yes" } else { "no" });
    Ok(rows(
        &[("key", oid::TEXT), ("value", oid::TEXT)],
        vec![
            vec![text("active"), yes_no(!paused && !suspended)],
            vec![text("paused"), yes_no(paused)],
            vec![text("suspended"), yes_no(suspended)],
        ],
    ))
}

/// PgBouncer's slab caches; this pooler has none, so the set is empty.
fn mem(_: &Cmd<'_>) -> Result<Reply, CommandError> {
    let cols = [
        ("name", oid::TEXT),
        ("size", oid::INT4),
        ("used", oid::INT4),
        ("free", oid::INT4),
        ("memtotal", oid::INT4),
    ];
    Ok(rows(&cols, Vec::new()))
}

/// Every server host name in the DNS cache, with the seconds until it is looked up again.
fn dns_hosts(cmd: &Cmd<'_>) -> Result<Reply, CommandError> {
    let cols = [
        ("hostname", oid::TEXT),
        ("ttl", oid::INT8),
        ("addrs", oid::TEXT),
    ];
    let data = view::dns_hosts(&cmd.s.ctx)
        .into_iter()
        .map(|h| vec![text(h.hostname), num(h.ttl), text(h.addrs)])
        .collect();
    Ok(rows(&cols, data))
}

/// No zone polling (dns_zone_check_period needs c-ares SOA queries; see README), so no zones.
fn dns_zones(_: &Cmd<'_>) -> Result<Reply, CommandError> {
    let cols = [
        ("zonename", oid::TEXT),
        ("serial", oid::INT8),
        ("count", oid::INT4),
    ];
    Ok(rows(&cols, Vec::new()))
}

/// Every `[peers]` entry, our own peer_id included (PgBouncer lists its whole peer list; its
/// own entry is only never forwarded to).
fn peers(cmd: &Cmd<'_>) -> Result<Reply, CommandError> {
    let cols = [
        ("peer_id", oid::INT4),
        ("host", oid::TEXT),
        ("port", oid::INT4),
        ("pool_size", oid::INT4),
    ];
    let cfg = cmd.s.ctx.config();
    let data = cfg
        .peers
        .iter()
        .map(|(&id, p)| {
            let host = match &p.host {
                crate::config::ServerHost::Tcp(h) => h.clone(),
                crate::config::ServerHost::Unix(dir) => dir.display().to_string(),
            };
            let size = p.pool_size.unwrap_or(cfg.general.default_pool_size);
            vec![num(id), text(host), num(p.port), num(size)]
        })
        .collect();
    Ok(rows(&cols, data))
}

/// One row per peer a cancel was forwarded to since start (PgBouncer makes peer pools lazily).
fn peer_pools(cmd: &Cmd<'_>) -> Result<Reply, CommandError> {
    let cols = [
        ("peer_id", oid::INT4),
        ("cl_active_cancel_req", oid::INT4),
        ("cl_waiting_cancel_req", oid::INT4),
        ("sv_active_cancel", oid::INT4),
        ("sv_login", oid::INT4),
    ];
    let load = |c: &std::sync::atomic::AtomicU32| num(c.load(std::sync::atomic::Ordering::Relaxed));
    let data = cmd
        .s
        .ctx
        .peer_pools
        .snapshot()
        .into_iter()
        .map(|(id, p)| {
            vec![
                num(id),
                load(&p.cl_active),
                load(&p.cl_waiting),
                load(&p.sv_active),
                load(&p.sv_login),
            ]
        })
        .collect();
    Ok(rows(&cols, data))
}
