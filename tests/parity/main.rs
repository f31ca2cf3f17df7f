//! PgBouncer parity (issue 10) through the built pooler in front of a real PostgreSQL: the
//! run-time SET of every changeable key, the client caps, the newer keys (transaction_timeout,
//! query_wait_notify, server_fast_close, the listener's socket options, so_reuseport, syslog),
//! the console over the Unix socket, auth_type peer, SUSPEND and replication connections.

#[path = "../common/mod.rs"]
mod common;
#[path = "../console/mod.rs"]
mod console;

mod caps;
mod dns;
mod hosts;
mod idle;
mod keys;
mod listen;
mod local;
mod login;
mod replication;
mod syslog;
mod tsa;

use std::sync::OnceLock;
use std::time::Duration;

use common::{Pg, Pooler};
use console::Raw;

/// One PostgreSQL for the tests that need nothing special from it.
pub fn pg() -> &'static Pg {
    static PG: OnceLock<Pg> = OnceLock::new();
    PG.get_or_init(Pg::start)
}

/// A console session as the admin user `olly`.
pub async fn admin(p: &Pooler) -> Raw {
    Raw::connect(p.port, "olly", "olly_pw", "pgbouncer")
        .await
        .unwrap_or_else(|e| panic!("admin login: {e:?}"))
}

/// The (severity, SQLSTATE, message) a login was refused with.
pub async fn refused(p: &Pooler, user: &str, password: &str, db: &str) -> (String, String, String) {
    match Raw::connect(p.port, user, password, db).await {
        Ok(_) => panic!("{user}@{db}: login was expected to fail"),
        Err(f) => (f.severity, f.code, f.message),
    }
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

/// FATAL 08P01 with `text`, as PgBouncer sends its pooler errors.
pub fn fatal(text: &str) -> (String, String, String) {
    ("FATAL".into(), "08P01".into(), text.into())
}
