//! What one cluster looks like according to Patroni: its members, the leader Patroni reports, and
//! how the polling goes. Plus the diff between two answers, which gives the change log lines.
//!
//! Pure data, no I/O. It carries what Patroni *says*: after a leader dies `/cluster` keeps it as
//! leader/running until its lease expires, so a consumer must confirm a leader itself
//! (`pg_is_in_recovery()` on a fresh connection) before it sends writes there.

use std::collections::BTreeMap;
use std::fmt;
use std::time::SystemTime;

/// A member's role as `/cluster` reports it (derived by Patroni from the DCS leader and sync keys,
/// not from asking the node).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MemberRole {
    /// Holds the leader key of a primary cluster.
    Leader,
    /// Leader of a standby cluster (replicates from elsewhere; read-only).
    StandbyLeader,
    /// The synchronous standby (`synchronous_mode`).
    SyncStandby,
    /// A quorum standby (Patroni 4.x, `synchronous_mode: quorum`).
    QuorumStandby,
    /// Any other replica.
    Replica,
    /// A role this version does not know (kept so it shows up, never routed to).
    Other(String),
}

impl MemberRole {
    /// Reads Patroni's spelling (`master`/`primary` are accepted for the leader, as older and
    /// newer Patroni versions use them elsewhere in the API).
    pub fn from_patroni(role: &str) -> MemberRole {
        match role {
            "leader" | "master" | "primary" => MemberRole::Leader,
            "standby_leader" => MemberRole::StandbyLeader,
            "sync_standby" => MemberRole::SyncStandby,
            "quorum_standby" => MemberRole::QuorumStandby,
            "replica" => MemberRole::Replica,
            other => MemberRole::Other(other.to_string()),
        }
    }

    /// Patroni's spelling.
    pub fn as_str(&self) -> &str {
        match self {
            MemberRole::Leader => "leader",
            MemberRole::StandbyLeader => "standby_leader",
            MemberRole::SyncStandby => "sync_standby",
            MemberRole::QuorumStandby => "quorum_standby",
            MemberRole::Replica => "replica",
            MemberRole::Other(s) => s,
        }
    }

    /// Holds the cluster's leader key (primary or standby leader).
    pub fn is_leader(&self) -> bool {
        matches!(self, MemberRole::Leader | MemberRole::StandbyLeader)
    }

    /// A replica of any kind (sync, quorum or plain).
    pub fn is_replica(&self) -> bool {
        matches!(
            self,
            MemberRole::SyncStandby | MemberRole::QuorumStandby | MemberRole::Replica
        )
    }
}

impl fmt::Display for MemberRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&shown(self.as_str()))
    }
}

/// Replication lag as Patroni reports it (bytes behind the leader's last known LSN).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lag {
    /// Bytes behind.
    Bytes(u64),
    /// Patroni said `"unknown"` (the member reported no WAL position).
    Unknown,
}

impl fmt::Display for Lag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Lag::Bytes(n) => write!(f, "{n}"),
            Lag::Unknown => f.write_str("unknown"),
        }
    }
}

/// A member's tags. Patroni lists only truthy ones; the three that matter for routing are
/// fields, the rest are kept as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Tags {
    /// Never promoted automatically.
    pub nofailover: bool,
    /// Takes no load-balanced reads.
    pub noloadbalance: bool,
    /// Never chosen as synchronous standby.
    pub nosync: bool,
    /// Every other tag, value as text.
    pub other: BTreeMap<String, String>,
}

impl Tags {
    /// True when no tag is set.
    pub fn is_empty(&self) -> bool {
        !(self.nofailover || self.noloadbalance || self.nosync) && self.other.is_empty()
    }
}

impl fmt::Display for Tags {
    /// `nofailover,noloadbalance,dc=lab`: flags by name, other tags as key=value.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<String> = Vec::new();
        for (set, name) in [
            (self.nofailover, "nofailover"),
            (self.noloadbalance, "noloadbalance"),
            (self.nosync, "nosync"),
        ] {
            if set {
                parts.push(name.to_string());
            }
        }
        for (k, v) in &self.other {
            parts.push(format!("{}={}", shown(k), shown(v)));
        }
        f.write_str(&parts.join(","))
    }
}

