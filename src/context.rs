//! `Context`: the shared handles every task gets (config snapshot, pools, clients, shutdown).
//! Built once by `app`; passed down explicitly as `Arc<Context>`. Holds no logic beyond
//! swapping the config snapshot and reporting shutdown phases.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::pool::Pools;
use crate::session::registry::Clients;

/// Where the process is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    /// Serving.
    Running = 0,
    /// SIGTERM / SHUTDOWN WAIT_FOR_CLIENTS: no new clients; each client leaves after its transaction.
    DrainClients = 1,
    /// SIGINT / SHUTDOWN WAIT_FOR_SERVERS: no new clients, queued ones fail, exit once servers are back.
    DrainServers = 2,
    /// Exiting now.
    Stopping = 3,
}

/// Shared state of the running pooler.
pub struct Context {
    /// The config in force; replaced whole on reload. Read it with [`Context::config`].
    config: RwLock<Arc<Config>>,
    /// Every pool.
    pub pools: Arc<Pools>,
    /// Every connected client (for cancel, the console, max_client_conn).
    pub clients: Clients,
    /// Cancelled when the process must stop serving (after draining, or at once).
    pub shutdown: CancellationToken,
    /// Cancelled when draining starts: idle clients are closed, busy ones after their transaction.
    pub drain: CancellationToken,
    /// Tracks every spawned task so shutdown can wait for them.
    pub tasks: TaskTracker,
    phase: AtomicU8,
}

impl Context {
    /// A context around a first config.
    pub fn new(config: Config) -> Arc<Context> {
        let tasks = TaskTracker::new();
        Arc::new(Context {
            config: RwLock::new(Arc::new(config)),
            pools: Arc::new(Pools::new(tasks.clone())),
            clients: Clients::default(),
            shutdown: CancellationToken::new(),
            drain: CancellationToken::new(),
            tasks,
            phase: AtomicU8::new(Phase::Running as u8),
        })
    }

    /// The config snapshot in force.
    pub fn config(&self) -> Arc<Config> {
        self.config.read().clone()
    }

    /// Installs a new config snapshot and reconfigures the pools.
    pub fn replace_config(&self, config: Config) {
        let config = Arc::new(config);
        *self.config.write() = config.clone();
        self.pools.reconfigure(&config);
    }

    /// Current phase.
    pub fn phase(&self) -> Phase {
        match self.phase.load(Ordering::Acquire) {
            0 => Phase::Running,
            1 => Phase::DrainClients,
            2 => Phase::DrainServers,
            _ => Phase::Stopping,
        }
    }

    /// Moves to a later phase (never back).
    pub fn enter(&self, phase: Phase) {
        self.phase.fetch_max(phase as u8, Ordering::AcqRel);
        if phase != Phase::Running {
            self.drain.cancel();
        }
        if phase == Phase::Stopping {
            self.shutdown.cancel();
        }
    }
}
