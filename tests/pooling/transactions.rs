//! Pooling behaviour: many clients over few servers, release at transaction end, parameters.

use std::sync::Arc;

use crate::common::{pgbench, pgbench_failed_transactions, pgbench_processed, Pg, Pooler};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_clients_share_a_pool_of_five() {
    let pg = Pg::start();
    pg.psql("CREATE TABLE t (id int, v int)");
    let pooler = Pooler::start(&pg, "", "default_pool_size = 5\nmax_client_conn = 100", "");
    let mut tasks = Vec::new();
    for i in 0..50 {
        let c = pooler.connect("olly", "olly_pw", "testdb").await;
        tasks.push(tokio::spawn(async move {
            for j in 0..20 {
                c.batch_execute(&format!(
                    "BEGIN; INSERT INTO t VALUES ({i}, {j}); SELECT pg_sleep(0.001); COMMIT;"
                ))
                .await
                .expect("transaction through the pooler");
            }
        }));
    }
    let peak = Arc::new(std::sync::atomic::AtomicI64::new(0));
    for t in tasks {
        let n = pg.backend_count("testdb");
        peak.fetch_max(n, std::sync::atomic::Ordering::Relaxed);
        t.await.unwrap();
    }
    assert_eq!(pg.psql("SELECT count(*) FROM t"), "1000");
    let backends = pg.backend_count("testdb");
    assert!(
        backends <= 5,
        "{backends} server connections for a pool of 5"
    );
    assert!(peak.load(std::sync::atomic::Ordering::Relaxed) <= 5);
}

