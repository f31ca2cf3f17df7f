//! ollyscale-pooler: a PgBouncer-compatible PostgreSQL connection pooler.
//!
//! The modules follow the path a client's bytes take:
//! `listener` accepts → `session` (startup, auth, the request loop; `session::transfer` is the
//! hot path) → `pool` (checkout/checkin of `server` connections) → `server` (login, internal
//! queries). `proto` frames bytes, `auth` holds the md5/SCRAM arithmetic, `config` reads
//! pgbouncer.ini and userlist.txt, `admin` is the console on the virtual database `pgbouncer`,
//! `stats` keeps the per-period averages and the read-only views that the console and `metrics`
//! (Prometheus and health endpoints over HTTP) both show,
//! `context` holds the shared handles and `app` wires it all together.
#![deny(unsafe_code)]
#![warn(clippy::large_futures)]

pub mod admin;
pub mod app;
pub mod auth;
pub mod config;
pub mod context;
pub mod error;
pub mod listener;
pub mod metrics;
pub mod net;
pub mod pool;
pub mod privileges;
pub mod proto;
pub mod server;
pub mod session;
pub mod stats;

/// Worker threads: `OLLYSCALE_WORKERS`, else one per core.
pub fn worker_threads() -> usize {
    std::env::var("OLLYSCALE_WORKERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
        })
}
