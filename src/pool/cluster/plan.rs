//! Which member of a Patroni cluster serves which role, from the published topology and the
//! router's own knowledge (the confirmed leader, the bans). Pure: no I/O, no clock, no pools.
//!
//! Rules (README "Patroni clusters"):
//! - primary: only the confirmed leader (Patroni's leader that answered `pg_is_in_recovery()`
//!   = false on a fresh connection); none while it is not confirmed (the failover hold).
//! - replica: replicas (and a standby leader) in state running/streaming, not tagged
//!   `noloadbalance`, with a known lag ≤ `max_replica_lag`; when none has a known lag, those
//!   whose lag is absent or "unknown"; banned ones left out unless that leaves no server at all;
//!   with none, the confirmed leader when `replica_fallback = primary`.
//! - sync: the usable synchronous (or quorum) standbys; never falls back.
//! - any: the confirmed leader and the usable replicas.

use std::collections::HashSet;

use crate::config::{ReplicaFallback, ServerHost};
use crate::discovery::{Lag, Member, MemberRole, Topology};
use crate::pool::{Role, Serves};

/// Where a member's PostgreSQL listens: what identifies a member pool in a set.
pub type Addr = (ServerHost, u16);

/// A member's address, when Patroni published it.
pub fn addr_of(m: &Member) -> Option<Addr> {
    Some((ServerHost::Tcp(m.host.clone()?), m.port?))
}

/// The knobs of the plan (from the `[pgbouncer]` section).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Knobs {
    /// `max_replica_lag` in bytes; 0 = no limit.
    pub max_replica_lag: u64,
    /// `replica_fallback`.
    pub fallback: ReplicaFallback,
}

/// The plan for one set: every member with an address, and what it serves.
pub fn plan(
    t: &Topology,
    confirmed: Option<&Addr>,
    banned: &HashSet<Addr>,
    role: Role,
    knobs: Knobs,
) -> Vec<(Addr, Serves)> {
    let members: Vec<(&Member, Addr)> = t
        .state
        .members
        .iter()
        .filter_map(|m| Some((m, addr_of(m)?)))
        .collect();
    // Only a leader Patroni still lists can be the confirmed one.
    let leader = confirmed.filter(|c| members.iter().any(|(_, a)| a == *c));
    let readable = |m: &Member| {
        (m.role.is_replica() || m.role == MemberRole::StandbyLeader)
            && m.is_running()
            && !m.tags.noloadbalance
    };
    let lag_ok = |m: &Member| match m.lag {
        Some(Lag::Bytes(n)) => knobs.max_replica_lag == 0 || n <= knobs.max_replica_lag,
        _ => false,
    };
    let lag_unknown = |m: &Member| !matches!(m.lag, Some(Lag::Bytes(_)));
    let mut replicas: Vec<&Addr> = members
        .iter()
        .filter(|(m, _)| readable(m) && lag_ok(m))
        .map(|(_, a)| a)
        .collect();
    if replicas.is_empty() {
        replicas = members
            .iter()
            .filter(|(m, _)| readable(m) && lag_unknown(m))
            .map(|(_, a)| a)
            .collect();
    }
    let is_sync = |a: &Addr| {
        members.iter().any(|(m, x)| {
            x == a && matches!(m.role, MemberRole::SyncStandby | MemberRole::QuorumStandby)
        })
    };
    let mut syncs: Vec<&Addr> = replicas.iter().copied().filter(|a| is_sync(a)).collect();
    let fallback = match knobs.fallback {
        ReplicaFallback::Primary => leader,
        ReplicaFallback::None => None,
    };
    // Bans never take away the last server of a role: with a fallback the leader is one.
    unban_unless_spare(&mut replicas, banned, fallback.is_some());
    unban_unless_spare(&mut syncs, banned, false);
    let serves = |a: &Addr| -> Serves {
        let mut s = Serves::NONE;
        match role {
            Role::Primary => {
                if leader == Some(a) {
                    s = s.union(Serves::PRIMARY);
                }
            }
            Role::Replica => {
                if replicas.contains(&a) || (replicas.is_empty() && fallback == Some(a)) {
                    s = s.union(Serves::REPLICA);
                }
            }
            Role::Sync => {
                if syncs.contains(&a) {
                    s = s.union(Serves::SYNC);
                }
            }
            Role::Any => {
                if leader == Some(a) {
                    s = s.union(Serves::PRIMARY);
                }
                if replicas.contains(&a) {
                    s = s.union(Serves::REPLICA);
                }
            }
        }
        s
    };
    members
        .iter()
        .map(|(_, a)| (a.clone(), serves(a)))
        .collect()
}

/// Drops the banned addresses from `list`, unless that would leave it empty with no `spare`.
fn unban_unless_spare(list: &mut Vec<&Addr>, banned: &HashSet<Addr>, spare: bool) {
    let kept: Vec<&Addr> = list
        .iter()
        .copied()
        .filter(|a| !banned.contains(*a))
        .collect();
    if !kept.is_empty() || spare {
        *list = kept;
    }
}
