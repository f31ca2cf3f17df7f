//! The router's state machine: the confirmed leader, the failover hold, the replica bans, and
//! the one log line per routing change. No I/O and no awaiting: the router's loop feeds it
//! signals and confirmation outcomes and reads back what to retire.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::{wall, Addr, BAN_TIME};
use crate::error::Error;
use crate::pool::Signal;

/// The leader the router confirmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confirmed {
    /// Patroni's member name.
    pub name: String,
    /// Where it listens.
    pub addr: Addr,
    /// When it was confirmed.
    pub since: SystemTime,
}

/// A failover hold in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    /// When it started (monotonic, for its duration).
    pub since: Instant,
    /// When it started (wall clock, for the console).
    pub since_wall: SystemTime,
    /// Why it started.
    pub reason: String,
}

/// Everything the router knows beyond the topology.
#[derive(Debug, Default)]
pub struct RouterState {
    /// The confirmed leader; `None` while holding or before the first confirmation.
    pub confirmed: Option<Confirmed>,
    /// The hold in progress (not counting the wait for the very first confirmation).
    pub hold: Option<Hold>,
    /// The leader whose own failure started the hold: its servers are retired unless it is
    /// confirmed again.
    pub suspect: Option<Addr>,
    /// A member whose servers the loop must retire now (the leader Patroni stopped reporting).
    pub retire: Option<Addr>,
    /// Banned replicas and when each ban ends.
    pub bans: HashMap<Addr, Instant>,
    /// Holds since start.
    pub holds_total: u64,
    /// How long the last finished hold lasted.
    pub last_hold: Option<Duration>,
    /// When the routing last changed (leader confirmed, hold, ban).
    pub last_change: Option<SystemTime>,
    /// Failed confirmations in a row (logged on the first only).
    pub confirm_failures: u32,
    /// The last confirmation error.
    pub last_confirm_error: Option<String>,
    /// Patroni's leader answered as still in recovery or starting up: a promotion under way,
    /// so confirmation is retried sooner.
    pub promoting: bool,
}

/// What the console and the metrics show of a router.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RouterView {
    /// The confirmed leader's member name.
    pub confirmed: Option<String>,
    /// When it was confirmed.
    pub confirmed_since: Option<SystemTime>,
    /// The hold in progress: when it started and why.
    pub hold: Option<(SystemTime, String)>,
    /// Clients waiting for a member serving their role.
    pub held_clients: u32,
    /// Holds since start.
    pub holds_total: u64,
    /// Duration of the last finished hold.
    pub last_hold: Option<Duration>,
    /// Banned members (`host:port`) and the seconds left.
    pub bans: Vec<(String, u64)>,
    /// When the routing last changed.
    pub last_change: Option<SystemTime>,
    /// The last failed confirmation.
    pub last_confirm_error: Option<String>,
}

/// `host:port` for logs.
pub fn addr_text(a: &Addr) -> String {
    let host = match &a.0 {
        crate::config::ServerHost::Tcp(h) if h.contains(':') => format!("[{h}]"),
        crate::config::ServerHost::Tcp(h) => h.clone(),
        crate::config::ServerHost::Unix(p) => p.display().to_string(),
    };
    format!("{host}:{}", a.1)
}

impl RouterState {
    /// Address of the confirmed leader.
    pub fn confirmed_addr(&self) -> Option<Addr> {
        self.confirmed.as_ref().map(|c| c.addr.clone())
    }

    /// Banned addresses.
    pub fn banned(&self) -> HashSet<Addr> {
        self.bans.keys().cloned().collect()
    }

    /// A leader is confirmed and nothing is held: the loop can tick slowly.
    pub fn settled(&self) -> bool {
        self.confirmed.is_some() && self.hold.is_none()
    }

    /// Takes a member's failure signal. Returns whether discovery should be poked.
    pub fn signal(&mut self, cluster: &str, addr: &Addr, signal: Signal, now: Instant) -> bool {
        if self.confirmed.as_ref().is_some_and(|c| &c.addr == addr) {
            let name = self.confirmed.as_ref().map(|c| c.name.clone());
            self.start_hold(
                cluster,
                format!(
                    "{} on leader {}",
                    signal_text(signal),
                    name.unwrap_or_default()
                ),
                now,
            );
            self.suspect = Some(addr.clone());
            return true;
        }
        if matches!(signal, Signal::Refused | Signal::Unreachable) && !self.bans.contains_key(addr)
        {
            tracing::info!(
                "patroni cluster {cluster}: member {} banned for {}s ({}); never the last server of a role",
                addr_text(addr),
                BAN_TIME.as_secs(),
                signal_text(signal)
            );
            self.bans.insert(addr.clone(), now + BAN_TIME);
            self.last_change = Some(wall(now));
        }
        true
    }