#[test]
fn pgbench_simple_extended_and_prepared_have_no_failures() {
    let pg = Pg::start();
    let pooler = Pooler::start(&pg, "", "default_pool_size = 4", "");
    let (code, out, err) = pgbench(pooler.port, "olly", "olly_pw", "testdb", &["-i", "-s", "1"]);
    assert_eq!(code, 0, "pgbench -i: {out}\n{err}");
    // "prepared": named statements follow their clients across the 4 servers. pgbench 15
    // prepares with a blocking PQprepare per thread, so a thread's other clients must not hold
    // every server in an open transaction meanwhile (it would deadlock through any pooler): at
    // most 2 clients per thread here, 8 clients over 4 servers.
    for mode in ["simple", "extended", "prepared"] {
        let (code, out, err) = pgbench(
            pooler.port,
            "olly",
            "olly_pw",
            "testdb",
            &["-c", "8", "-j", "4", "-T", "3", "-M", mode],
        );
        assert_eq!(code, 0, "pgbench -M {mode}: {out}\n{err}");
        assert_eq!(pgbench_failed_transactions(&out), Some(0), "{out}");
        assert!(pgbench_processed(&out).unwrap_or(0) > 100, "{out}");
        let (code, out, err) = pgbench(
            pooler.port,
            "olly",
            "olly_pw",
            "testdb",
            &["-S", "-C", "-c", "4", "-T", "2", "-M", mode],
        );
        assert_eq!(code, 0, "pgbench -C -M {mode}: {out}\n{err}");
        assert_eq!(pgbench_failed_transactions(&out), Some(0), "{out}");
        // Select-only autocommit transactions: 20 clients over 4 servers.
        let (code, out, err) = pgbench(
            pooler.port,
            "olly",
            "olly_pw",
            "testdb",
            &["-S", "-c", "20", "-j", "2", "-T", "2", "-M", mode],
        );
        assert_eq!(code, 0, "pgbench -S -M {mode}: {out}\n{err}");
        assert_eq!(pgbench_failed_transactions(&out), Some(0), "{out}");
    }
    assert!(pg.backend_count("testdb") <= 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracked_parameters_follow_each_client() {
    let pg = Pg::start();
    let pooler = Pooler::start(&pg, "", "default_pool_size = 1", "");
    let a = crate::common::connect_to(&format!(
        "{} options='-c TimeZone=America/New_York' application_name=client_a",
        pooler.conn_str("olly", "olly_pw", "testdb")
    ))
    .await;
    let b = pooler.connect("olly", "olly_pw", "testdb").await;
    // One server: both clients run on it in turn, each must see its own settings.
    for _ in 0..3 {
        let tz_a = value(&a, "SHOW TimeZone").await;
        let tz_b = value(&b, "SHOW TimeZone").await;
        assert_eq!(tz_a, "America/New_York");
        assert_ne!(tz_b, "America/New_York");
        assert_eq!(
            value(&a, "SELECT current_setting('application_name')").await,
            "client_a"
        );
        assert_eq!(
            value(&b, "SELECT current_setting('application_name')").await,
            ""
        );
    }
    // A SET by a client becomes its wanted state on later transactions.
    b.batch_execute("SET DateStyle = 'German'").await.unwrap();
    assert_eq!(value(&a, "SHOW DateStyle").await, "ISO, MDY");
    assert!(value(&b, "SHOW DateStyle").await.starts_with("German"));
}

/// default_transaction_read_only and session_authorization are tracked (PgBouncer 1.26): one
/// client's SET of either does not stay on the shared server for the other client, and comes
/// back for the client that made it (upstream test_default_transaction_read_only,
/// test_session_authorization_tracked).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_and_session_authorization_follow_each_client() {
    let pg = Pg::start();
    pg.psql("CREATE ROLE someuser");
    let pooler = Pooler::start(&pg, "", "default_pool_size = 1", "");
    let a = pooler.connect("olly", "olly_pw", "testdb").await;
    let b = pooler.connect("olly", "olly_pw", "testdb").await;
    a.batch_execute("SET default_transaction_read_only = on; SET SESSION AUTHORIZATION someuser")
        .await
        .expect("set");
    // One server: both clients run on it in turn.
    for _ in 0..2 {
        assert_eq!(value(&b, "SHOW transaction_read_only").await, "off");
        assert_eq!(value(&b, "SHOW session_authorization").await, "olly");
        assert_eq!(value(&a, "SHOW transaction_read_only").await, "on");
        assert_eq!(value(&a, "SHOW session_authorization").await, "someuser");
    }
    a.batch_execute("RESET SESSION AUTHORIZATION; RESET default_transaction_read_only")
        .await
        .expect("reset");
    assert_eq!(value(&a, "SHOW session_authorization").await, "olly");
    assert_eq!(value(&a, "SHOW transaction_read_only").await, "off");
}

/// track_extra_parameters = search_path (issue 9): PostgreSQL 15 does not report search_path,
/// so the pooler remembers what it SET on each server; a client that asked for none gets the
/// server's default back (RESET), also after another client changed it with a plain SET.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn track_extra_parameters_search_path_follows_each_client() {
    let pg = Pg::start();
    pg.psql("CREATE SCHEMA sa AUTHORIZATION olly; CREATE SCHEMA sc AUTHORIZATION olly");
    let pooler = Pooler::start(
        &pg,
        "",
        "default_pool_size = 1\ntrack_extra_parameters = IntervalStyle, search_path",
        "",
    );
    let a = crate::common::connect_to(&format!(
        "{} options='-c search_path=sa'",
        pooler.conn_str("olly", "olly_pw", "testdb")
    ))
    .await;
    let b = pooler.connect("olly", "olly_pw", "testdb").await;
    let default = value(&b, "SHOW search_path").await;
    assert_eq!(default, "\"$user\", public");
    // One server: both clients run on it in turn.
    for _ in 0..3 {
        assert_eq!(value(&a, "SHOW search_path").await, "sa");
        assert_eq!(value(&b, "SHOW search_path").await, default);
    }
    // A plain SET (no ParameterStatus on PostgreSQL 15) does not leak to the next client.
    let c = pooler.connect("olly", "olly_pw", "testdb").await;
    c.batch_execute("SET search_path = sc").await.unwrap();
    assert_eq!(value(&b, "SHOW search_path").await, default);
    assert_eq!(value(&a, "SHOW search_path").await, "sa");
    c.batch_execute("SET search_path = sc").await.unwrap();
    assert_eq!(value(&a, "SHOW search_path").await, "sa");
}

