//! The admin console (virtual database `pgbouncer`) against a real PostgreSQL through the built
//! pooler: every SHOW's column names and types (PgBouncer 1.25.2, reference §1.3), values that
//! move with client traffic, privileges, errors, SET, and the control commands.
//!
//! One PostgreSQL serves every test of this binary; each test starts its own pooler.
//! `admin/shows.rs`: SHOW, privileges, drivers; `admin/control.rs`: PAUSE ... SHUTDOWN, SET, RELOAD.

mod common;
mod console;

#[path = "admin/control.rs"]
mod control;
#[path = "admin/shows.rs"]
mod shows;

use std::sync::OnceLock;

use common::{Pg, Pooler};
use console::Raw;

pub const TEXT: u32 = 25;
pub const INT4: u32 = 23;
pub const INT8: u32 = 20;
pub const NUMERIC: u32 = 1700;

pub fn pg() -> &'static Pg {
    static PG: OnceLock<Pg> = OnceLock::new();
    PG.get_or_init(Pg::start)
}

pub fn pooler() -> Pooler {
    Pooler::start(pg(), "", "", "")
}

pub async fn admin(p: &Pooler) -> Raw {
    Raw::connect(p.port, "olly", "olly_pw", "pgbouncer")
        .await
        .unwrap_or_else(|e| panic!("admin login: {e:?}"))
}

pub async fn stats_user(p: &Pooler) -> Raw {
    Raw::connect(p.port, "stats", "stats_pw", "pgbouncer")
        .await
        .unwrap_or_else(|e| panic!("stats login: {e:?}"))
}

/// Asserts an ERROR 08P01 with `message`, after which the session still works.
pub async fn expect_error(c: &mut Raw, sql: &str, code: &str, message: &str) {
    let a = c.query(sql).await;
    let e = a
        .error
        .as_ref()
        .unwrap_or_else(|| panic!("{sql}: expected error {message:?}, got {a:?}"));
    assert_eq!(
        (e.severity.as_str(), e.code.as_str(), e.message.as_str()),
        ("ERROR", code, message),
        "{sql}"
    );
    assert!(!a.closed, "{sql}: the session must go on");
    c.query("SHOW VERSION").await.expect_show();
}
