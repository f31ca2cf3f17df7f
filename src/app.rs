//! Wiring: load the config, bind the listeners, start the janitor, and run the signal loop
//! (SIGHUP reload, SIGTERM wait for clients, SIGINT drain servers, SIGQUIT exit, SIGUSR1/2
//! pause/resume) until shutdown. Nothing imports this module except `main`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};

use crate::config::Config;
use crate::context::{Context, Phase};
use crate::listener::Listeners;

/// A running pooler, as tests and `main` see it.
pub struct Running {
    /// Shared state.
    pub ctx: Arc<Context>,
    /// The first bound TCP address.
    pub addr: Option<std::net::SocketAddr>,
    /// Where /metrics, /livez and /readyz are served (None when http_listen_port is unset).
    pub http_addr: Option<std::net::SocketAddr>,
    /// The log file, reopened on SIGHUP (set by `main` when `logfile` is used).
    pub log_file: Option<Arc<crate::logfile::LogFile>>,
    unix_path: Option<PathBuf>,
}

/// Binds and starts serving `cfg`; returns once listening.
pub async fn start(cfg: Config) -> std::io::Result<Running> {
    let sec = &cfg.general.security;
    crate::net::tls::check_settings(&sec.client_tls, &sec.server_tls)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let listeners = Listeners::bind(&cfg.general)?;
    let addr = listeners.local_addr();
    let ctx = Context::new(cfg);
    // Bound before any task starts, so a taken HTTP port fails start-up cleanly.
    let http_addr = crate::metrics::http::start(&ctx).await?;
    let unix_path = listeners.spawn(&ctx);
    let weak = Arc::downgrade(&ctx);
    // Weak: the task must not keep the context alive; it ends with shutdown anyway.
    let config = Box::new(move || {
        weak.upgrade()
            .map(|c| c.config())
            .unwrap_or_else(|| Arc::new(Config::default()))
    });
    ctx.tasks
        .spawn(ctx.pools.clone().run_janitor(ctx.shutdown.clone(), config));
    ctx.tasks.spawn(crate::stats::run(ctx.clone()));
    ctx.clusters.start();
    Ok(Running {
        ctx,
        addr,
        http_addr,
        log_file: None,
        unix_path,
    })
}

impl Running {
    /// Serves until a signal (or the console) ends it, then drains as asked.
    pub async fn run_until_stopped(self) {
        let ctx = self.ctx.clone();
        let mut hup = signal(SignalKind::hangup()).expect("invariant: signal handler installs");
        let mut term = signal(SignalKind::terminate()).expect("invariant: signal handler installs");
        let mut int = signal(SignalKind::interrupt()).expect("invariant: signal handler installs");
        let mut quit = signal(SignalKind::quit()).expect("invariant: signal handler installs");
        let mut usr1 =
            signal(SignalKind::user_defined1()).expect("invariant: signal handler installs");
        let mut usr2 =
            signal(SignalKind::user_defined2()).expect("invariant: signal handler installs");
        loop {
            tokio::select! {
                _ = hup.recv() => {
                    tracing::info!("got SIGHUP, re-reading config");
                    ctx.reload();
                    if let Some(log) = &self.log_file {
                        if let Err(e) = log.reopen() {
                            tracing::error!("cannot reopen logfile: {e}");
                        }
                    }
                }
                _ = usr1.recv() => {
                    if ctx.paused_all() {
                        tracing::info!("got SIGUSR1, but already paused/suspended");
                        continue;
                    }
                    tracing::info!("got SIGUSR1, pausing all activity");
                    let ctx = ctx.clone();
                    // Tracked: PAUSE waits for servers to come back.
                    ctx.tasks.clone().spawn(async move { ctx.pause_db(None).await });
                }
                // The texts below are PgBouncer's (sig.c), word for word: operators grep for them.
                _ = usr2.recv() => {
                    if ctx.phase() != Phase::Running {
                        tracing::info!("got SIGUSR2 while shutting down, ignoring");
                    } else if ctx.paused_all() {
                        tracing::info!("got SIGUSR2, continuing from PAUSE");
                        ctx.resume_db(None);
                    } else {
                        tracing::info!("got SIGUSR2, but not paused/suspended");
                    }
                }
                _ = term.recv() => {
                    if ctx.phase() != Phase::Running {
                        tracing::info!("got SIGTERM while shutting down, fast exit");
                        break;
                    }
                    ctx.begin_drain(Phase::DrainClients);
                    if ctx.phase() == Phase::DrainTransactions {
                        tracing::info!(
                            "got SIGTERM, shutting down, waiting for all clients to finish their transactions"
                        );
                    } else {
                        tracing::info!("got SIGTERM, shutting down, waiting for all clients disconnect");
                    }
                }
                _ = int.recv() => {
                    if ctx.phase() != Phase::Running {
                        tracing::info!("got SIGINT while shutting down, fast exit");
                        break;
                    }
                    tracing::info!(
                        "got SIGINT, shutting down, waiting for all servers connections to be released"
                    );
                    ctx.begin_drain(Phase::DrainServers);
                }
                _ = quit.recv() => { tracing::info!("got SIGQUIT, fast exit"); break; }
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
