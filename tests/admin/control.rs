//! The control commands: PAUSE, RESUME, KILL, DISABLE, ENABLE, RECONNECT, WAIT_CLOSE, RELOAD,
//! SHUTDOWN, and SET with SHOW CONFIG. (KILL_CLIENT is checked in shows.rs, with the traffic.)

use std::time::{Duration, Instant};

use crate::console::Raw;
use crate::{admin, expect_error, pg, pooler};

/// PAUSE waits for the transaction in flight, queues new queries, RESUME runs them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_and_resume() {
    let p = pooler();
    let mut c = admin(&p).await;
    expect_error(&mut c, "RESUME", "08P01", "pooler is not paused/suspended").await;
    expect_error(&mut c, "PAUSE nope", "08P01", "no such database: nope").await;
    expect_error(
        &mut c,
        "PAUSE pgbouncer",
        "08P01",
        "cannot pause admin db: pgbouncer",
    )
    .await;
    expect_error(
        &mut c,
        "RESUME testdb",
        "08P01",
        "database testdb is not paused",
    )
    .await;

    let busy = p.connect("md5user", "md5_pw", "testdb").await;
    busy.simple_query("BEGIN").await.expect("begin");
    busy.simple_query("SELECT 1").await.expect("select");

    // PAUSE testdb must not return while the transaction holds its server.
    let port = p.port;
    let pause = tokio::spawn(async move {
        let mut c2 = Raw::connect(port, "olly", "olly_pw", "pgbouncer")
            .await
            .expect("login");
        let started = Instant::now();
        let a = c2.query("PAUSE testdb").await;
        (a, started.elapsed(), c2)
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !pause.is_finished(),
        "PAUSE returned while a server was in use"
    );
    let dbs = c.query("SHOW DATABASES").await;
    assert_eq!(dbs.num("name", "testdb", "paused"), 1);
    busy.simple_query("COMMIT").await.expect("commit");
    let (a, waited, mut c2) = pause.await.expect("pause task");
    assert_eq!(a.tag.as_deref(), Some("PAUSE"), "{a:?}");
    assert!(
        waited >= Duration::from_millis(400),
        "PAUSE waited {waited:?}"
    );
    // Servers are closed once paused.
    let pools = c.query("SHOW POOLS").await;
    assert_eq!(pools.num("database", "testdb", "sv_idle"), 0);
    assert_eq!(pools.num("database", "testdb", "sv_active"), 0);

    // A query now waits...
    let waiting = tokio::spawn(async move { busy.simple_query("SELECT 42").await.map(|_| busy) });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!waiting.is_finished(), "query ran while paused");
    let pools = c.query("SHOW POOLS").await;
    assert_eq!(pools.num("database", "testdb", "cl_waiting"), 1);
    let clients = c.query("SHOW CLIENTS").await;
    assert_eq!(clients.rows_where("state", "waiting").len(), 1);
    // ... and runs on RESUME.
    let r = c2.query("RESUME testdb").await;
    assert_eq!(r.tag.as_deref(), Some("RESUME"), "{r:?}");
    let busy = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("query ran after RESUME")
        .expect("task")
        .expect("query ok");

    // Global PAUSE: a second one is refused, SHOW STATE says paused, RESUME undoes it.
    let a = c.query("PAUSE").await;
    assert_eq!(a.tag.as_deref(), Some("PAUSE"), "{a:?}");
    expect_error(&mut c, "PAUSE", "08P01", "already suspended/paused").await;
    expect_error(&mut c, "KILL testdb", "08P01", "already suspended/paused").await;
    let state = c.query("SHOW STATE").await;
    assert_eq!(state.get("key", "paused", "value").as_deref(), Some("yes"));
    assert_eq!(state.get("key", "active", "value").as_deref(), Some("no"));
    let r = c.query("RESUME").await;
    assert_eq!(r.tag.as_deref(), Some("RESUME"), "{r:?}");
    busy.simple_query("SELECT 1")
        .await
        .expect("runs after RESUME");
}

