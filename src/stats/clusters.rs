//! Read-only views of the Patroni clusters: the rows behind SHOW CLUSTERS / SHOW MEMBERS and the
//! `ollyscale_pooler_patroni_*` metrics, so the console and Prometheus show the same values.
//!
//! Reads the published topologies only. Later steps add the pool side's columns here (clients
//! held during a failover, banned replicas), as fields filled from the pool sets.

use std::time::SystemTime;

use crate::context::Context;
use crate::discovery::{Lag, Topology};

/// One SHOW CLUSTERS row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterRow {
    /// `[clusters]` name.
    pub name: String,
    /// The configured Patroni URLs, comma-separated.
    pub patroni: String,
    /// The endpoint (`ip:port`) that gave the last accepted answer.
    pub answered_by: Option<String>,
    /// The member Patroni reports as leader.
    pub leader: Option<String>,
    /// Members listed.
    pub members: u32,
    /// Patroni maintenance mode.
    pub paused: bool,
    /// The last poll, successful or not.
    pub last_poll: Option<SystemTime>,
    /// The last accepted answer.
    pub last_success: Option<SystemTime>,
    /// Failed polls since start.
    pub poll_errors: u64,
    /// Failed polls since the last success.
    pub consecutive_errors: u32,
    /// The last failed poll's errors.
    pub last_error: Option<String>,
    /// When members or the leader last changed.
    pub last_change: Option<SystemTime>,
    /// When the leader last changed.
    pub leader_changed: Option<SystemTime>,
    /// Leader changes seen since start.
    pub leader_changes: u64,
}

/// One SHOW MEMBERS row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberRow {
    pub cluster: String,
    pub name: String,
    /// Patroni's role (`leader`, `sync_standby`, `replica`, ...).
    pub role: String,
    /// Patroni's state (`running`, `streaming`, ...).
    pub state: String,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub timeline: Option<u64>,
    /// Bytes; `None` on the leader (Patroni reports none) or when Patroni says `unknown`.
    pub lag: Option<u64>,
    /// `nofailover,noloadbalance,key=value`; empty when none.
    pub tags: String,
    pub api_url: Option<String>,
    /// PostgreSQL running (or streaming), per Patroni.
    pub running: bool,
}

/// Every configured cluster, sorted by name.
pub fn clusters(ctx: &Context) -> Vec<ClusterRow> {
    ctx.clusters
        .all()
        .into_iter()
        .map(|c| {
            let t = c.topology();
            let urls: Vec<String> = c
                .settings()
                .patroni
                .iter()
                .map(ToString::to_string)
                .collect();
            ClusterRow {
                name: c.name.clone(),
                patroni: urls.join(","),
                answered_by: t.health.answered_by.clone(),
                leader: t.state.leader.clone(),
                members: t.state.members.len() as u32,
                paused: t.state.paused,
                last_poll: t.health.last_attempt,
                last_success: t.health.last_success,
                poll_errors: t.health.errors_total,
                consecutive_errors: t.health.consecutive_failures,
                last_error: t.health.last_error.clone(),
                last_change: t.changed_at,
                leader_changed: t.leader_changed_at,
                leader_changes: t.leader_changes,
            }
        })
        .collect()
}

/// Every member of every cluster, sorted by (cluster, name).
pub fn members(ctx: &Context) -> Vec<MemberRow> {
    let mut rows = Vec::new();
    for c in ctx.clusters.all() {
        member_rows(&c.name, &c.topology(), &mut rows);
    }
    rows
}

fn member_rows(cluster: &str, t: &Topology, rows: &mut Vec<MemberRow>) {
    for m in &t.state.members {
        rows.push(MemberRow {
            cluster: cluster.to_string(),
            name: m.name.clone(),
            role: m.role.as_str().to_string(),
            state: m.state.clone(),
            host: m.host.clone(),
            port: m.port,
            timeline: m.timeline,
            lag: match m.lag {
                Some(Lag::Bytes(n)) => Some(n),
                Some(Lag::Unknown) | None => None,
            },
            tags: m.tags.to_string(),
            api_url: m.api_url.clone(),
            running: m.is_running(),
        });
    }
}
