//! ollyscale-pooler: a PgBouncer-compatible PostgreSQL connection pooler.
//!
//! The modules follow the path a client's bytes take:
//! `listener` accepts → `session` (startup, auth, the request loop; `session::transfer` is the
//! hot path's byte pump, `session::pipeline` its I/O-free protocol bookkeeping) → `pool` (checkout/checkin of `server` connections) → `server` (login, internal
//! queries). `proto` frames bytes, `auth` holds the md5/SCRAM arithmetic, `config` reads
//! pgbouncer.ini and userlist.txt, `admin` is the console on the virtual database `pgbouncer`,
//! `stats` keeps the per-period averages and the read-only views that the console and `metrics`
//! (Prometheus and health endpoints over HTTP) both show,
//! `discovery` polls Patroni and publishes each cluster's topology,
//! `context` holds the shared handles and `app` wires it all together.
#![deny(unsafe_code)]
#![warn(clippy::large_futures)]
// No panic on input: unwrap/expect are denied outside tests (issue 12). Where a value is
// guaranteed by construction, `expect("invariant: ...")`: scripts/check-expect.py checks the
// message of every expect outside tests (clippy::expect_used cannot tell those apart).
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod admin;
pub mod app;
pub mod auth;
pub mod config;
pub mod context;
pub mod discovery;
pub mod error;
pub mod listener;
pub mod logfile;
pub mod logformat;
pub mod logsafe;
pub mod logsink;
pub mod metrics;
pub mod net;
pub mod pool;
pub mod privileges;
pub mod proto;
pub mod server;
pub mod session;
pub mod stats;
pub mod sys;
pub mod unwind;

/// Worker threads: `OLLYSCALE_WORKERS`, else half the cores (at least one).
///
/// Why half: the pooler shares its machine with PostgreSQL and the clients, and its cost per
/// transaction is mostly the kernel's; measured with pgbench on 2 cores, one thread running its
/// own event loop (no cross-thread wake-ups, as PgBouncer) spent less CPU per transaction than
/// two work-stealing threads, most of all for connection-per-transaction loads.
pub fn worker_threads() -> usize {
    std::env::var("OLLYSCALE_WORKERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| (n.get() / 2).max(1))
                .unwrap_or(1)
        })
}