/// KILL drops clients at once and leaves the db paused; DISABLE refuses logins; RECONNECT and
/// WAIT_CLOSE retire servers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_disable_reconnect() {
    let p = pooler();
    let mut c = admin(&p).await;
    expect_error(&mut c, "DISABLE", "08P01", "a database is required").await;
    expect_error(&mut c, "DISABLE nope", "08P01", "no such database: nope").await;
    expect_error(
        &mut c,
        "DISABLE pgbouncer",
        "08P01",
        "cannot disable admin db: pgbouncer",
    )
    .await;
    expect_error(
        &mut c,
        "KILL pgbouncer",
        "08P01",
        "cannot kill admin db: pgbouncer",
    )
    .await;
    expect_error(&mut c, "RECONNECT nope", "08P01", "no such database: nope").await;
    expect_error(
        &mut c,
        "WAIT_CLOSE pgbouncer",
        "08P01",
        "cannot wait in admin db: pgbouncer",
    )
    .await;

    // RECONNECT: servers in use are marked close_needed, and WAIT_CLOSE returns once they close.
    let cl = p.connect("md5user", "md5_pw", "testdb").await;
    cl.simple_query("BEGIN").await.expect("begin");
    let r = c.query("RECONNECT testdb").await;
    assert_eq!(r.tag.as_deref(), Some("RECONNECT"), "{r:?}");
    let servers = c.query("SHOW SERVERS").await;
    assert_eq!(servers.num("database", "testdb", "close_needed"), 1);
    let port = p.port;
    let wait = tokio::spawn(async move {
        let mut c2 = Raw::connect(port, "olly", "olly_pw", "pgbouncer")
            .await
            .expect("login");
        c2.query("WAIT_CLOSE testdb").await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !wait.is_finished(),
        "WAIT_CLOSE returned with a close_needed server"
    );
    cl.simple_query("COMMIT").await.expect("commit");
    let a = tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .expect("WAIT_CLOSE returned")
        .expect("task");
    assert_eq!(a.tag.as_deref(), Some("WAIT_CLOSE"), "{a:?}");
    let servers = c.query("SHOW SERVERS").await;
    assert!(servers.rows_where("close_needed", "1").is_empty());

    // DISABLE: new logins refused, existing clients go on; ENABLE undoes it.
    assert_eq!(
        c.query("DISABLE testdb").await.tag.as_deref(),
        Some("DISABLE")
    );
    let Err(err) = p.try_connect("md5user", "md5_pw", "testdb").await else {
        panic!("login to a disabled database accepted");
    };
    assert!(
        format!("{err:?}").contains("database \\\"testdb\\\" is disabled")
            || format!("{err}").contains("database \"testdb\" is disabled"),
        "{err:?}"
    );
    cl.simple_query("SELECT 1")
        .await
        .expect("existing client goes on");
    assert_eq!(
        c.query("SHOW DATABASES")
            .await
            .num("name", "testdb", "disabled"),
        1
    );
    assert_eq!(
        c.query("ENABLE testdb").await.tag.as_deref(),
        Some("ENABLE")
    );
    let again = p.connect("md5user", "md5_pw", "testdb").await;
    again.simple_query("SELECT 1").await.expect("enabled");

    // KILL: every client of the db gets FATAL database removed; the db stays paused.
    let mut raw = Raw::connect(p.port, "md5user", "md5_pw", "testdb")
        .await
        .expect("raw login");
    raw.query("SELECT 1").await;
    let k = c.query("KILL testdb").await;
    assert_eq!(k.tag.as_deref(), Some("KILL"), "{k:?}");
    let gone = raw.answer().await;
    let e = gone.error.expect("FATAL for a killed client");
    assert_eq!(
        (e.severity.as_str(), e.message.as_str()),
        ("FATAL", "database removed")
    );
    assert!(gone.closed);
    for client in [&cl, &again] {
        client.simple_query("SELECT 1").await.expect_err("killed");
    }
    assert_eq!(
        c.query("SHOW DATABASES")
            .await
            .num("name", "testdb", "paused"),
        1
    );
    assert_eq!(
        c.query("SHOW POOLS")
            .await
            .num("database", "testdb", "sv_idle"),
        0
    );
    // A plain RESUME does not undo KILL db; RESUME testdb does.
    expect_error(&mut c, "RESUME", "08P01", "pooler is not paused/suspended").await;
    assert_eq!(
        c.query("RESUME testdb").await.tag.as_deref(),
        Some("RESUME")
    );
    let fresh = p.connect("md5user", "md5_pw", "testdb").await;
    fresh
        .simple_query("SELECT 1")
        .await
        .expect("works after RESUME testdb");
}