/// One member of the cluster, as `/cluster` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Member {
    /// Patroni's member name (the pod name on Kubernetes).
    pub name: String,
    /// Role from the DCS.
    pub role: MemberRole,
    /// PostgreSQL state: `running`, `streaming` (replicas, Patroni ≥ 3.0.4), `starting`,
    /// `stopped`, `in archive recovery`, ...
    pub state: String,
    /// Where PostgreSQL listens (`postgresql.connect_address`); absent while a member has not
    /// published it yet.
    pub host: Option<String>,
    /// PostgreSQL port.
    pub port: Option<u16>,
    /// PostgreSQL timeline.
    pub timeline: Option<u64>,
    /// Replication lag; `None` on the leader (Patroni omits it there).
    pub lag: Option<Lag>,
    /// Tags.
    pub tags: Tags,
    /// This member's REST API (`http://host:port/patroni`).
    pub api_url: Option<String>,
}

impl Member {
    /// PostgreSQL is up and serving: `running`, or `streaming` for replicas of Patroni ≥ 3.0.4.
    pub fn is_running(&self) -> bool {
        matches!(self.state.as_str(), "running" | "streaming")
    }

    /// `host:port` when both are known.
    pub fn address(&self) -> Option<String> {
        let host = self.host.as_deref()?;
        let port = self.port?;
        Some(if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        })
    }

    /// Same member data apart from the lag (which moves on every poll under write load and is
    /// not worth a log line).
    fn same_but_lag(&self, other: &Member) -> bool {
        self.name == other.name
            && self.role == other.role
            && self.state == other.state
            && self.host == other.host
            && self.port == other.port
            && self.timeline == other.timeline
            && self.tags == other.tags
            && self.api_url == other.api_url
    }
}

/// One successful `/cluster` answer, parsed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterState {
    /// Members sorted by name, without duplicates.
    pub members: Vec<Member>,
    /// Name of the member Patroni reports as leader (or standby leader), if any.
    pub leader: Option<String>,
    /// Patroni maintenance mode (`pause: true`): no automatic failover.
    pub paused: bool,
    /// The Patroni scope (cluster name in the DCS); only Patroni 4.x reports it.
    pub scope: Option<String>,
}

/// How polling goes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PollHealth {
    /// When the last answer was accepted.
    pub last_success: Option<SystemTime>,
    /// When the last poll (successful or not) finished.
    pub last_attempt: Option<SystemTime>,
    /// Failed polls since the last success (0 = healthy).
    pub consecutive_failures: u32,
    /// Every poll so far.
    pub polls_total: u64,
    /// Failed polls so far.
    pub errors_total: u64,
    /// What went wrong in the last failed poll (every endpoint tried).
    pub last_error: Option<String>,
    /// The endpoint (`ip:port`) that gave the last accepted answer.
    pub answered_by: Option<String>,
}

/// What discovery publishes for one cluster: Patroni's view and the poll health.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Topology {
    /// The last accepted answer (kept while polls fail: stale but the best known).
    pub state: ClusterState,
    /// When members, roles, states, addresses or the leader last changed (the first answer
    /// counts as a change); `None` until Patroni answered once.
    pub changed_at: Option<SystemTime>,
    /// When the reported leader last changed (first answer included).
    pub leader_changed_at: Option<SystemTime>,
    /// Leader changes seen since start (not counting the first answer).
    pub leader_changes: u64,
    /// Poll health.
    pub health: PollHealth,
}

impl Topology {
    /// Whether Patroni has answered at least once.
    pub fn is_known(&self) -> bool {
        self.health.last_success.is_some()
    }

    /// The member Patroni reports as leader.
    pub fn leader(&self) -> Option<&Member> {
        let name = self.state.leader.as_deref()?;
        self.member(name)
    }

    /// A member by name.
    pub fn member(&self, name: &str) -> Option<&Member> {
        self.state.members.iter().find(|m| m.name == name)
    }
}

/// One difference between two answers: one info log line each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The reported leader is another member (or none).
    Leader {
        from: Option<String>,
        to: Option<String>,
    },
    /// A member appeared.
    Added(Member),
    /// A member disappeared (its DCS key expired or it was removed).
    Removed(Member),
    /// A member's role, state, address, timeline or tags changed.
    Changed { old: Member, new: Member },
    /// Maintenance mode switched.
    Paused(bool),
}

