//! Read-only views of the Patroni clusters: the rows behind SHOW CLUSTERS / SHOW MEMBERS and the
//! `ollyscale_pooler_patroni_*` metrics, so the console and Prometheus show the same values.
//!
//! Reads the published topologies and the pool side's routing state (the cluster routers: the
//! confirmed leader, the failover hold, held clients, bans, what each member serves).

use std::time::SystemTime;

use std::collections::HashMap;

use crate::config::ServerHost;
use crate::context::Context;
use crate::discovery::{Lag, Topology};
use crate::pool::cluster::{addr_text, ClusterRouter};
use crate::pool::Serves;

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
    /// The leader the pooler confirmed (`pg_is_in_recovery()` false); NULL while holding.
    pub confirmed_leader: Option<String>,
    /// A failover hold is in progress.
    pub hold: bool,
    /// When the hold in progress started.
    pub hold_since: Option<SystemTime>,
    /// Why it started.
    pub hold_reason: Option<String>,
    /// Clients waiting for a member serving their role.
    pub held_clients: u32,
    /// Holds since start.
    pub holds: u64,
    /// How long the last finished hold lasted, in milliseconds.
    pub last_hold_ms: Option<u64>,
    /// When the routing last changed (leader confirmed, hold, ban).
    pub routing_changed: Option<SystemTime>,
    /// Why the last leader confirmation failed.
    pub confirm_error: Option<String>,
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
    /// What the pooler routes to it (`primary,replica,sync`); empty for nothing.
    pub serves: String,
    /// Seconds left of its ban (a replica whose connections failed); `None` when not banned.
    pub banned_for: Option<u64>,
}

/// Every configured cluster, sorted by name.
pub fn clusters(ctx: &Context) -> Vec<ClusterRow> {
    ctx.clusters
        .all()
        .into_iter()
        .map(|c| {
            let t = c.topology();
            let view = router_of(ctx, &c.name)
                .map(|r| r.view())
                .unwrap_or_default();
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
                confirmed_leader: view.confirmed,
                hold: view.hold.is_some(),
                hold_since: view.hold.as_ref().map(|h| h.0),
                hold_reason: view.hold.map(|h| h.1),
                held_clients: view.held_clients,
                holds: view.holds_total,
                last_hold_ms: view.last_hold.map(|d| d.as_millis() as u64),
                routing_changed: view.last_change,
                confirm_error: view.last_confirm_error,
            }
        })
        .collect()
}

/// Every member of every cluster, sorted by (cluster, name).
pub fn members(ctx: &Context) -> Vec<MemberRow> {
    let mut rows = Vec::new();
    for c in ctx.clusters.all() {
        let router = router_of(ctx, &c.name);
        let serving = router.as_ref().map(|r| r.serving()).unwrap_or_default();
        let bans = router.map(|r| r.view().bans).unwrap_or_default();
        member_rows(&c.name, &c.topology(), &serving, &bans, &mut rows);
    }
    rows
}

/// The pool side's router of cluster `name` (none until a database of it had a client).
fn router_of(ctx: &Context, name: &str) -> Option<std::sync::Arc<ClusterRouter>> {
    ctx.pools.routers().into_iter().find(|r| r.name == name)
}

fn member_rows(
    cluster: &str,
    t: &Topology,
    serving: &HashMap<String, Serves>,
    bans: &[(String, u64)],
    rows: &mut Vec<MemberRow>,
) {
    for m in &t.state.members {
        let addr = m
            .host
            .clone()
            .zip(m.port)
            .map(|(h, p)| addr_text(&(ServerHost::Tcp(h), p)));
        let serves = addr
            .as_ref()
            .and_then(|a| serving.get(a))
            .map(|s| s.names())
            .unwrap_or_default();
        let banned_for = addr
            .as_ref()
            .and_then(|a| bans.iter().find(|(b, _)| b == a))
            .map(|(_, secs)| *secs);
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
            serves,
            banned_for,
        });
    }
}
