//! SHOW CLUSTERS and SHOW MEMBERS (ours, not PgBouncer's): the Patroni topology each
//! `[clusters]` entry follows and the pooler's routing of it (confirmed leader, failover hold,
//! held clients, bans, what each member serves), from `stats::clusters`.

use super::sockets::format_time;
use super::{flag, num, rows, text, Cmd};
use crate::admin::{oid, CommandError, Reply};
use crate::stats::clusters;

const CLUSTER_COLUMNS: [(&str, u32); 23] = [
    ("name", oid::TEXT),
    ("patroni", oid::TEXT),
    ("answered_by", oid::TEXT),
    ("leader", oid::TEXT),
    ("members", oid::INT4),
    ("paused", oid::INT4),
    ("last_poll", oid::TEXT),
    ("last_success", oid::TEXT),
    ("poll_errors", oid::INT8),
    ("consecutive_errors", oid::INT4),
    ("last_error", oid::TEXT),
    ("last_change", oid::TEXT),
    ("leader_changed", oid::TEXT),
    ("leader_changes", oid::INT8),
    ("confirmed_leader", oid::TEXT),
    ("hold", oid::INT4),
    ("hold_since", oid::TEXT),
    ("hold_reason", oid::TEXT),
    ("held_clients", oid::INT4),
    ("holds", oid::INT8),
    ("last_hold_ms", oid::INT8),
    ("routing_changed", oid::TEXT),
    ("confirm_error", oid::TEXT),
];

/// One row per `[clusters]` entry.
pub fn clusters(cmd: &Cmd<'_>) -> Result<Reply, CommandError> {
    let data = clusters::clusters(&cmd.s.ctx)
        .into_iter()
        .map(|c| {
            vec![
                text(c.name),
                text(c.patroni),
                c.answered_by,
                c.leader,
                num(c.members),
                flag(c.paused),
                c.last_poll.map(format_time),
                c.last_success.map(format_time),
                num(c.poll_errors),
                num(c.consecutive_errors),
                c.last_error,
                c.last_change.map(format_time),
                c.leader_changed.map(format_time),
                num(c.leader_changes),
                c.confirmed_leader,
                flag(c.hold),
                c.hold_since.map(format_time),
                c.hold_reason,
                num(c.held_clients),
                num(c.holds),
                c.last_hold_ms.and_then(num),
                c.routing_changed.map(format_time),
                c.confirm_error,
            ]
        })
        .collect();
    Ok(rows(&CLUSTER_COLUMNS, data))
}

const MEMBER_COLUMNS: [(&str, u32); 12] = [
    ("cluster", oid::TEXT),
    ("name", oid::TEXT),
    ("role", oid::TEXT),
    ("state", oid::TEXT),
    ("host", oid::TEXT),
    ("port", oid::INT4),
    ("timeline", oid::INT8),
    ("lag", oid::INT8),
    ("tags", oid::TEXT),
    ("api_url", oid::TEXT),
    ("serves", oid::TEXT),
    ("banned_for", oid::INT8),
];

/// One row per member Patroni lists, by (cluster, name).
pub fn members(cmd: &Cmd<'_>) -> Result<Reply, CommandError> {
    let data = clusters::members(&cmd.s.ctx)
        .into_iter()
        .map(|m| {
            vec![
                text(m.cluster),
                text(m.name),
                text(m.role),
                text(m.state),
                m.host,
                m.port.and_then(num),
                m.timeline.and_then(num),
                m.lag.and_then(num),
                text(m.tags),
                m.api_url,
                text(m.serves),
                m.banned_for.and_then(num),
            ]
        })
        .collect();
    Ok(rows(&MEMBER_COLUMNS, data))
}
