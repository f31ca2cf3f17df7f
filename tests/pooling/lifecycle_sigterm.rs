//! SIGTERM as PgBouncer 1.23+ has it (`shutdown_drain = clients`, the default): no new TCP
//! connections, every connected client served until it leaves by itself, then exit; a second
//! SIGTERM exits at once. (The transaction-end drain is tested in `lifecycle.rs`.)

use std::time::Duration;

use crate::common::{Pg, Pooler};
use crate::console::Raw;
use crate::eventually;

/// Runs psql over the pooler's Unix socket (off the runtime's threads): (exit code, stdout, stderr).
async fn unix_psql(p: &Pooler, user: &str, pw: &str, db: &str, sql: &str) -> (i32, String, String) {
    let conn = format!(
        "host={} port={} user={user} password={pw} dbname={db}",
        p.dir.display(),
        p.port
    );
    let sql = sql.to_string();
    tokio::task::spawn_blocking(move || crate::common::psql(&conn, &sql))
        .await
        .expect("psql")
}

/// Whether the process is still up (does not wait).
fn running(p: &mut Pooler) -> bool {
    p.wait_exit(Duration::ZERO).is_none()
}

/// Waits (off the runtime's threads) for the pooler to exit and returns whether it exited 0.
async fn exits_cleanly(mut p: Pooler, secs: u64) -> bool {
    let status = tokio::task::spawn_blocking(move || p.wait_exit(Duration::from_secs(secs)))
        .await
        .expect("wait");
    status.is_some_and(|s| s.success())
}

/// The default SIGTERM: idle and busy clients keep being served (a second later, and after a
/// COMMIT), new TCP connections are refused, the console still answers (an open session, and a
/// new one over the Unix socket, where normal logins are refused), and the process exits once
/// the last client, console included, has left by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_waits_for_every_client_to_leave() {
    let pg = Pg::start();
    let p = Pooler::start(&pg, "", "", "");
    let idle = p.connect("olly", "olly_pw", "testdb").await;
    idle.simple_query("SELECT 1").await.expect("before");
    let busy = p.connect("olly", "olly_pw", "testdb").await;
    busy.batch_execute("BEGIN; SELECT 1").await.expect("begin");
    let mut console = Raw::connect(p.port, "olly", "olly_pw", "pgbouncer")
        .await
        .expect("console");
    p.signal(libc::SIGTERM);
    let p2 = tokio::task::spawn_blocking(move || {
        let seen = p.wait_for_log(
            "got SIGTERM, shutting down, waiting for all clients disconnect",
            Duration::from_secs(10),
        );
        (seen, p)
    })
    .await
    .expect("wait");
    assert!(p2.0, "PgBouncer's SIGTERM line:\n{}", p2.1.log());
    let mut p = p2.1;
    // Well past the transaction drain's 100 ms of quiet: PgBouncer closes nobody.
    tokio::time::sleep(Duration::from_secs(1)).await;
    idle.simple_query("SELECT 1")
        .await
        .expect("an idle client is still served");
    busy.batch_execute("COMMIT").await.expect("commit");
    busy.simple_query("SELECT 1")
        .await
        .expect("a client is still served after its COMMIT");
    let refused = tokio::net::TcpStream::connect(("127.0.0.1", p.port))
        .await
        .expect_err("the TCP listener is closed");
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
    let a = console.query("SHOW VERSION").await;
    assert!(a.error.is_none(), "{a:?}");
    let shown = unix_psql(&p, "olly", "olly_pw", "pgbouncer", "SHOW VERSION").await;
    assert_eq!(shown.0, 0, "console over the Unix socket: {shown:?}");
    assert!(shown.1.contains("PgBouncer"), "{shown:?}");
    let login = unix_psql(&p, "olly", "olly_pw", "testdb", "SELECT 1").await;
    assert_ne!(login.0, 0, "{login:?}");
    assert!(login.2.contains("pooler is shutting down"), "{login:?}");
    drop(idle);
    drop(busy);
    // Time for the process to see both leave (and, were it counting only them, to exit).
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The open console session is a client too, as in PgBouncer; it still answers.
    let a = console.query("SHOW VERSION").await;
    assert!(a.error.is_none(), "{a:?}");
    assert!(running(&mut p), "exited while a console session was open");
    drop(console);
    assert!(exits_cleanly(p, 15).await, "exit once the last client left");
}

/// PgBouncer's test_repeated_sigterm: after one SIGTERM the client goes on a second later and the
/// process stays; a second SIGTERM exits at once and the client's connection is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_sigterm_exits_at_once() {
    let pg = Pg::start();
    let p = Pooler::start(&pg, "", "", "");
    let c = p.connect("olly", "olly_pw", "testdb").await;
    c.simple_query("SELECT 1").await.expect("before");
    p.signal(libc::SIGTERM);
    let mut p = tokio::task::spawn_blocking(move || {
        assert!(p.wait_for_log("got SIGTERM, shutting down", Duration::from_secs(10)));
        p
    })
    .await
    .expect("wait");
    tokio::time::sleep(Duration::from_secs(1)).await;
    c.simple_query("SELECT 1")
        .await
        .expect("served after one SIGTERM");
    assert!(running(&mut p), "one SIGTERM waits for the client");
    p.signal(libc::SIGTERM);
    let p = tokio::task::spawn_blocking(move || {
        assert!(p.wait_for_log(
            "got SIGTERM while shutting down, fast exit",
            Duration::from_secs(10)
        ));
        p
    })
    .await
    .expect("wait");
    assert!(exits_cleanly(p, 10).await, "a second SIGTERM exits");
    assert!(c.simple_query("SELECT 1").await.is_err());
}

/// `SET shutdown_drain = transaction` during a SIGTERM that waits for clients turns it into the
/// transaction-end drain: the idle client is closed without an error message and the process
/// exits without waiting for it to leave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_shutdown_drain_during_the_wait_closes_idle_clients() {
    let pg = Pg::start();
    let p = Pooler::start(&pg, "", "", "");
    let idle = p.connect("olly", "olly_pw", "testdb").await;
    idle.simple_query("SELECT 1").await.expect("before");
    p.signal(libc::SIGTERM);
    let p = tokio::task::spawn_blocking(move || {
        assert!(p.wait_for_log("got SIGTERM, shutting down", Duration::from_secs(10)));
        p
    })
    .await
    .expect("wait");
    tokio::time::sleep(Duration::from_millis(300)).await;
    idle.simple_query("SELECT 1")
        .await
        .expect("still served while the drain waits for clients");
    let set = unix_psql(
        &p,
        "olly",
        "olly_pw",
        "pgbouncer",
        "SET shutdown_drain = transaction",
    )
    .await;
    assert_eq!(set.0, 0, "{set:?}");
    assert!(
        eventually(Duration::from_secs(10), || idle.is_closed()).await,
        "the idle client is closed"
    );
    let err = idle.simple_query("SELECT 1").await.unwrap_err();
    assert!(
        err.as_db_error().is_none(),
        "closed without a message: {err}"
    );
    assert!(
        exits_cleanly(p, 15).await,
        "exit without the client leaving"
    );
}