/// SET changes reloadable settings (SHOW CONFIG follows) and refuses the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_and_show_config() {
    let p = pooler();
    let mut c = admin(&p).await;
    let cfg = c.query("SHOW CONFIG").await;
    cfg.expect_show();
    let keys: Vec<_> = cfg
        .rows
        .iter()
        .map(|r| r[0].clone().expect("key"))
        .collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted, "SHOW CONFIG is sorted by key");
    assert_eq!(
        cfg.get("key", "listen_port", "changeable").as_deref(),
        Some("no")
    );
    assert_eq!(
        cfg.get("key", "default_pool_size", "changeable").as_deref(),
        Some("yes")
    );
    assert_eq!(
        cfg.get("key", "default_pool_size", "value").as_deref(),
        Some("20")
    );
    assert_eq!(
        cfg.get("key", "pool_mode", "value").as_deref(),
        Some("transaction")
    );
    assert_eq!(
        cfg.get("key", "pool_mode", "default").as_deref(),
        Some("session")
    );
    assert_eq!(
        cfg.get("key", "max_client_conn", "value").as_deref(),
        Some("100")
    );

    let a = c.query("SET default_pool_size = 7").await;
    assert!(a.error.is_none(), "{a:?}");
    assert_eq!(a.tag.as_deref(), Some("SET default_pool_size=7"));
    let a = c
        .query("set server_reset_query = 'DISCARD ALL; SELECT 1'")
        .await;
    assert_eq!(
        a.tag.as_deref(),
        Some("SET server_reset_query=DISCARD ALL; SELECT 1")
    );
    let cfg = c.query("SHOW CONFIG").await;
    assert_eq!(
        cfg.get("key", "default_pool_size", "value").as_deref(),
        Some("7")
    );
    let dbs = c.query("SHOW DATABASES").await;
    assert_eq!(dbs.num("name", "testdb", "pool_size"), 7);

    for bad in [
        "SET no_such_key = 1",
        "SET default_pool_size = lots",
        "SET sbuf_loopcnt = 3",
        // A C int in PgBouncer (its test_prepared.py): above i32::MAX is refused.
        "SET max_prepared_statements = '3147483648'",
        "SET max_prepared_statements = '-1'",
    ] {
        expect_error(&mut c, bad, "08P01", "SET failed").await;
    }
    let a = c.query("SET max_prepared_statements = 2147483647").await;
    assert!(a.error.is_none(), "{a:?}");
    let cfg = c.query("SHOW CONFIG").await;
    assert_eq!(
        cfg.get("key", "default_pool_size", "value").as_deref(),
        Some("7")
    );
    // A restart-only key: PgBouncer's cf_set answers the SET and keeps the value (seen on 1.18).
    let listen_port = cfg.get("key", "listen_port", "value");
    let a = c.query("SET listen_port = 7000").await;
    assert!(a.error.is_none(), "{a:?}");
    assert_eq!(a.tag.as_deref(), Some("SET listen_port=7000"));
    let cfg = c.query("SHOW CONFIG").await;
    assert_eq!(cfg.get("key", "listen_port", "value"), listen_port);
}

/// RELOAD applies the file; a broken file gives ERROR F0000 and keeps the running config.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_applies_or_fails_with_f0000() {
    let p = pooler();
    let mut c = admin(&p).await;
    let dbs = c.query("SHOW DATABASES").await;
    assert!(dbs.rows_where("name", "otherdb").is_empty());
    let pg_port = pg().port;
    p.rewrite_config(
        &format!("otherdb = host=127.0.0.1 port={pg_port} dbname=testdb pool_size=3"),
        "",
        "",
    );
    let a = c.query("RELOAD").await;
    assert!(a.error.is_none(), "{a:?}");
    assert_eq!(a.tag.as_deref(), Some("RELOAD"));
    let dbs = c.query("SHOW DATABASES").await;
    assert_eq!(dbs.num("name", "otherdb", "pool_size"), 3);
    assert_eq!(
        dbs.get("name", "otherdb", "database").as_deref(),
        Some("testdb")
    );

    p.rewrite_config("", "default_pool_size = not_a_number", "");
    expect_error(
        &mut c,
        "RELOAD",
        "F0000",
        "RELOAD failed, see logs for additional details",
    )
    .await;
    let dbs = c.query("SHOW DATABASES").await;
    assert_eq!(
        dbs.num("name", "otherdb", "pool_size"),
        3,
        "old config kept"
    );
    // The log has PgBouncer's lines (written before the answer).
    let ini = p.ini_path.display().to_string();
    let log = p.log();
    assert!(
        log.contains(&format!(
            "ERROR invalid value \"not_a_number\" for parameter default_pool_size in \
             configuration ({ini}:"
        )),
        "{log}"
    );
    assert!(log.contains("WARNING config file loading failed"), "{log}");
    // PgBouncer's test_prepared.py greps this one for an out-of-range value.
    p.rewrite_config("", "max_prepared_statements = -1", "");
    expect_error(
        &mut c,
        "RELOAD",
        "F0000",
        "RELOAD failed, see logs for additional details",
    )
    .await;
    let log = p.log();
    assert!(
        log.contains("WARNING invalid max_prepared_statements = -1"),
        "{log}"
    );
}

