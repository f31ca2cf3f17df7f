//! A panic in one client's session, in an in-process pooler in front of a real PostgreSQL: the
//! other clients go on, and the panicked session is cleaned up (client list, max_client_conn
//! count, its server closed rather than returned to the pool).
//!
//! The panic comes from a real hook on the session's path, not a backdoor: the pool's
//! `PoolObserver` (the cluster router's seam) hears, from the session's own task, about a
//! transaction that ended with a role-change SQLSTATE; a panicking observer stands for any bug
//! met while a session holds a healthy server it would otherwise return to the pool.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ollyscale_pooler::config::{Config, ServerHost};
use ollyscale_pooler::pool::{PoolObserver, Signal};

use crate::common::{self, Pg};

/// Panics when told about a role-change SQLSTATE (here: 25006, a write in a READ ONLY transaction).
struct PanicsOnSqlstate;

impl PoolObserver for PanicsOnSqlstate {
    fn server_failed(&self, _addr: (&ServerHost, u16), signal: Signal) {
        if signal == Signal::Sqlstate {
            panic!("observer bug (injected by the test)");
        }
    }
}

/// Polls `cond` every 20 ms for up to 10 s (the clean-up runs on the pooler's tasks).
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Client A's session panics right after its transaction ends (ROLLBACK answered), while it
/// still holds its server. What A sees: the ROLLBACK answered, then its connection closed (no
/// ErrorResponse: the pooler cannot know where in the protocol the panic left the stream). What
/// everybody else sees: nothing. Client B, inside a transaction on its own server the whole
/// time, finishes it on the same backend; a new client logs in and queries. The pooler's books:
/// A is gone from the client list (SHOW CLIENTS, cancel keys) and from the max_client_conn count,
/// and A's backend is closed (gone from pg_stat_activity), not parked idle in the pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_panic_is_isolated_and_cleaned_up() {
    let pg = Pg::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let port = common::free_port();
    let ini = dir.path().join("pgbouncer.ini");
    let body = common::render_ini(pg.port, port, dir.path(), "", "default_pool_size = 3");
    std::fs::write(&ini, body).expect("write ini");
    std::fs::write(dir.path().join("userlist.txt"), common::render_userlist("")).expect("userlist");
    let cfg = Config::load(&ini).expect("config loads");
    let running = ollyscale_pooler::app::start(cfg)
        .await
        .expect("pooler starts");
    let ctx = running.ctx.clone();
    let conn = common::conn_string(port, "olly", "olly_pw", "testdb");

    let a = common::connect_to(&conn).await;
    let b = common::connect_to(&conn).await;
    a.simple_query("SELECT 1")
        .await
        .expect("A logs in and queries");
    let cfg = ctx.config();
    let db = cfg.database("testdb").expect("testdb configured");
    let set = ctx.pools.get_or_create(&cfg, &db, "olly");
    let pool = set.pools()[0].clone();
    pool.set_observer(Arc::new(PanicsOnSqlstate));

    b.batch_execute("BEGIN").await.expect("B begins");
    let b_pid: i32 = b
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .expect("B's backend")
        .get(0);

    a.batch_execute("BEGIN READ ONLY").await.expect("A begins");
    let a_pid: i32 = a
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .expect("A's backend")
        .get(0);
    assert_ne!(a_pid, b_pid, "A and B hold different servers");
    let err = a
        .batch_execute("CREATE TABLE panic_t (i int)")
        .await
        .expect_err("a write in a READ ONLY transaction fails");
    assert_eq!(
        err.code().map(|c| c.code()),
        Some("25006"),
        "A saw: {err:?}"
    );
    // The transaction ends: the session reports the SQLSTATE to the observer, which panics.
    a.batch_execute("ROLLBACK")
        .await
        .expect("A's ROLLBACK is answered");
    let after = a.simple_query("SELECT 1").await;
    let err = after.expect_err("A's session is gone");
    assert!(err.is_closed(), "A saw: {err:?}");

    eventually("A leaves the client list", || ctx.clients.len() == 1).await;
    assert_eq!(
        ctx.clients.count.load(Ordering::Relaxed),
        1,
        "max_client_conn count"
    );
    eventually("A's backend is closed, not returned", || {
        pg.psql(&format!(
            "SELECT count(*) FROM pg_stat_activity WHERE pid = {a_pid}"
        ))
        .trim()
            == "0"
    })
    .await;
    let snap = pool.snapshot();
    assert_eq!(snap.active, 1, "only B's server is out: {snap:?}");
    assert_eq!(
        pool.total(),
        snap.active + snap.idle + snap.used + snap.login
    );

    // B's transaction went on untouched, on the same backend.
    let still: i32 = b
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .expect("B's transaction survives A's panic")
        .get(0);
    assert_eq!(still, b_pid);
    b.batch_execute("COMMIT").await.expect("B commits");
    let c = common::connect_to(&conn).await;
    let n: i32 = c
        .query_one("SELECT 42", &[])
        .await
        .expect("a new client is served")
        .get(0);
    assert_eq!(n, 42);
    assert_eq!(ctx.clients.len(), 2, "B and C");
    ctx.shutdown.cancel();
}
