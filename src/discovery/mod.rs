//! Patroni discovery: for each `[clusters]` entry, a background task polls `GET /cluster` and
//! publishes the cluster's [`Topology`] through a `tokio::sync::watch`.
//!
//! The pool side subscribes ([`Cluster::subscribe`]) and reconciles its member pools from what it
//! receives, and calls [`Cluster::poke`] when a server connection fails in a way that suggests a
//! role change, which makes the next poll start at once. Discovery never touches pools, and it
//! reports what Patroni *says*: confirming a leader (`pg_is_in_recovery()`) is the pool's job.
//!
//! Depends only on `config`. `patroni.rs` parses the JSON, `client.rs` does the HTTP,
//! `topology.rs` holds the published data and its diff, `poll.rs` the loop.

mod client;
mod patroni;
mod poll;
mod topology;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{ClusterConfig, Config, PatroniUrl};

pub use client::{FetchError, MAX_BODY};
pub use patroni::parse_cluster;
pub use poll::MIN_POLL_GAP;
pub use topology::{
    diff, Change, ClusterState, Lag, Member, MemberRole, PollHealth, Tags, Topology,
};

/// How one cluster is polled (from its `[clusters]` entry and the `[pgbouncer]` keys).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The configured Patroni URLs.
    pub patroni: Vec<PatroniUrl>,
    /// `patroni_poll_interval`.
    pub interval: Duration,
    /// `patroni_timeout`.
    pub timeout: Duration,
}

impl Settings {
    fn new(cluster: &ClusterConfig, cfg: &Config) -> Settings {
        Settings {
            patroni: cluster.patroni.clone(),
            interval: cfg.general.patroni_poll_interval,
            timeout: cfg.general.patroni_timeout,
        }
    }
}

/// One Patroni cluster: its settings, its published topology and its poll task's controls.
pub struct Cluster {
    /// The `[clusters]` name.
    pub name: String,
    /// Read by the poll task at each poll, replaced on reload (short lock, never across await).
    settings: Mutex<Arc<Settings>>,
    /// The published topology. Written only by the poll task.
    topology: watch::Sender<Arc<Topology>>,
    /// Wakes the poll task for an immediate poll (a stored permit if it is busy polling).
    poke: Notify,
    /// Ends the poll task (cluster removed on reload, or shutdown: a child of the shutdown token).
    stop: CancellationToken,
    /// Set once the poll task is spawned.
    running: AtomicBool,
}

impl Cluster {
    /// A receiver of the topology; the current value is marked seen.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Topology>> {
        self.topology.subscribe()
    }

    /// The topology right now.
    pub fn topology(&self) -> Arc<Topology> {
        self.topology.borrow().clone()
    }

    /// Asks for a poll now (rate-limited to one per [`MIN_POLL_GAP`]). For the pool, when a
    /// server connection fails in a way that suggests a role change.
    pub fn poke(&self) {
        self.poke.notify_one();
    }

    /// The settings in force.
    pub fn settings(&self) -> Arc<Settings> {
        self.settings.lock().clone()
    }
}

/// Every configured cluster, by name.
pub struct Clusters {
    /// The clusters; replaced entries on reload. Short lock, never held across an await.
    map: Mutex<BTreeMap<String, Arc<Cluster>>>,
    /// Where poll tasks (and their HTTP connection tasks) are spawned.
    tasks: TaskTracker,
    /// Parent of every cluster's `stop`.
    shutdown: CancellationToken,
    /// Set by [`Clusters::start`]; before that, reconcile only records settings.
    started: AtomicBool,
}

impl Clusters {
    /// An empty registry; nothing polls until [`Clusters::start`].
    pub fn new(tasks: TaskTracker, shutdown: CancellationToken) -> Clusters {
        Clusters {
            map: Mutex::new(BTreeMap::new()),
            tasks,
            shutdown,
            started: AtomicBool::new(false),
        }
    }

    /// Starts polling every cluster (once; needs a tokio runtime).
    pub fn start(&self) {
        if !self.started.swap(true, Ordering::AcqRel) {
            for c in self.all() {
                self.spawn(&c);
            }
        }
    }

    /// Follows a (re)loaded config: new clusters are added (and polled when started), removed
    /// ones stopped, changed ones get their new settings at their next poll. A cluster keeps its
    /// topology and subscribers across a reload that does not remove it.
    pub fn reconcile(&self, cfg: &Config) {
        let mut added = Vec::new();
        {
            let mut map = self.map.lock();
            map.retain(|name, c| {
                let keep = cfg.clusters.contains_key(name);
                if !keep {
                    tracing::info!("patroni cluster {name}: removed from the configuration");
                    c.stop.cancel();
                }
                keep
            });
            for (name, cc) in &cfg.clusters {
                let settings = Settings::new(cc, cfg);
                match map.get(name) {
                    Some(c) => {
                        let mut cur = c.settings.lock();
                        if **cur != settings {
                            *cur = Arc::new(settings);
                            drop(cur);
                            c.poke();
                        }
                    }
                    None => {
                        let c = Arc::new(Cluster {
                            name: name.clone(),
                            settings: Mutex::new(Arc::new(settings)),
                            topology: watch::channel(Arc::new(Topology::default())).0,
                            poke: Notify::new(),
                            stop: self.shutdown.child_token(),
                            running: AtomicBool::new(false),
                        });
                        map.insert(name.clone(), c.clone());
                        added.push(c);
                    }
                }
            }
        }
        if self.started.load(Ordering::Acquire) {
            for c in added {
                self.spawn(&c);
            }
        }
    }

    fn spawn(&self, c: &Arc<Cluster>) {
        if c.running.swap(true, Ordering::AcqRel) {
            return;
        }
        let s = c.settings();
        let urls: Vec<String> = s.patroni.iter().map(ToString::to_string).collect();
        tracing::info!(
            "patroni cluster {}: polling {} every {:?}",
            c.name,
            urls.join(","),
            s.interval
        );
        self.tasks.spawn(poll::run(c.clone(), self.tasks.clone()));
    }

    /// A cluster by name.
    pub fn get(&self, name: &str) -> Option<Arc<Cluster>> {
        self.map.lock().get(name).cloned()
    }

    /// Every cluster, sorted by name.
    pub fn all(&self) -> Vec<Arc<Cluster>> {
        self.map.lock().values().cloned().collect()
    }
}