    /// Lifts the bans whose time is up.
    pub fn unban_expired(&mut self, cluster: &str, now: Instant) {
        let before = self.bans.len();
        self.bans.retain(|a, until| {
            let keep = *until > now;
            if !keep {
                tracing::info!(
                    "patroni cluster {cluster}: member {} unbanned",
                    addr_text(a)
                );
            }
            keep
        });
        if self.bans.len() != before {
            self.last_change = Some(wall(now));
        }
    }

    /// Withdraws the primary role: the confirmed leader (if any) is forgotten until a leader
    /// is confirmed again.
    pub fn start_hold(&mut self, cluster: &str, reason: String, now: Instant) {
        self.confirmed = None;
        self.confirm_failures = 0;
        if self.hold.is_none() {
            tracing::info!(
                "patroni cluster {cluster}: failover hold started ({reason}): new primary \
                 transactions wait for a confirmed leader"
            );
            self.hold = Some(Hold {
                since: now,
                since_wall: wall(now),
                reason,
            });
            self.holds_total += 1;
            self.last_change = Some(wall(now));
        }
    }

    /// `name` at `addr` answered as a primary. Returns a member to retire (the suspect leader,
    /// when another one was confirmed).
    pub fn confirmed_as(&mut self, cluster: &str, name: &str, addr: &Addr) -> Option<Addr> {
        let now = Instant::now();
        self.confirmed = Some(Confirmed {
            name: name.to_string(),
            addr: addr.clone(),
            since: wall(now),
        });
        self.confirm_failures = 0;
        self.last_confirm_error = None;
        self.promoting = false;
        self.last_change = Some(wall(now));
        match self.hold.take() {
            Some(h) => {
                let took = now - h.since;
                self.last_hold = Some(took);
                tracing::info!(
                    "patroni cluster {cluster}: failover hold ended after {} ms: leader {name} \
                     ({}) confirmed",
                    took.as_millis(),
                    addr_text(addr)
                );
            }
            None => tracing::info!(
                "patroni cluster {cluster}: leader {name} ({}) confirmed",
                addr_text(addr)
            ),
        }
        self.suspect.take().filter(|s| s != addr)
    }

    /// Confirming `name` failed. Returns the suspect leader to retire, if any.
    pub fn confirm_failed(&mut self, cluster: &str, name: &str, err: &Error) -> Option<Addr> {
        self.confirm_failures += 1;
        let text = err.to_string();
        if self.confirm_failures == 1 {
            tracing::info!(
                "patroni cluster {cluster}: leader {name} not confirmed ({text}); holding"
            );
        } else {
            tracing::debug!("patroni cluster {cluster}: leader {name} not confirmed ({text})");
        }
        self.last_confirm_error = Some(text);
        self.suspect.take()
    }

    /// The console's view.
    pub fn view(&self, held_clients: u32) -> RouterView {
        let now = Instant::now();
        let mut bans: Vec<(String, u64)> = self
            .bans
            .iter()
            .map(|(a, until)| (addr_text(a), until.saturating_duration_since(now).as_secs()))
            .collect();
        bans.sort();
        RouterView {
            confirmed: self.confirmed.as_ref().map(|c| c.name.clone()),
            confirmed_since: self.confirmed.as_ref().map(|c| c.since),
            hold: self.hold.as_ref().map(|h| (h.since_wall, h.reason.clone())),
            held_clients,
            holds_total: self.holds_total,
            last_hold: self.last_hold,
            bans,
            last_change: self.last_change,
            last_confirm_error: self.last_confirm_error.clone(),
        }
    }
}

fn signal_text(s: Signal) -> &'static str {
    match s {
        Signal::Refused => "connection refused or not a primary",
        Signal::Unreachable => "connect timeout",
        Signal::Gone => "server closed",
        Signal::Sqlstate => "role-change SQLSTATE",
    }
}