/// SHUTDOWN: the console gets EOF with no error and the process exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_immediate() {
    let mut p = pooler();
    let client = p.connect("md5user", "md5_pw", "testdb").await;
    client.simple_query("SELECT 1").await.expect("select");
    let mut c = admin(&p).await;
    let a = c.query("SHUTDOWN").await;
    assert!(a.closed, "EOF instead of an answer: {a:?}");
    assert!(a.error.is_none() && a.tag.is_none(), "{a:?}");
    let status = tokio::task::spawn_blocking(move || {
        let s = p.wait_exit(Duration::from_secs(10));
        (s, p)
    })
    .await
    .expect("wait");
    assert!(status.0.is_some(), "pooler exited after SHUTDOWN");
}

/// SHUTDOWN WAIT_FOR_CLIENTS: answered, no new logins, connected clients go on (also after
/// their transaction), exit when the last one, console included, leaves. RESUME is refused
/// meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_wait_for_clients() {
    let mut p = pooler();
    let client = p.connect("md5user", "md5_pw", "testdb").await;
    client.simple_query("BEGIN").await.expect("begin");
    let mut c = admin(&p).await;
    let a = c.query("SHUTDOWN WAIT_FOR_CLIENTS").await;
    assert_eq!(a.tag.as_deref(), Some("SHUTDOWN"), "{a:?}");
    expect_error(&mut c, "RESUME", "08P01", "pooler is shutting down").await;
    if p.try_connect("md5user", "md5_pw", "testdb").await.is_ok() {
        panic!("new login accepted while draining");
    }
    client
        .simple_query("SELECT 1")
        .await
        .expect("transaction goes on");
    client.simple_query("COMMIT").await.expect("commit");
    client
        .simple_query("SELECT 1")
        .await
        .expect("served after its transaction");
    drop(client);
    drop(c);
    let status = tokio::task::spawn_blocking(move || {
        let s = p.wait_exit(Duration::from_secs(15));
        (s, p)
    })
    .await
    .expect("wait");
    assert!(status.0.is_some(), "pooler exited once its client left");
}

/// Waits (off the runtime's threads) for the pooler to exit; panics if it does not.
async fn expect_exit(mut p: crate::common::Pooler, secs: u64) {
    let status = tokio::task::spawn_blocking(move || {
        let s = p.wait_exit(Duration::from_secs(secs));
        (s, p)
    })
    .await
    .expect("wait");
    assert!(status.0.is_some(), "pooler did not exit");
}

/// SHUTDOWN WAIT_FOR_SERVERS (= SIGINT): an idle client stays connected, and its next query
/// fails with PgBouncer's `server shutting down`; the open transaction finishes, then the
/// process exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_wait_for_servers_fails_the_next_query_of_idle_clients() {
    let p = pooler();
    let busy = p.connect("md5user", "md5_pw", "testdb").await;
    busy.simple_query("BEGIN").await.expect("begin");
    let mut idle = Raw::connect(p.port, "olly", "olly_pw", "testdb")
        .await
        .expect("idle client");
    assert!(idle.query("SELECT 1").await.error.is_none());
    let mut c = admin(&p).await;
    let a = c.query("SHUTDOWN WAIT_FOR_SERVERS").await;
    assert_eq!(a.tag.as_deref(), Some("SHUTDOWN"), "{a:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let a = idle.query("SELECT 1").await;
    let e = a.error.as_ref().expect("the query fails");
    assert_eq!(
        (e.severity.as_str(), e.code.as_str(), e.message.as_str()),
        ("FATAL", "08P01", "server shutting down"),
        "{a:?}"
    );
    expect_error(&mut c, "RESUME", "08P01", "pooler is shutting down").await;
    busy.simple_query("SELECT 1")
        .await
        .expect("transaction goes on");
    busy.simple_query("COMMIT").await.expect("commit");
    expect_exit(p, 15).await;
}

