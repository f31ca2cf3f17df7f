//! SHOW POOLS: one row per (database, user) pool plus the console's, PgBouncer 1.25 columns.

use super::{num, rows, text, Cmd};
use crate::admin::{oid, CommandError, Reply};
use crate::stats::view;

/// Column names and types, in PgBouncer's order.
pub const COLUMNS: [(&str, u32); 17] = [
    ("database", oid::TEXT),
    ("user", oid::TEXT),
    ("cl_active", oid::INT4),
    ("cl_waiting", oid::INT4),
    ("cl_active_cancel_req", oid::INT4),
    ("cl_waiting_cancel_req", oid::INT4),
    ("sv_active", oid::INT4),
    ("sv_active_cancel", oid::INT4),
    ("sv_being_canceled", oid::INT4),
    ("sv_idle", oid::INT4),
    ("sv_used", oid::INT4),
    ("sv_tested", oid::INT4),
    ("sv_login", oid::INT4),
    ("maxwait", oid::INT4),
    ("maxwait_us", oid::INT4),
    ("pool_mode", oid::TEXT),
    ("load_balance_hosts", oid::TEXT),
];

/// Cancel requests are forwarded on their own short connections outside the pools, so the
/// `*_cancel*` columns are always 0; `load_balance_hosts` is NULL unless the database has a
/// host list.
pub fn pools(cmd: &Cmd<'_>) -> Result<Reply, CommandError> {
    let data = view::pools(&cmd.s.ctx)
        .into_iter()
        .map(|p| {
            vec![
                text(p.database),
                text(p.user),
                num(p.cl_active),
                num(p.cl_waiting),
                num(0),
                num(0),
                num(p.sv_active),
                num(0),
                num(p.sv_being_canceled),
                num(p.sv_idle),
                num(p.sv_used),
                num(p.sv_tested),
                num(p.sv_login),
                num(p.maxwait_us / 1_000_000),
                num(p.maxwait_us % 1_000_000),
                text(p.pool_mode),
                p.load_balance_hosts.map(String::from),
            ]
        })
        .collect();
    Ok(rows(&COLUMNS, data))
}
