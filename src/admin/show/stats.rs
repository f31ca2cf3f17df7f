//! SHOW STATS, STATS_TOTALS, STATS_AVERAGES and TOTALS: the pools' counters summed per database
//! (or overall), with averages over the current `stats_period`. Column names, order and the
//! numeric type follow PgBouncer 1.25.2 `stats.c`, quirks included (STATS_AVERAGES names its
//! parse/bind columns `avg_*`; TOTALS says `client_bytes` where STATS says `received`), plus the
//! `client_login_count` counter of PgBouncer 1.26 (PR #1457), appended at the end of each block.

use super::{num, rows, text, Cmd};
use crate::admin::{oid, CommandError, Reply};
use crate::pool::stats::StatsSnapshot;
use crate::stats::{view, Averages};

const N: u32 = oid::NUMERIC;

/// The twelve counters in PgBouncer's order.
fn totals_cells(t: &StatsSnapshot) -> [u64; 12] {
    [
        t.server_assignment_count,
        t.xact_count,
        t.query_count,
        t.bytes_received,
        t.bytes_sent,
        t.xact_time_us,
        t.query_time_us,
        t.wait_time_us,
        t.client_parse_count,
        t.server_parse_count,
        t.bind_count,
        t.client_login_count,
    ]
}

fn averages_cells(a: &Averages) -> [u64; 12] {
    [
        a.server_assignment_count,
        a.xact_count,
        a.query_count,
        a.bytes_received,
        a.bytes_sent,
        a.xact_time_us,
        a.query_time_us,
        a.wait_time_us,
        a.client_parse_count,
        a.server_parse_count,
        a.bind_count,
        a.client_login_count,
    ]
}

const STATS_COLUMNS: [(&str, u32); 25] = [
    ("database", oid::TEXT),
    ("total_server_assignment_count", N),
    ("total_xact_count", N),
    ("total_query_count", N),
    ("total_received", N),
    ("total_sent", N),
    ("total_xact_time", N),
    ("total_query_time", N),
    ("total_wait_time", N),
    ("total_client_parse_count", N),
    ("total_server_parse_count", N),
    ("total_bind_count", N),
    ("total_client_login_count", N),
    ("avg_server_assignment_count", N),
    ("avg_xact_count", N),
    ("avg_query_count", N),
    ("avg_recv", N),
    ("avg_sent", N),
    ("avg_xact_time", N),
    ("avg_query_time", N),
    ("avg_wait_time", N),
    ("avg_client_parse_count", N),
    ("avg_server_parse_count", N),
    ("avg_bind_count", N),
    ("avg_client_login_count", N),
];

const TOTALS_COLUMNS: [(&str, u32); 13] = [
    ("database", oid::TEXT),
    ("server_assignment_count", N),
    ("xact_count", N),
    ("query_count", N),
    ("bytes_received", N),
    ("bytes_sent", N),
    ("xact_time", N),
    ("query_time", N),
    ("wait_time", N),
    ("client_parse_count", N),
    ("server_parse_count", N),
    ("bind_count", N),
    ("client_login_count", N),
];

const AVERAGES_COLUMNS: [(&str, u32); 13] = [
    ("database", oid::TEXT),
    ("server_assignment_count", N),
    ("xact_count", N),
    ("query_count", N),
    ("bytes_received", N),
    ("bytes_sent", N),
    ("xact_time", N),
    ("query_time", N),
    ("wait_time", N),
    ("avg_client_parse_count", N),
    ("avg_server_parse_count", N),
    ("avg_bind_count", N),
    ("client_login_count", N),
];

/// SHOW TOTALS row names (PgBouncer's internal field names).
const TOTALS_NAMES: [&str; 12] = [
    "server_assignment_count",
    "xact_count",
    "query_count",
    "client_bytes",
    "server_bytes",
    "xact_time",
    "query_time",
    "wait_time",
    "ps_client_parse_count",
    "ps_server_parse_count",
    "ps_bind_count",
    "client_login_count",
];

fn per_db(
    cmd: &Cmd<'_>,
    columns: &[(&'static str, u32)],
    cells: impl Fn(&view::DbStats) -> Vec<u64>,
) -> Reply {
    let data = view::stats_per_database(&cmd.s.ctx)
        .iter()
        .map(|d| {
            let mut row = vec![text(d.database.clone())];
            row.extend(cells(d).into_iter().map(num));
            row
        })
        .collect();
    rows(columns, data)
}

pub fn stats(cmd: &Cmd<'_>) -> Result<Reply, CommandError> {
    Ok(per_db(cmd, &STATS_COLUMNS, |d| {
        let mut v = totals_cells(&d.totals).to_vec();
        v.extend(averages_cells(&d.averages));
        v
    }))
}

pub fn stats_totals(cmd: &Cmd<'_>) -> Result<Reply, CommandError> {
    Ok(per_db(cmd, &TOTALS_COLUMNS, |d| {
        totals_cells(&d.totals).to_vec()
    }))
}

pub fn stats_averages(cmd: &Cmd<'_>) -> Result<Reply, CommandError> {
    Ok(per_db(cmd, &AVERAGES_COLUMNS, |d| {
        averages_cells(&d.averages).to_vec()
    }))
}

pub fn totals(cmd: &Cmd<'_>) -> Result<Reply, CommandError> {
    let (t, a) = view::stats_overall(&cmd.s.ctx);
    let mut data = Vec::with_capacity(24);
    for (name, v) in TOTALS_NAMES.iter().zip(totals_cells(&t)) {
        data.push(vec![text(format!("total_{name}")), num(v)]);
    }
    for (name, v) in TOTALS_NAMES.iter().zip(averages_cells(&a)) {
        data.push(vec![text(format!("avg_{name}")), num(v)]);
    }
    Ok(rows(&[("name", oid::TEXT), ("value", N)], data))
}