/// SHUTDOWN WAIT_FOR_SERVERS with a client already queued for the pool's only server: as in
/// PgBouncer, the queued client is told `server shutting down` on the janitor's next pass, not
/// by the SHUTDOWN itself (right after it the client still counts as waiting); the transaction
/// that holds the server goes on, and the queued client never gets that server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_wait_for_servers_tells_a_queued_client_on_the_janitor_pass() {
    let p = pooler();
    let mut c = admin(&p).await;
    let a = c.query("SET default_pool_size = 1").await;
    assert!(a.error.is_none(), "{a:?}");
    let mut busy = Raw::connect(p.port, "olly", "olly_pw", "testdb")
        .await
        .expect("busy client");
    assert!(busy.query("BEGIN").await.error.is_none());
    assert!(busy.query("SELECT 1").await.error.is_none());
    let port = p.port;
    let queued = tokio::spawn(async move {
        let mut q = Raw::connect(port, "olly", "olly_pw", "testdb")
            .await
            .expect("queued client");
        q.query("SELECT 2").await
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while c
        .query("SHOW POOLS")
        .await
        .num("database", "testdb", "cl_waiting")
        != 1
    {
        assert!(Instant::now() < deadline, "the second client never queued");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let a = c.query("SHUTDOWN WAIT_FOR_SERVERS").await;
    assert_eq!(a.tag.as_deref(), Some("SHUTDOWN"), "{a:?}");
    let pools = c.query("SHOW POOLS").await;
    assert_eq!(
        pools.num("database", "testdb", "cl_waiting"),
        1,
        "the SHUTDOWN itself closed the queued client"
    );
    assert!(busy.query("SELECT 1").await.error.is_none());
    let a = tokio::time::timeout(Duration::from_secs(10), queued)
        .await
        .expect("the queued client is told")
        .expect("task");
    let e = a.error.as_ref().expect("the queued query fails");
    assert_eq!(
        (e.severity.as_str(), e.code.as_str(), e.message.as_str()),
        ("FATAL", "08P01", "server shutting down"),
        "{a:?}"
    );
    assert!(busy.query("COMMIT").await.error.is_none());
    expect_exit(p, 15).await;
}

/// SIGTERM: the console already open still answers (RESUME: `pooler is shutting down`), and a
/// new console session can still be opened on the Unix socket, where normal logins are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_keeps_the_console_reachable() {
    let p = pooler();
    let busy = p.connect("md5user", "md5_pw", "testdb").await;
    busy.simple_query("BEGIN").await.expect("begin");
    let mut c = admin(&p).await;
    p.signal(libc::SIGTERM);
    let p = tokio::task::spawn_blocking(move || {
        assert!(p.wait_for_log("got SIGTERM", Duration::from_secs(10)));
        p
    })
    .await
    .expect("wait");
    expect_error(&mut c, "RESUME", "08P01", "pooler is shutting down").await;
    let unix = |user: &str, pw: &str, db: &str| {
        format!(
            "host={} port={} user={user} password={pw} dbname={db}",
            p.dir.display(),
            p.port
        )
    };
    let (console, login) = (
        unix("olly", "olly_pw", "pgbouncer"),
        unix("md5user", "md5_pw", "testdb"),
    );
    let (shown, refused) = tokio::task::spawn_blocking(move || {
        (
            crate::common::psql(&console, "SHOW VERSION"),
            crate::common::psql(&login, "SELECT 1"),
        )
    })
    .await
    .expect("psql");
    assert_eq!(shown.0, 0, "console over the Unix socket: {shown:?}");
    assert!(shown.1.contains("PgBouncer"), "{shown:?}");
    assert_ne!(refused.0, 0, "{refused:?}");
    assert!(refused.2.contains("pooler is shutting down"), "{refused:?}");
    busy.simple_query("COMMIT").await.expect("commit");
    drop(busy);
    drop(c);
    expect_exit(p, 15).await;
}

/// SIGTERM: a TCP client the pooler accepted before the signal but whose startup packet comes
/// after it (a new connection of an application pool during a rolling restart) logs in and is
/// served like the clients already connected, instead of being refused with `pooler is
/// shutting down`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_in_a_client_accepted_before_it() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let p = pooler();
    let busy = p.connect("md5user", "md5_pw", "testdb").await;
    busy.simple_query("BEGIN").await.expect("begin");
    // An SSLRequest answered proves the session exists before the signal.
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", p.port))
        .await
        .expect("connect");
    tcp.write_all(&[0, 0, 0, 8, 4, 210, 22, 47])
        .await
        .expect("SSLRequest");
    let mut answer = [0u8; 1];
    tcp.read_exact(&mut answer)
        .await
        .expect("SSLRequest answer");
    assert_eq!(&answer, b"N");
    p.signal(libc::SIGTERM);
    let p = tokio::task::spawn_blocking(move || {
        assert!(p.wait_for_log("got SIGTERM", Duration::from_secs(10)));
        p
    })
    .await
    .expect("wait");
    let (late, conn) = tokio_postgres::Config::new()
        .user("md5user")
        .password("md5_pw")
        .dbname("testdb")
        .connect_raw(tcp, tokio_postgres::NoTls)
        .await
        .expect("a client accepted before SIGTERM logs in");
    tokio::spawn(conn);
    let rows = late
        .simple_query("SELECT 1")
        .await
        .expect("its transaction");
    assert!(!rows.is_empty());
    busy.simple_query("COMMIT").await.expect("commit");
    drop(busy);
    drop(late);
    expect_exit(p, 15).await;
}

