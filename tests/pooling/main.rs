//! Integration tests of the transaction-mode core through the built pooler, in front of a real
//! PostgreSQL started by the harness, driven by real clients (tokio-postgres, psql, pgbench).

#[path = "../common/mod.rs"]
mod common;
#[path = "../console/mod.rs"]
mod console;

mod auth;
mod extended;
mod frames;
mod lifecycle;
mod lifecycle_sigterm;
mod limits;
mod prepared;
mod prepared_errors;
mod protocol;
mod transactions;

use std::time::Duration;

use tokio_postgres::error::SqlState;

/// The (SQLSTATE, message) of a tokio-postgres error that came from the other side.
pub fn db_error(e: &tokio_postgres::Error) -> (String, String) {
    match e.as_db_error() {
        Some(db) => (db.code().code().to_string(), db.message().to_string()),
        None => (String::new(), e.to_string()),
    }
}

/// Asserts an error is a pooler FATAL with 08P01 and `text`.
pub fn assert_pooler_error(e: &tokio_postgres::Error, text: &str) {
    let (code, msg) = db_error(e);
    assert_eq!(code, SqlState::PROTOCOL_VIOLATION.code(), "error: {e:?}");
    assert_eq!(msg, text, "error: {e:?}");
}

/// Polls `f` until it is true or `limit` passes.
pub async fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    f()
}

/// Connects with tokio-postgres and keeps the connection task's result: errors the server sends
/// while no query is running (timeouts) surface there, not on the next query.
pub async fn connect_watched(
    conn_str: &str,
) -> (
    tokio_postgres::Client,
    tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>,
) {
    let (client, conn) = tokio_postgres::connect(conn_str, tokio_postgres::NoTls)
        .await
        .expect("connect through the pooler");
    (client, tokio::spawn(conn))
}

/// The error a watched connection ended with.
pub async fn connection_error(
    handle: tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>,
) -> tokio_postgres::Error {
    tokio::time::timeout(Duration::from_secs(10), handle)
        .await
        .expect("connection ended")
        .expect("connection task")
        .expect_err("connection ended with an error")
}
