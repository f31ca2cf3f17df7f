//! Integration-test harness: a throwaway PostgreSQL (`Pg`), a two-node Patroni cluster with etcd
//! (`PatroniLab`), the built pooler in front of them (`Pooler`), and the client tools
//! (tokio-postgres, `psql`, `pgbench`) the tests drive them with.
//!
//! Every server listens on 127.0.0.1 only, on a free port, with its files in its own temp dir, and is
//! stopped by PID (never by name) when its owner drops, also on panic; a process-exit hook kills
//! anything left over (e.g. a `Pg` kept in a `static`). Tests may run in parallel threads and
//! processes. A server that cannot start makes the test panic with its log: nothing is ever skipped.
//!
//! Use from `tests/foo.rs` as `mod common;`, or from `tests/it/main.rs` as
//! `#[path = "../common/mod.rs"] mod common;`. Env: `KEEP_TEST_DIRS=1` keeps the temp dirs (their
//! paths are printed), `PG_BIN_DIR` picks a PostgreSQL bin dir other than the newest under
//! /usr/lib/postgresql.
//!
//! The blocking helpers (`Pg::psql`, `psql`, `pgbench`, `wait_for_log`, ...) block the calling
//! thread; inside `#[tokio::test]` prefer `flavor = "multi_thread"` when clients must keep running
//! meanwhile, or call them through `tokio::task::spawn_blocking`.

// Each test binary uses a different part of the harness.
#![allow(dead_code, unused_imports)]

mod patroni;
mod pg;
mod pooler;
mod process;
pub mod slapd;

use std::process::Command;
use std::time::Duration;

pub use patroni::{PatroniLab, PatroniNode};
pub use pg::Pg;
pub use pooler::{ini_value, render_ini, render_userlist, Pooler};
pub use process::{free_port, keep_dirs, pid_alive};
pub use slapd::Slapd;

use process::{clear_pg_env, run_bounded};

/// Bound on one `psql` run (a hang is a test failure, not a stuck CI).
const PSQL_TIMEOUT: Duration = Duration::from_secs(120);
/// Bound on one `pgbench` run.
const PGBENCH_TIMEOUT: Duration = Duration::from_secs(600);
/// Bound on establishing one tokio-postgres connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(60);

/// `host=127.0.0.1 port=N user=U password=P dbname=D` (values quoted when needed).
pub fn conn_string(port: u16, user: &str, password: &str, db: &str) -> String {
    format!(
        "host=127.0.0.1 port={port} user={} password={} dbname={}",
        conn_value(user),
        conn_value(password),
        conn_value(db)
    )
}

/// A libpq/tokio-postgres connection-string value, single-quoted when empty or holding
/// spaces, quotes or backslashes.
fn conn_value(v: &str) -> String {
    if !v.is_empty() && !v.contains([' ', '\'', '\\', '=']) {
        return v.to_string();
    }
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// A SQL string literal ('...' with quotes doubled).
pub fn sql_literal(v: &str) -> String {
    format!("'{}'", v.replace('\'', "''"))
}

/// tokio-postgres connect (NoTls) with the connection task spawned on the current runtime;
/// panics with the error on failure.
pub async fn connect_to(conn_str: &str) -> tokio_postgres::Client {
    match try_connect_to(conn_str).await {
        Ok(client) => client,
        Err(e) => panic!("connect {conn_str:?} failed: {e} ({e:?})"),
    }
}

/// Like `connect_to`, returning the error. Panics only if connecting hangs past 60 s.
pub async fn try_connect_to(
    conn_str: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let connecting = tokio_postgres::connect(conn_str, tokio_postgres::NoTls);
    let (client, connection) = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
        .await
        .unwrap_or_else(|_| panic!("connect {conn_str:?} hung for {CONNECT_TIMEOUT:?}"))?;
    // Detached: ends when the client is dropped or the peer closes; errors surface on the client.
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// `psql -X -A -t -q -v ON_ERROR_STOP=1 "<conn_str>" -c <sql>` (password from the conn string).
/// Returns (exit code, stdout trimmed, stderr). Panics only if psql hangs past 120 s.
pub fn psql(conn_str: &str, sql: &str) -> (i32, String, String) {
    let mut cmd = Command::new(pg::pg_tool("psql"));
    clear_pg_env(&mut cmd).env("PGCONNECT_TIMEOUT", "30").args([
        "-X",
        "-A",
        "-t",
        "-q",
        "-v",
        "ON_ERROR_STOP=1",
        conn_str,
        "-c",
        sql,
    ]);
    let (code, out, err) = run_bounded(&mut cmd, PSQL_TIMEOUT, "psql");
    (code, out.trim().to_string(), err)
}

/// `pgbench -h 127.0.0.1 -p <port> -U <user> <args...> <db>` with PGPASSWORD set, e.g.
/// `&["-i", "-s", "1"]` or `&["-S", "-c", "10", "-T", "3", "-M", "extended"]`.
/// Returns (exit code, stdout, stderr). Panics only if pgbench runs past 600 s.
pub fn pgbench(
    port: u16,
    user: &str,
    password: &str,
    db: &str,
    args: &[&str],
) -> (i32, String, String) {
    let mut cmd = Command::new(pg::pg_tool("pgbench"));
    clear_pg_env(&mut cmd)
        .env("PGPASSWORD", password)
        .env("PGCONNECT_TIMEOUT", "30")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", user])
        .args(args)
        .arg(db);
    run_bounded(&mut cmd, PGBENCH_TIMEOUT, "pgbench")
}

/// N from pgbench's "number of failed transactions: N (x.xxx%)".
pub fn pgbench_failed_transactions(stdout: &str) -> Option<u64> {
    pgbench_number(stdout, "number of failed transactions:")
}

/// N from pgbench's "number of transactions actually processed: N" (or "N/M" with -t).
pub fn pgbench_processed(stdout: &str) -> Option<u64> {
    pgbench_number(stdout, "number of transactions actually processed:")
}

fn pgbench_number(stdout: &str, label: &str) -> Option<u64> {
    let rest = stdout.lines().find_map(|l| l.trim().strip_prefix(label))?;
    let digits: String = rest
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}