/// A second SIGINT exits at once, and clients see their connection close with no error
/// message, as when PgBouncer exits; the log says `got SIGINT while shutting down, fast exit`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_sigint_closes_clients_without_a_message() {
    let p = pooler();
    let busy = p.connect("md5user", "md5_pw", "testdb").await;
    busy.simple_query("BEGIN").await.expect("begin");
    let mut idle = Raw::connect(p.port, "olly", "olly_pw", "testdb")
        .await
        .expect("idle client");
    p.signal(libc::SIGINT);
    let p = tokio::task::spawn_blocking(move || {
        assert!(p.wait_for_log("got SIGINT", Duration::from_secs(10)));
        p
    })
    .await
    .expect("wait");
    p.signal(libc::SIGINT);
    let said = idle.frame().await;
    assert!(said.is_none(), "closed without a message: {said:?}");
    let p = tokio::task::spawn_blocking(move || {
        assert!(p.wait_for_log(
            "got SIGINT while shutting down, fast exit",
            Duration::from_secs(10)
        ));
        p
    })
    .await
    .expect("wait");
    drop(busy);
    expect_exit(p, 15).await;
}

/// Servers the pool closes log PgBouncer's disconnect line with its reason and age: an idle
/// server retired by RECONNECT says `database configuration changed`, one that comes back
/// past server_lifetime says `server lifetime over` (operators and PgBouncer's suite grep both).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_servers_log_their_reason() {
    let p = pooler();
    let mut a = admin(&p).await;
    let mut c = Raw::connect(p.port, "olly", "olly_pw", "testdb")
        .await
        .unwrap();
    assert!(c.query("SELECT 1").await.error.is_none());
    assert!(a.query("RECONNECT testdb").await.error.is_none());
    let line = "testdb/olly@127.0.0.1:";
    let reason = "closing because: database configuration changed (age=";
    assert!(
        p.log()
            .lines()
            .any(|l| l.contains(line) && l.contains(reason)),
        "{}",
        p.log()
    );
    // server_lifetime = 1: the next server is closed when it comes back after a second.
    assert!(a.query("SET server_lifetime = 1").await.error.is_none());
    assert!(c.query("BEGIN").await.error.is_none());
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(c.query("COMMIT").await.error.is_none());
    assert!(
        p.wait_for_log(
            "closing because: server lifetime over (age=1s)",
            Duration::from_secs(5)
        ),
        "{}",
        p.log()
    );
}
