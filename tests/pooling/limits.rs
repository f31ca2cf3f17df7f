//! Limits and timeouts, each with PgBouncer's text and SQLSTATE 08P01.

use std::time::Duration;

use crate::common::{Pg, Pooler};
use crate::{assert_pooler_error, connect_watched, connection_error};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_client_conn_refuses_the_extra_client() {
    let pg = Pg::start();
    let pooler = Pooler::start(&pg, "", "max_client_conn = 2", "");
    let _a = pooler.connect("olly", "olly_pw", "testdb").await;
    let _b = pooler.connect("olly", "olly_pw", "testdb").await;
    let e = pooler
        .try_connect("olly", "olly_pw", "testdb")
        .await
        .expect_err("third refused");
    assert_pooler_error(&e, "no more connections allowed (max_client_conn)");
    drop(_a);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(pooler
        .try_connect("olly", "olly_pw", "testdb")
        .await
        .is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_wait_timeout_when_the_pool_is_busy() {
    let pg = Pg::start();
    let pooler = Pooler::start(&pg, "", "default_pool_size = 1\nquery_wait_timeout = 1", "");
    let holder = pooler.connect("olly", "olly_pw", "testdb").await;
    let waiter = pooler.connect("olly", "olly_pw", "testdb").await;
    holder.batch_execute("BEGIN").await.unwrap();
    let started = std::time::Instant::now();
    let e = waiter
        .simple_query("SELECT 1")
        .await
        .expect_err("times out");
    assert_pooler_error(&e, "query_wait_timeout");
    assert!(started.elapsed() >= Duration::from_millis(900));
    holder.batch_execute("COMMIT").await.unwrap();
    let again = pooler.connect("olly", "olly_pw", "testdb").await;
    assert!(again.simple_query("SELECT 1").await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_timeout_closes_client_and_server() {
    let pg = Pg::start();
    let pooler = Pooler::start(&pg, "", "query_timeout = 1", "");
    let c = pooler.connect("olly", "olly_pw", "testdb").await;
    let e = c
        .simple_query("SELECT pg_sleep(5)")
        .await
        .expect_err("query timeout");
    assert_pooler_error(&e, "query timeout");
    let c2 = pooler.connect("olly", "olly_pw", "testdb").await;
    assert!(c2.simple_query("SELECT pg_sleep(0.2)").await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_transaction_timeout() {
    let pg = Pg::start();
    let pooler = Pooler::start(&pg, "", "idle_transaction_timeout = 1", "");
    let (c, conn) = connect_watched(&pooler.conn_str("olly", "olly_pw", "testdb")).await;
    c.batch_execute("BEGIN").await.unwrap();
    let e = connection_error(conn).await;
    assert_pooler_error(&e, "idle transaction timeout");
    assert!(c.simple_query("SELECT 1").await.is_err());
    // The server was closed, not reused inside the transaction.
    let c2 = pooler.connect("olly", "olly_pw", "testdb").await;
    let r = c2
        .simple_query("SELECT now() = statement_timestamp()")
        .await
        .unwrap();
    assert!(
        matches!(&r[1], tokio_postgres::SimpleQueryMessage::Row(row) if row.get(0) == Some("t"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_idle_timeout() {
    let pg = Pg::start();
    let pooler = Pooler::start(&pg, "", "client_idle_timeout = 1", "");
    let (c, conn) = connect_watched(&pooler.conn_str("olly", "olly_pw", "testdb")).await;
    assert!(c.simple_query("SELECT 1").await.is_ok());
    let started = std::time::Instant::now();
    let e = connection_error(conn).await;
    assert_pooler_error(&e, "client_idle_timeout");
    assert!(started.elapsed() >= Duration::from_millis(800));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_login_timeout() {
    use std::io::Read;
    let pg = Pg::start();
    // A client that sends nothing is never accepted while tcp_defer_accept is on (PgBouncer's
    // Linux default): the kernel holds it. Off here, so the login timer is what ends it.
    let pooler = Pooler::start(
        &pg,
        "",
        "client_login_timeout = 1\ntcp_defer_accept = 0",
        "",
    );
    let mut s = std::net::TcpStream::connect(("127.0.0.1", pooler.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let started = std::time::Instant::now();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    assert!(started.elapsed() < Duration::from_secs(5));
    let text = String::from_utf8_lossy(&buf);
    assert!(text.contains("client_login_timeout"), "{text:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserve_pool_serves_a_client_that_waited_too_long() {
    let pg = Pg::start();
    let pooler = Pooler::start(
        &pg,
        "",
        "default_pool_size = 1\nreserve_pool_size = 1\nreserve_pool_timeout = 0.5\nquery_wait_timeout = 5",
        "",
    );
    let holder = pooler.connect("olly", "olly_pw", "testdb").await;
    holder.batch_execute("BEGIN").await.unwrap();
    let waiter = pooler.connect("olly", "olly_pw", "testdb").await;
    let started = std::time::Instant::now();
    waiter
        .simple_query("SELECT 1")
        .await
        .expect("served from the reserve pool");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(400), "{waited:?}");
    assert!(waited < Duration::from_secs(4), "{waited:?}");
    assert_eq!(pg.backend_count("testdb"), 2);
    // PgBouncer's warning, once per reserve server.
    assert_eq!(
        pooler
            .log()
            .matches("taking connection from reserve_pool")
            .count(),
        1,
        "{}",
        pooler.log()
    );
    holder.batch_execute("COMMIT").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_db_connections_caps_servers_across_users() {
    let pg = Pg::start();
    let pooler = Pooler::start(
        &pg,
        "",
        "default_pool_size = 5\nmax_db_connections = 2\nquery_wait_timeout = 1",
        "",
    );
    let a = pooler.connect("olly", "olly_pw", "testdb").await;
    let b = pooler.connect("md5user", "md5_pw", "testdb").await;
    // The third pool's login needs a server too: an idle one of a sibling pool is closed for it.
    let c = pooler.connect("scramuser", "scram_pw", "testdb").await;
    // A backend whose connection the pooler closed leaves pg_stat_activity a moment later, so
    // a third row may show briefly while the sibling's backend exits.
    let at_most_two = || pg.backend_count("testdb") <= 2;
    assert!(crate::eventually(Duration::from_secs(3), at_most_two).await);
    a.batch_execute("BEGIN").await.unwrap();
    b.batch_execute("BEGIN").await.unwrap();
    let e = c
        .simple_query("SELECT 1")
        .await
        .expect_err("no third server");
    assert_pooler_error(&e, "query_wait_timeout");
    assert!(crate::eventually(Duration::from_secs(3), at_most_two).await);
    a.batch_execute("COMMIT").await.unwrap();
    b.batch_execute("COMMIT").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_lifetime_idle_timeout_and_min_pool_size() {
    let pg = Pg::start();
    // Idle servers older than server_idle_timeout go, but never below min_pool_size.
    let pooler = Pooler::start(
        &pg,
        "",
        "default_pool_size = 4\nmin_pool_size = 2\nserver_idle_timeout = 1",
        "",
    );
    let c = pooler.connect("olly", "olly_pw", "testdb").await;
    c.simple_query("SELECT 1").await.unwrap();
    let filled =
        crate::eventually(Duration::from_secs(5), || pg.backend_count("testdb") == 2).await;
    assert!(
        filled,
        "min_pool_size not filled: {}",
        pg.backend_count("testdb")
    );
    // A burst opens more, then idling brings it back down to min_pool_size.
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let conn = pooler.connect("olly", "olly_pw", "testdb").await;
        tasks.push(tokio::spawn(async move {
            conn.simple_query("SELECT pg_sleep(0.3)").await.unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert!(pg.backend_count("testdb") >= 3);
    let shrunk =
        crate::eventually(Duration::from_secs(6), || pg.backend_count("testdb") == 2).await;
    assert!(shrunk, "idle servers kept: {}", pg.backend_count("testdb"));
    drop(pooler);

    // server_lifetime: a server older than that is closed at release and replaced.
    let pooler = Pooler::start(&pg, "", "default_pool_size = 1\nserver_lifetime = 1", "");
    let c = pooler.connect("olly", "olly_pw", "testdb").await;
    let pid = |rows: Vec<tokio_postgres::SimpleQueryMessage>| {
        rows.into_iter()
            .find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
                _ => None,
            })
            .unwrap()
    };
    let first = pid(c.simple_query("SELECT pg_backend_pid()").await.unwrap());
    assert_eq!(
        first,
        pid(c.simple_query("SELECT pg_backend_pid()").await.unwrap())
    );
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let later = pid(c.simple_query("SELECT pg_backend_pid()").await.unwrap());
    assert_ne!(first, later, "server outlived server_lifetime");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_client_that_leaves_never_runs_its_query() {
    let pg = Pg::start();
    pg.psql("CREATE TABLE q (v int)");
    let pooler = Pooler::start(&pg, "", "default_pool_size = 1", "");
    let holder = pooler.connect("olly", "olly_pw", "testdb").await;
    holder.batch_execute("BEGIN").await.unwrap();
    let (quitter, conn) = connect_watched(&pooler.conn_str("olly", "olly_pw", "testdb")).await;
    let pending =
        tokio::spawn(async move { quitter.batch_execute("INSERT INTO q VALUES (1)").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The client gives up while queued: its socket closes.
    conn.abort();
    pending.abort();
    tokio::time::sleep(Duration::from_millis(300)).await;
    holder.batch_execute("COMMIT").await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        pg.psql("SELECT count(*) FROM q"),
        "0",
        "a departed client's query ran"
    );
    // The single server is still usable: nothing leaked.
    for _ in 0..3 {
        let c = pooler.connect("olly", "olly_pw", "testdb").await;
        assert!(c.simple_query("SELECT 1").await.is_ok());
    }
    assert_eq!(pg.backend_count("testdb"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forced_user_min_pool_size_is_filled_without_clients_within_pool_size() {
    let pg = Pg::start();
    // A forced-user database keeps min_pool_size from the start (PgBouncer does), but never
    // more than its pool_size.
    let pooler = Pooler::start(
        &pg,
        &format!(
            "forced = host=127.0.0.1 port={} dbname=testdb user=olly min_pool_size=5 pool_size=3",
            pg.port
        ),
        "",
        "",
    );
    let filled =
        crate::eventually(Duration::from_secs(5), || pg.backend_count("testdb") == 3).await;
    assert!(filled, "servers: {}", pg.backend_count("testdb"));
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(pg.backend_count("testdb"), 3, "pool_size is the cap");
    drop(pooler);
}

/// query_timeout running out while the client still waits for a server: PgBouncer's text for that
/// case is `query_timeout` (underscore), not the `query timeout` of a running query.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_timeout_while_queued_says_query_timeout() {
    let pg = Pg::start();
    let pooler = Pooler::start(
        &pg,
        "",
        "default_pool_size = 1\nquery_timeout = 1\nquery_wait_timeout = 60",
        "",
    );
    let holder = pooler.connect("olly", "olly_pw", "testdb").await;
    let waiter = pooler.connect("olly", "olly_pw", "testdb").await;
    holder.batch_execute("BEGIN").await.unwrap();
    let e = waiter
        .simple_query("SELECT 1")
        .await
        .expect_err("times out in the queue");
    assert_pooler_error(&e, "query_timeout");
    holder.batch_execute("COMMIT").await.unwrap();
}

/// The pooler's log lines that close a server of `pool` (`db/user@`) with `reason`.
fn closed_because(pooler: &Pooler, pool: &str, reason: &str) -> bool {
    let needle = format!("closing because: {reason}");
    pooler
        .log()
        .lines()
        .any(|l| l.contains(&format!(" {pool}@")) && l.contains(&needle))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_db_connections_evicts_an_idle_server_of_another_user() {
    let pg = Pg::start();
    // One server for the whole database; min_pool_size makes olly's pool want its server back
    // (PgBouncer's suite: p0y, min_pool_size=5 max_db_connections=2).
    let pooler = Pooler::start(
        &pg,
        "",
        "default_pool_size = 5\nmin_pool_size = 1\nmax_db_connections = 1\nquery_wait_timeout = 20",
        "",
    );
    let a = pooler.connect("olly", "olly_pw", "testdb").await;
    a.simple_query("SELECT 1").await.unwrap();
    // olly's server is idle now (transaction mode); md5user's pool needs the database's only place.
    let b = pooler.connect("md5user", "md5_pw", "testdb").await;
    b.simple_query("SELECT 1")
        .await
        .expect("served by evicting olly's idle server");
    assert!(
        closed_because(&pooler, "testdb/olly", "evicted"),
        "no eviction line:\n{}",
        pooler.log()
    );
    assert!(crate::eventually(Duration::from_secs(3), || pg.backend_count("testdb") <= 1).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_user_connections_evicts_an_idle_server_of_another_database() {
    let pg = Pg::start();
    let pooler = Pooler::start(
        &pg,
        &format!("otherdb = host=127.0.0.1 port={} dbname=testdb", pg.port),
        "default_pool_size = 5\nmin_pool_size = 1\nmax_user_connections = 1\nquery_wait_timeout = 20",
        "",
    );
    let a = pooler.connect("olly", "olly_pw", "testdb").await;
    a.simple_query("SELECT 1").await.unwrap();
    // The user's only place is idle in testdb's pool; otherdb's pool needs one.
    let b = pooler.connect("olly", "olly_pw", "otherdb").await;
    b.simple_query("SELECT 1")
        .await
        .expect("served by evicting the testdb pool's idle server");
    assert!(
        closed_because(&pooler, "testdb/olly", "evicted"),
        "no eviction line:\n{}",
        pooler.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eviction_stops_once_the_starved_pool_has_its_launch() {
    let pg = Pg::start();
    // otherdb's server login is slow (its connect_query), so several janitor passes run while
    // the one client it serves waits for the launch the first eviction made room for.
    let pooler = Pooler::start(
        &pg,
        &format!(
            "otherdb = host=127.0.0.1 port={} dbname=testdb connect_query='SELECT pg_sleep(1)'",
            pg.port
        ),
        "default_pool_size = 5\nmax_user_connections = 2\nquery_wait_timeout = 20",
        "",
    );
    let a1 = pooler.connect("olly", "olly_pw", "testdb").await;
    let a2 = pooler.connect("olly", "olly_pw", "testdb").await;
    a1.simple_query("BEGIN").await.unwrap();
    a2.simple_query("SELECT 1").await.unwrap();
    a1.simple_query("COMMIT").await.unwrap();
    // testdb's pool holds both of the user's places, idle; otherdb needs one of them.
    let b = pooler.connect("olly", "olly_pw", "otherdb").await;
    b.simple_query("SELECT 1")
        .await
        .expect("served by evicting one idle testdb server");
    let evicted = pooler
        .log()
        .lines()
        .filter(|l| l.contains(" testdb/olly@") && l.contains("closing because: evicted"))
        .count();
    assert_eq!(evicted, 1, "one place was needed:\n{}", pooler.log());
}
