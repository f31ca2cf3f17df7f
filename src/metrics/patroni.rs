//! The Patroni families of /metrics, from the same views as SHOW CLUSTERS / SHOW MEMBERS.
//! Labels are `cluster`, `member` and `role` only.

use std::time::UNIX_EPOCH;

use metrics::{describe_counter, describe_gauge};

use super::scrape::{counter, gauge, label};
use super::*;
use crate::context::Context;
use crate::stats::clusters;

pub(super) fn record(ctx: &Context) {
    let mut confirmed = Vec::new();
    for c in clusters::clusters(ctx) {
        let l = [label("cluster", c.name.clone())];
        let up = c.last_success.is_some() && c.consecutive_errors == 0;
        gauge(PATRONI_UP, &l, f64::from(u8::from(up)));
        gauge(PATRONI_MEMBERS, &l, f64::from(c.members));
        gauge(
            PATRONI_HAS_LEADER,
            &l,
            f64::from(u8::from(c.leader.is_some())),
        );
        counter(PATRONI_POLL_ERRORS, &l, c.poll_errors);
        gauge(
            PATRONI_CONSECUTIVE_ERRORS,
            &l,
            f64::from(c.consecutive_errors),
        );
        counter(PATRONI_LEADER_CHANGES, &l, c.leader_changes);
        if let Some(t) = c.last_success {
            let secs = t
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs_f64();
            gauge(PATRONI_LAST_SUCCESS, &l, secs);
        }
        gauge(PATRONI_HOLD, &l, f64::from(u8::from(c.hold)));
        gauge(PATRONI_HELD_CLIENTS, &l, f64::from(c.held_clients));
        counter(PATRONI_HOLDS, &l, c.holds);
        if let Some(ms) = c.last_hold_ms {
            gauge(PATRONI_LAST_HOLD, &l, ms as f64 / 1000.0);
        }
        confirmed.push((c.name, c.confirmed_leader));
    }
    for m in clusters::members(ctx) {
        let leader = confirmed
            .iter()
            .any(|(c, l)| *c == m.cluster && l.as_deref() == Some(m.name.as_str()));
        let l = [
            label("cluster", m.cluster),
            label("member", m.name),
            label("role", m.role),
        ];
        gauge(PATRONI_MEMBER_CONFIRMED, &l, f64::from(u8::from(leader)));
        gauge(
            PATRONI_MEMBER_BANNED,
            &l,
            f64::from(u8::from(m.banned_for.is_some())),
        );
        gauge(PATRONI_MEMBER_INFO, &l, 1.0);
        gauge(PATRONI_MEMBER_RUNNING, &l, f64::from(u8::from(m.running)));
        if let Some(lag) = m.lag {
            gauge(PATRONI_MEMBER_LAG, &l, lag as f64);
        }
        if let Some(tl) = m.timeline {
            gauge(PATRONI_MEMBER_TIMELINE, &l, tl as f64);
        }
    }
}

pub(super) fn describe() {
    describe_gauge!(
        PATRONI_UP,
        "1 when the last poll of the cluster's Patroni API succeeded"
    );
    describe_gauge!(PATRONI_MEMBERS, "Members Patroni lists for the cluster");
    describe_gauge!(PATRONI_HAS_LEADER, "1 when Patroni reports a leader");
    describe_counter!(PATRONI_POLL_ERRORS, "Failed polls of the Patroni API");
    describe_gauge!(
        PATRONI_CONSECUTIVE_ERRORS,
        "Failed polls of the Patroni API since the last success"
    );
    describe_gauge!(
        PATRONI_LAST_SUCCESS,
        "Unix time of the last accepted Patroni /cluster answer"
    );
    describe_counter!(
        PATRONI_LEADER_CHANGES,
        "Leader changes seen in Patroni's answers"
    );
    describe_gauge!(
        PATRONI_MEMBER_INFO,
        "1 per member Patroni lists, with its role"
    );
    describe_gauge!(
        PATRONI_MEMBER_RUNNING,
        "1 when the member's PostgreSQL is running or streaming, per Patroni"
    );
    describe_gauge!(
        PATRONI_MEMBER_LAG,
        "Replication lag in bytes as Patroni reports it (absent on the leader or when unknown)"
    );
    describe_gauge!(PATRONI_MEMBER_TIMELINE, "The member's PostgreSQL timeline");
    describe_gauge!(
        PATRONI_HOLD,
        "1 while a failover hold is in progress (no confirmed leader)"
    );
    describe_gauge!(
        PATRONI_HELD_CLIENTS,
        "Clients waiting for a member serving their role"
    );
    describe_counter!(PATRONI_HOLDS, "Failover holds since start");
    describe_gauge!(
        PATRONI_LAST_HOLD,
        "Duration of the last finished failover hold, in seconds"
    );
    describe_gauge!(
        PATRONI_MEMBER_CONFIRMED,
        "1 for the member the pooler confirmed as leader (pg_is_in_recovery() false)"
    );
    describe_gauge!(
        PATRONI_MEMBER_BANNED,
        "1 while the member is banned because its connections failed"
    );
}