/// The changes from `old` to `new`, in a stable order: leader first, then members by name.
/// The lag alone is never a change.
pub fn diff(old: &ClusterState, new: &ClusterState) -> Vec<Change> {
    let mut out = Vec::new();
    if old.leader != new.leader {
        out.push(Change::Leader {
            from: old.leader.clone(),
            to: new.leader.clone(),
        });
    }
    if old.paused != new.paused {
        out.push(Change::Paused(new.paused));
    }
    let mut olds: BTreeMap<&str, &Member> = BTreeMap::new();
    for m in &old.members {
        olds.insert(&m.name, m);
    }
    let mut news: BTreeMap<&str, &Member> = BTreeMap::new();
    for m in &new.members {
        news.insert(&m.name, m);
    }
    let mut names: Vec<&str> = olds.keys().chain(news.keys()).copied().collect();
    names.sort_unstable();
    names.dedup();
    for name in names {
        match (olds.get(name), news.get(name)) {
            (None, Some(n)) => out.push(Change::Added((*n).clone())),
            (Some(o), None) => out.push(Change::Removed((*o).clone())),
            (Some(o), Some(n)) if !o.same_but_lag(n) => out.push(Change::Changed {
                old: (*o).clone(),
                new: (*n).clone(),
            }),
            _ => {}
        }
    }
    out
}

fn opt(v: Option<&str>) -> String {
    v.map_or_else(|| "none".to_string(), |s| shown(s).into_owned())
}

fn member_summary(m: &Member) -> String {
    let mut s = format!(
        "{} role={} state={} host={}",
        shown(&m.name),
        m.role,
        shown(&m.state),
        opt(m.address().as_deref())
    );
    if let Some(tl) = m.timeline {
        s.push_str(&format!(" timeline={tl}"));
    }
    if !m.tags.is_empty() {
        s.push_str(&format!(" tags={}", m.tags));
    }
    s
}

impl fmt::Display for Change {
    /// The text after `patroni cluster <name>: `, e.g. `leader changed: node1 -> node2`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::Leader { from, to } => write!(
                f,
                "leader changed: {} -> {}",
                opt(from.as_deref()),
                opt(to.as_deref())
            ),
            Change::Paused(true) => f.write_str("maintenance mode on (Patroni paused)"),
            Change::Paused(false) => f.write_str("maintenance mode off"),
            Change::Added(m) => write!(f, "member added: {}", member_summary(m)),
            Change::Removed(m) => write!(f, "member removed: {}", member_summary(m)),
            Change::Changed { old, new } => {
                let mut parts = Vec::new();
                if old.role != new.role {
                    parts.push(format!("role {} -> {}", old.role, new.role));
                }
                if old.state != new.state {
                    parts.push(format!(
                        "state {} -> {}",
                        shown(&old.state),
                        shown(&new.state)
                    ));
                }
                if old.address() != new.address() {
                    parts.push(format!(
                        "host {} -> {}",
                        opt(old.address().as_deref()),
                        opt(new.address().as_deref())
                    ));
                }
                if old.timeline != new.timeline {
                    let tl = |t: Option<u64>| t.map_or_else(|| "none".into(), |t| t.to_string());
                    parts.push(format!(
                        "timeline {} -> {}",
                        tl(old.timeline),
                        tl(new.timeline)
                    ));
                }
                if old.tags != new.tags {
                    parts.push(format!("tags '{}' -> '{}'", old.tags, new.tags));
                }
                if old.api_url != new.api_url {
                    parts.push(format!(
                        "api_url {} -> {}",
                        opt(old.api_url.as_deref()),
                        opt(new.api_url.as_deref())
                    ));
                }
                write!(
                    f,
                    "member changed: {} {}",
                    shown(&new.name),
                    parts.join(", ")
                )
            }
        }
    }
}

/// Longest piece of Patroni-supplied text put in a log line.
const SHOWN_MAX: usize = 128;

/// Text from the network made safe for one log line: control characters escaped, length capped.
pub fn shown(s: &str) -> std::borrow::Cow<'_, str> {
    if s.len() <= SHOWN_MAX && !s.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out: String = s
        .chars()
        .take(SHOWN_MAX)
        .flat_map(char::escape_default)
        .collect();
    if s.chars().count() > SHOWN_MAX {
        out.push_str("...");
    }
    std::borrow::Cow::Owned(out)
}