async fn value(c: &tokio_postgres::Client, sql: &str) -> String {
    for m in c.simple_query(sql).await.unwrap() {
        if let tokio_postgres::SimpleQueryMessage::Row(r) = m {
            return r.get(0).unwrap_or("").to_string();
        }
    }
    panic!("no row for {sql}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_and_statement_modes() {
    let pg = Pg::start();
    let pooler = Pooler::start(
        &pg,
        "sess = host=127.0.0.1 port=PGPORT dbname=testdb pool_mode=session\n\
         stmt = host=127.0.0.1 port=PGPORT dbname=testdb pool_mode=statement"
            .replace("PGPORT", &pg.port.to_string())
            .as_str(),
        "default_pool_size = 1",
        "",
    );
    // Session mode: the session keeps its server, so session state survives between statements.
    let s = pooler.connect("olly", "olly_pw", "sess").await;
    s.batch_execute("SET work_mem = '7MB'").await.unwrap();
    assert_eq!(value(&s, "SHOW work_mem").await, "7MB");
    drop(s);
    // ...and server_reset_query (DISCARD ALL) cleans it before the next client.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let s2 = pooler.connect("olly", "olly_pw", "sess").await;
    assert_eq!(value(&s2, "SHOW work_mem").await, "4MB");
    // Statement mode refuses transactions.
    let st = pooler.connect("olly", "olly_pw", "stmt").await;
    assert_eq!(value(&st, "SELECT 1").await, "1");
    let e = st.batch_execute("BEGIN").await.unwrap_err();
    crate::assert_pooler_error(
        &e,
        "transaction blocks not allowed in statement pooling mode",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unix_socket_listener_works() {
    let pg = Pg::start();
    let pooler = Pooler::start_default(&pg);
    let c = crate::common::connect_to(&format!(
        "host={} port={} user=olly password=olly_pw dbname=testdb",
        pooler.dir.display(),
        pooler.port
    ))
    .await;
    assert_eq!(value(&c, "SELECT 40 + 2").await, "42");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn application_name_add_host_and_connection_logging() {
    let pg = Pg::start();
    let pooler = Pooler::start(
        &pg,
        "",
        "application_name_add_host = 1\nlog_connections = 1\nlog_disconnections = 1\nlog_pooler_errors = 1",
        "",
    );
    let c = crate::common::connect_to(&format!(
        "{} application_name=app1",
        pooler.conn_str("olly", "olly_pw", "testdb")
    ))
    .await;
    let app = value(&c, "SELECT current_setting('application_name')").await;
    assert!(app.starts_with("app1 - 127.0.0.1:"), "{app}");
    drop(c);
    assert!(pooler.wait_for_log(
        "login attempt: db=testdb user=olly",
        std::time::Duration::from_secs(5)
    ));
    assert!(pooler.wait_for_log(
        "closing because: client close request",
        std::time::Duration::from_secs(5)
    ));
    let e = pooler
        .try_connect("olly", "olly_pw", "nope")
        .await
        .expect_err("no db");
    crate::assert_pooler_error(&e, "no such database: nope");
    assert!(pooler.wait_for_log(
        "pooler error: no such database: nope",
        std::time::Duration::from_secs(5)
    ));
}

#[test]
fn prepared_statements_survive_server_reset_query_always() {
    let pg = Pg::start();
    // DISCARD ALL after every transaction drops the server's statements: the pooler must notice
    // and prepare them again instead of binding to statements that are gone.
    let pooler = Pooler::start(
        &pg,
        "",
        "default_pool_size = 2\nserver_reset_query_always = 1",
        "",
    );
    let (code, out, err) = pgbench(pooler.port, "olly", "olly_pw", "testdb", &["-i", "-s", "1"]);
    assert_eq!(code, 0, "pgbench -i: {out}\n{err}");
    let (code, out, err) = pgbench(
        pooler.port,
        "olly",
        "olly_pw",
        "testdb",
        &["-S", "-c", "4", "-j", "2", "-T", "2", "-M", "prepared"],
    );
    assert_eq!(code, 0, "pgbench -M prepared: {out}\n{err}");
    assert_eq!(pgbench_failed_transactions(&out), Some(0), "{out}");
    assert!(pgbench_processed(&out).unwrap_or(0) > 100, "{out}");
}
