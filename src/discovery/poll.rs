//! One cluster's background loop: poll `GET /cluster`, fold the outcome into the published
//! [`Topology`], log what changed, sleep `patroni_poll_interval` (plus jitter) or until poked.
//!
//! The fold ([`apply`]) is pure so the log lines and the notify rule are unit-tested without a
//! network. Receivers are woken only when Patroni's data changed or polling started or stopped
//! failing; the health timestamps are refreshed in place without waking anyone.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio_util::task::TaskTracker;

use super::client::{system_resolve, Candidates, FetchError, Fetcher, Resolve};
use super::patroni::parse_cluster;
use super::topology::{diff, shown, Change, ClusterState, Topology};
use super::{Cluster, Settings};
use crate::config::PatroniUrl;

/// Least time between the starts of two polls, however often the pool pokes.
pub const MIN_POLL_GAP: Duration = Duration::from_millis(100);
/// While polls keep failing, one warning per this many failures (the first one always).
const WARN_EVERY: u32 = 60;

/// What one poll found: the answer and who gave it, or every error met.
pub type PollResult = Result<(ClusterState, SocketAddr), Vec<FetchError>>;

/// The loop; returns when the cluster is stopped (removed on reload, or shutdown).
pub(super) async fn run(cluster: Arc<Cluster>, tasks: TaskTracker) {
    let fetcher = Fetcher::new(tasks);
    let mut sticky: Option<SocketAddr> = None;
    loop {
        let settings = cluster.settings();
        let started = Instant::now();
        let listed = listed_urls(&cluster.topology());
        let result = tokio::select! {
            _ = cluster.stop.cancelled() => return,
            r = poll_once(&fetcher, &settings, sticky, &listed, &system_resolve) => r,
        };
        if let Ok((_, addr)) = &result {
            sticky = Some(*addr);
        } else {
            // The member that answered last failed: next time start from the full list.
            sticky = None;
        }
        let mut logs = Vec::new();
        cluster
            .topology
            .send_if_modified(|t| apply(Arc::make_mut(t), result, SystemTime::now(), &mut logs));
        for line in logs {
            match line {
                Log::Info(s) => tracing::info!("patroni cluster {}: {s}", cluster.name),
                Log::Warn(s) => tracing::warn!("patroni cluster {}: {s}", cluster.name),
            }
        }
        let pause = settings.interval + jitter(settings.interval);
        tokio::select! {
            _ = cluster.stop.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
            _ = cluster.poke.notified() => {
                let since = started.elapsed();
                if since < MIN_POLL_GAP {
                    tokio::select! {
                        _ = cluster.stop.cancelled() => return,
                        _ = tokio::time::sleep(MIN_POLL_GAP - since) => {}
                    }
                }
            }
        }
    }
}

/// Up to a tenth of the interval, so poolers started together do not poll in step.
fn jitter(interval: Duration) -> Duration {
    interval.mul_f64(rand::random::<f64>() * 0.1)
}

/// The `api_url`s of the last answer, parsed (a member whose URL does not parse is skipped).
fn listed_urls(t: &Topology) -> Vec<PatroniUrl> {
    t.state
        .members
        .iter()
        .filter_map(|m| PatroniUrl::parse(m.api_url.as_deref()?).ok())
        .collect()
}

/// Asks `sticky` first, then every other candidate in order, until one gives a valid answer.
pub async fn poll_once(
    fetcher: &Fetcher,
    settings: &Settings,
    sticky: Option<SocketAddr>,
    listed: &[PatroniUrl],
    resolve: Resolve<'_>,
) -> PollResult {
    let mut errors = Vec::new();
    if let Some(addr) = sticky {
        match fetch(fetcher, addr, settings.timeout).await {
            Ok(state) => return Ok((state, addr)),
            Err(e) => errors.push(e),
        }
    }
    let candidates = Candidates {
        configured: settings.patroni.clone(),
        listed: listed.to_vec(),
    };
    let (addrs, resolve_errors) = candidates.resolve(resolve, settings.timeout).await;
    errors.extend(resolve_errors);
    for addr in addrs.into_iter().filter(|a| Some(*a) != sticky) {
        match fetch(fetcher, addr, settings.timeout).await {
            Ok(state) => return Ok((state, addr)),
            Err(e) => errors.push(e),
        }
    }
    Err(errors)
}

async fn fetch(
    fetcher: &Fetcher,
    addr: SocketAddr,
    timeout: Duration,
) -> Result<ClusterState, FetchError> {
    let body = fetcher.get_cluster(addr, timeout).await?;
    parse_cluster(&body).map_err(|source| FetchError::Parse { addr, source })
}

/// A log line `apply` asks for (emitted after the topology lock is released).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Log {
    Info(String),
    Warn(String),
}

/// Folds one poll into `t`; returns whether receivers must be woken (Patroni's data changed,
/// the first answer, or polling started or stopped failing). Pushes the log lines to emit.
pub fn apply(t: &mut Topology, result: PollResult, now: SystemTime, logs: &mut Vec<Log>) -> bool {
    t.health.polls_total += 1;
    t.health.last_attempt = Some(now);
    match result {
        Ok((state, addr)) => {
            let first = !t.is_known();
            let failures = t.health.consecutive_failures;
            if failures > 0 {
                logs.push(Log::Info(format!(
                    "Patroni answers again (from {addr}) after {failures} failed polls"
                )));
            }
            let changes = diff(&t.state, &state);
            if first {
                logs.push(Log::Info(format!(
                    "first answer from {addr}: leader {}, {} members",
                    state.leader.as_deref().map_or("none".into(), shown),
                    state.members.len()
                )));
            }
            for c in &changes {
                if let Change::Leader { .. } = c {
                    t.leader_changed_at = Some(now);
                    if !first {
                        t.leader_changes += 1;
                    }
                }
                logs.push(Log::Info(c.to_string()));
            }
            if first || !changes.is_empty() {
                t.changed_at = Some(now);
            }
            if first && t.leader_changed_at.is_none() {
                t.leader_changed_at = Some(now);
            }
            let data_changed = t.state != state;
            t.state = state;
            t.health.last_success = Some(now);
            t.health.consecutive_failures = 0;
            t.health.answered_by = Some(addr.to_string());
            data_changed || first || failures > 0
        }
        Err(errors) => {
            t.health.consecutive_failures = t.health.consecutive_failures.saturating_add(1);
            t.health.errors_total += 1;
            let text = if errors.is_empty() {
                "no Patroni endpoint to ask".to_string()
            } else {
                errors
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            };
            let n = t.health.consecutive_failures;
            if n == 1 || n % WARN_EVERY == 0 {
                let known = if t.is_known() {
                    "keeping the last known topology"
                } else {
                    "no topology known yet"
                };
                logs.push(Log::Warn(format!(
                    "poll failed ({n} in a row, {known}): {text}"
                )));
            }
            t.health.last_error = Some(text);
            n == 1
        }
    }
}
