//! SHOW DATABASES and SHOW USERS, PgBouncer 1.25 columns.

use super::{flag, num, rows, text, Cmd};
use crate::admin::{oid, CommandError, Reply};
use crate::stats::view;

const DATABASE_COLUMNS: [(&str, u32); 17] = [
    ("name", oid::TEXT),
    ("host", oid::TEXT),
    ("port", oid::INT4),
    ("database", oid::TEXT),
    ("force_user", oid::TEXT),
    ("pool_size", oid::INT4),
    ("min_pool_size", oid::INT4),
    ("reserve_pool_size", oid::INT4),
    ("server_lifetime", oid::INT4),
    ("pool_mode", oid::TEXT),
    ("load_balance_hosts", oid::TEXT),
    ("max_connections", oid::INT4),
    ("current_connections", oid::INT4),
    ("max_client_connections", oid::INT4),
    ("current_client_connections", oid::INT4),
    ("paused", oid::INT4),
    ("disabled", oid::INT4),
];

pub fn databases(cmd: &Cmd<'_>) -> Result<Reply, CommandError> {
    let data = view::databases(&cmd.s.ctx)
        .into_iter()
        .map(|d| {
            vec![
                text(d.name),
                d.host,
                num(d.port),
                text(d.database),
                d.force_user,
                num(d.pool_size),
                num(d.min_pool_size),
                num(d.reserve_pool_size),
                num(d.server_lifetime_s),
                d.pool_mode.map(String::from),
                d.load_balance_hosts.map(String::from),
                num(d.max_connections),
                num(d.current_connections),
                num(d.max_client_connections),
                num(d.current_client_connections),
                flag(d.paused),
                flag(d.disabled),
            ]
        })
        .collect();
    Ok(rows(&DATABASE_COLUMNS, data))
}

const USER_COLUMNS: [(&str, u32); 8] = [
    ("name", oid::TEXT),
    ("pool_size", oid::TEXT),
    ("reserve_pool_size", oid::TEXT),
    ("pool_mode", oid::TEXT),
    ("max_user_connections", oid::INT4),
    ("current_connections", oid::INT4),
    ("max_user_client_connections", oid::INT4),
    ("current_client_connections", oid::INT4),
];

/// PgBouncer prints the per-user sizes as `%9d` text, empty when unset.
fn padded(v: Option<u32>) -> Option<String> {
    text(v.map(|n| format!("{n:>9}")).unwrap_or_default())
}

pub fn users(cmd: &Cmd<'_>) -> Result<Reply, CommandError> {
    let data = view::users(&cmd.s.ctx)
        .into_iter()
        .map(|u| {
            vec![
                text(u.name),
                padded(u.pool_size),
                padded(u.reserve_pool_size),
                u.pool_mode.map(String::from),
                num(u.max_user_connections),
                num(u.current_connections),
                num(u.max_user_client_connections),
                num(u.current_client_connections),
            ]
        })
        .collect();
    Ok(rows(&USER_COLUMNS, data))
}
