//! Wiring: load the config, bind the listeners, start the janitor, and run the signal loop
//! (SIGHUP reload, SIGTERM drain clients, SIGINT drain servers, SIGQUIT exit, SIGUSR1/2
//! pause/resume) until shutdown. Nothing imports this module except `main`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};

use crate::config::{Config, GENERAL_KEYS};
use crate::context::{Context, Phase};
use crate::listener::Listeners;

/// Loads a config file and logs what it does not implement.
pub fn load_config(path: &Path) -> Result<Config, crate::config::ConfigErrors> {
    let cfg = Config::load(path)?;
    for key in &cfg.unimplemented_keys {
        tracing::warn!("setting {key} is not supported by ollyscale-pooler and is ignored");
    }
    Ok(cfg)
}

/// A running pooler, as tests and `main` see it.
pub struct Running {
    /// Shared state.
    pub ctx: Arc<Context>,
    /// The first bound TCP address.
    pub addr: Option<std::net::SocketAddr>,
    unix_path: Option<PathBuf>,
}

/// Binds and starts serving `cfg`; returns once listening.
pub async fn start(cfg: Config) -> std::io::Result<Running> {
    let listeners = Listeners::bind(&cfg.general)?;
    let addr = listeners.local_addr();
    let ctx = Context::new(cfg);
    let unix_path = listeners.spawn(&ctx);
    ctx.tasks
        .spawn(ctx.pools.clone().run_janitor(ctx.shutdown.clone()));
    Ok(Running {
        ctx,
        addr,
        unix_path,
    })
}

/// Re-reads the config file; keeps the old one on any error. Returns whether it applied.
pub fn reload(ctx: &Context) -> bool {
    let old = ctx.config();
    match load_config(&old.path) {
        Ok(new) => {
            for key in GENERAL_KEYS.iter().filter(|k| !k.reloadable) {
                let was = old.raw_general.iter().find(|(k2, _)| k2 == key.name);
                let now = new.raw_general.iter().find(|(k2, _)| k2 == key.name);
                if was != now {
                    tracing::warn!("setting {} cannot be changed on reload; restart to apply", key.name);
                }
            }
            let mut new = new;
            // Keys that cannot change keep their running values.
            new.general.listen_addr = old.general.listen_addr.clone();
            new.general.listen_port = old.general.listen_port;
            new.general.unix_socket_dir = old.general.unix_socket_dir.clone();
            new.general.track_extra_parameters = old.general.track_extra_parameters.clone();
            new.general.pidfile = old.general.pidfile.clone();
            ctx.replace_config(new);
            tracing::info!("configuration reloaded");
            true
        }
        Err(e) => {
            tracing::error!("reload failed, keeping the running configuration: {e}");
            false
        }
    }
}

impl Running {
    /// Serves until a signal (or the console) ends it, then drains as asked.
    pub async fn run_until_stopped(self) {
        let ctx = self.ctx.clone();
        let mut hup = signal(SignalKind::hangup()).expect("invariant: signal handler installs");
        let mut term = signal(SignalKind::terminate()).expect("invariant: signal handler installs");
        let mut int = signal(SignalKind::interrupt()).expect("invariant: signal handler installs");
        let mut quit = signal(SignalKind::quit()).expect("invariant: signal handler installs");
        let mut usr1 = signal(SignalKind::user_defined1()).expect("invariant: signal handler installs");
        let mut usr2 = signal(SignalKind::user_defined2()).expect("invariant: signal handler installs");
        loop {
            tokio::select! {
                _ = hup.recv() => { reload(&ctx); }
                _ = usr1.recv() => { for p in ctx.pools.all() { p.set_paused(true); } }
                _ = usr2.recv() => {
                    if ctx.phase() == Phase::Running {
                        for p in ctx.pools.all() { p.set_paused(false); }
                    }
                }
                _ = term.recv() => {
                    if ctx.phase() != Phase::Running { break; }
                    tracing::info!("got SIGTERM, waiting for clients to finish their transactions");
                    begin_drain(&ctx, Phase::DrainClients);
                }
                _ = int.recv() => {
                    if ctx.phase() != Phase::Running { break; }
                    tracing::info!("got SIGINT, waiting for servers to be released");
                    begin_drain(&ctx, Phase::DrainServers);
                }
                _ = quit.recv() => { tracing::info!("got SIGQUIT, exiting now"); break; }
                _ = ctx.shutdown.cancelled() => break,
            }
        }
        self.stop().await;
    }

    async fn stop(self) {
        self.ctx.enter(Phase::Stopping);
        for p in self.ctx.pools.all() {
            p.close_idle();
        }
        self.ctx.tasks.close();
        // Sessions see `shutdown` and close; give them a moment to say so.
        let _ = tokio::time::timeout(Duration::from_millis(500), self.ctx.tasks.wait()).await;
        if let Some(p) = &self.unix_path {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Starts a drain and the watcher that ends the process when it completes or times out.
pub fn begin_drain(ctx: &Arc<Context>, phase: Phase) {
    ctx.enter(phase);
    if phase == Phase::DrainServers {
        for p in ctx.pools.all() {
            p.fail_waiters(|| crate::error::Error::ServerShuttingDown);
        }
    }
    let ctx2 = ctx.clone();
    // Detached on purpose: it is what ends the process.
    tokio::spawn(async move {
        let limit = ctx2.config().general.shutdown_timeout;
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let done = match phase {
                Phase::DrainServers => ctx2.pools.all().iter().all(|p| p.snapshot().active == 0),
                _ => ctx2.clients.count.load(std::sync::atomic::Ordering::Relaxed) == 0,
            };
            if done || (!limit.is_zero() && tokio::time::Instant::now() >= deadline) {
                if !done {
                    tracing::warn!("shutdown_timeout reached, closing remaining clients");
                }
                ctx2.enter(Phase::Stopping);
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
}
