//! Protocol-level named prepared statements shared across clients (issue 9, PgBouncer 1.21+
//! semantics), on the raw protocol through a pool of 2 servers: one server Parse per statement
//! per server (counted by the pooler and by PostgreSQL's own statement log), a standalone
//! Describe on a server that lacks the statement, the LRU at max_prepared_statements, DDL
//! invalidation, and a flood of distinct statements with the pooler's memory bounded. The
//! misnamed-statement errors are in `prepared_errors.rs`.

use bytes::BytesMut;
use postgres_protocol::message::frontend;

use crate::common::{Pg, Pooler};
use crate::console::{Answer, Raw};
use crate::extended::{bind, parse};

pub(crate) fn execute(out: &mut BytesMut) {
    frontend::execute("", 0, out).expect("execute message");
}

pub(crate) fn describe(out: &mut BytesMut, name: &str) {
    frontend::describe(b'S', name, out).expect("describe message");
}

pub(crate) fn close(out: &mut BytesMut, name: &str) {
    frontend::close(b'S', name, out).expect("close message");
}

/// Sends `out` + Sync and returns every frame tag up to ReadyForQuery, with the answer's rows
/// and error.
pub(crate) async fn run(raw: &mut Raw, mut out: BytesMut) -> (Vec<u8>, Answer) {
    frontend::sync(&mut out);
    raw.send(&out).await;
    let mut tags = Vec::new();
    let mut a = Answer::default();
    loop {
        let Some((tag, body)) = raw.frame().await else {
            a.closed = true;
            return (tags, a);
        };
        tags.push(tag);
        match tag {
            b'D' => {
                // One text column is enough for these tests.
                let len = i32::from_be_bytes(body[2..6].try_into().expect("4 bytes"));
                let v = (len >= 0)
                    .then(|| String::from_utf8_lossy(&body[6..6 + len as usize]).into_owned());
                a.rows.push(vec![v]);
            }
            b'E' => {
                let mut f = crate::console::Fields::default();
                for field in body[..].split(|b: &u8| *b == 0) {
                    if let Some((k, v)) = field.split_first() {
                        let v = String::from_utf8_lossy(v).into_owned();
                        match k {
                            b'S' => f.severity = v,
                            b'C' => f.code = v,
                            b'M' => f.message = v,
                            _ => {}
                        }
                    }
                }
                a.error = Some(f);
            }
            b'Z' => return (tags, a),
            _ => {}
        }
    }
}

async fn stat(admin: &mut Raw, col: &str) -> i64 {
    admin
        .query("SHOW STATS")
        .await
        .num("database", "testdb", col)
}

/// Parse messages PostgreSQL logged for pooler-named statements (log_min_duration_statement=0
/// logs each extended-protocol step as `parse <name>: <query>`).
fn server_parses_logged(pg: &Pg) -> usize {
    std::fs::read_to_string(&pg.log_path)
        .expect("server log")
        .lines()
        .filter(|l| l.contains("  parse OLLY_"))
        .count()
}

pub(crate) fn start(pg: &Pg, extra: &str) -> Pooler {
    Pooler::start(
        pg,
        "",
        &format!("pool_mode = transaction\ndefault_pool_size = 2\n{extra}"),
        "",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_clients_share_one_parse_per_server() {
    let pg = Pg::start_with_conf("log_min_duration_statement = 0");
    let pooler = start(&pg, "");
    let mut admin = Raw::connect(pooler.port, "olly", "olly_pw", "pgbouncer")
        .await
        .expect("console");
    const CLIENTS: usize = 8;
    const ROUNDS: usize = 25;
    let mut tasks = Vec::new();
    for i in 0..CLIENTS {
        let port = pooler.port;
        tasks.push(tokio::spawn(async move {
            let mut raw = Raw::connect(port, "olly", "olly_pw", "testdb")
                .await
                .expect("login");
            // Each client its own name for the same query.
            let name = format!("q{i}");
            let mut out = BytesMut::new();
            parse(&mut out, &name, "SELECT $1::int * 2");
            let (tags, a) = run(&mut raw, out).await;
            assert_eq!(tags, b"1Z", "{a:?}");
            for r in 0..ROUNDS {
                let mut out = BytesMut::new();
                let v = (r * 10 + i).to_string();
                bind(&mut out, &name, &[&v]);
                execute(&mut out);
                let (tags, a) = run(&mut raw, out).await;
                assert_eq!(tags, b"2DCZ", "{a:?}");
                assert_eq!(a.rows, vec![vec![Some(((r * 10 + i) * 2).to_string())]]);
            }
            raw
        }));
    }
    let mut clients = Vec::new();
    for t in tasks {
        clients.push(t.await.expect("client task"));
    }
    let server_parses = stat(&mut admin, "total_server_parse_count").await;
    assert!((1..=2).contains(&server_parses), "{server_parses}");
    assert_eq!(
        stat(&mut admin, "total_client_parse_count").await,
        CLIENTS as i64
    );
    assert_eq!(
        stat(&mut admin, "total_bind_count").await,
        (CLIENTS * ROUNDS) as i64
    );
    // PostgreSQL saw exactly those Parses, one per server at most.
    assert_eq!(server_parses_logged(&pg), server_parses as usize);

    let a = admin.query("SHOW CLIENTS").await;
    let i = a.col("prepared_statements");
    let per_client: Vec<_> = a
        .rows_where("database", "testdb")
        .iter()
        .map(|r| r[i].clone())
        .collect();
    assert_eq!(per_client, vec![Some("1".to_string()); CLIENTS]);
    let a = admin.query("SHOW SERVERS").await;
    let i = a.col("prepared_statements");
    for r in a.rows_where("database", "testdb") {
        assert_eq!(r[i].as_deref(), Some("1"), "{:?}", a.rows);
    }
    for raw in clients {
        raw.terminate().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_on_a_server_that_lacks_the_statement() {
    let pg = Pg::start();
    let pooler = start(&pg, "");
    let mut a = Raw::connect(pooler.port, "olly", "olly_pw", "testdb")
        .await
        .expect("login");
    let mut out = BytesMut::new();
    parse(&mut out, "d", "SELECT $1::text AS t");
    let (tags, _) = run(&mut a, out).await;
    assert_eq!(tags, b"1Z");
    // Another client holds that server in a transaction, so `a` gets a second one.
    let mut holder = Raw::connect(pooler.port, "olly", "olly_pw", "testdb")
        .await
        .expect("login");
    assert!(holder.query("BEGIN").await.error.is_none());
    let mut out = BytesMut::new();
    describe(&mut out, "d");
    let (tags, ans) = run(&mut a, out).await;
    assert_eq!(
        tags, b"tTZ",
        "no injected ParseComplete reaches the client: {ans:?}"
    );
    // Pipelined: Describe, Bind, Execute, then a Close answered by the pooler, in order.
    let mut out = BytesMut::new();
    describe(&mut out, "d");
    bind(&mut out, "d", &["x"]);
    execute(&mut out);
    close(&mut out, "d");
    let (tags, ans) = run(&mut a, out).await;
    assert_eq!(tags, b"tT2DC3Z", "{ans:?}");
    // Closed: a Bind of it closes the client, as PgBouncer does.
    let mut out = BytesMut::new();
    bind(&mut out, "d", &["x"]);
    execute(&mut out);
    let (_, ans) = run(&mut a, out).await;
    crate::prepared_errors::assert_fatal(&ans, "prepared statement did not exist");
    assert!(holder.query("COMMIT").await.error.is_none());
    a.terminate().await;
    holder.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eviction_at_the_cap_and_ddl_invalidation() {
    let pg = Pg::start();
    pg.psql("CREATE TABLE inv (a int); INSERT INTO inv VALUES (1); GRANT ALL ON inv TO olly");
    // One server, so every count below is about it.
    let pooler = Pooler::start(
        &pg,
        "",
        "pool_mode = transaction\ndefault_pool_size = 1\nmax_prepared_statements = 2",
        "",
    );
    let mut raw = Raw::connect(pooler.port, "olly", "olly_pw", "testdb")
        .await
        .expect("login");
    for i in 0..5 {
        let mut out = BytesMut::new();
        parse(&mut out, &format!("e{i}"), &format!("SELECT {i}"));
        bind(&mut out, &format!("e{i}"), &[]);
        execute(&mut out);
        let (tags, a) = run(&mut raw, out).await;
        assert_eq!(
            tags, b"12DCZ",
            "the eviction's CloseComplete is swallowed: {a:?}"
        );
        assert_eq!(a.rows, vec![vec![Some(i.to_string())]]);
    }
    let a = raw
        .query("SELECT count(*) FROM pg_prepared_statements")
        .await;
    assert_eq!(a.rows, vec![vec![Some("2".to_string())]], "the cap holds");
    // An evicted statement is prepared again on demand.
    let mut out = BytesMut::new();
    bind(&mut out, "e0", &[]);
    execute(&mut out);
    let (tags, a) = run(&mut raw, out).await;
    assert_eq!((tags.as_slice(), a.rows.len()), (&b"2DCZ"[..], 1), "{a:?}");

    // DDL that changes the result type: PostgreSQL refuses once, the next use re-prepares.
    let mut out = BytesMut::new();
    parse(&mut out, "inv", "SELECT * FROM inv");
    bind(&mut out, "inv", &[]);
    execute(&mut out);
    let (_, a) = run(&mut raw, out).await;
    assert!(a.error.is_none(), "{a:?}");
    assert!(raw
        .query("ALTER TABLE inv ADD COLUMN b int")
        .await
        .error
        .is_none());
    let mut out = BytesMut::new();
    bind(&mut out, "inv", &[]);
    execute(&mut out);
    let (_, a) = run(&mut raw, out).await;
    let e = a.error.expect("cached plan");
    assert_eq!(e.code, "0A000", "{e:?}");
    let mut out = BytesMut::new();
    bind(&mut out, "inv", &[]);
    execute(&mut out);
    let (tags, a) = run(&mut raw, out).await;
    assert!(a.error.is_none(), "re-prepared: {a:?}");
    assert_eq!(tags, b"2DCZ");
    raw.terminate().await;
}

/// Current resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_distinct_statements_keeps_memory_bounded() {
    let pg = Pg::start();
    let pooler = start(&pg, "");
    let mut raw = Raw::connect(pooler.port, "olly", "olly_pw", "testdb")
        .await
        .expect("login");
    let mut rss_at_10k = 0;
    const TOTAL: usize = 100_000;
    const BATCH: usize = 1_000;
    // Each statement ~200 bytes of text: 100k of them held would be ~20 MB in the pooler alone.
    let pad = "x".repeat(180);
    for batch in 0..TOTAL / BATCH {
        let mut out = BytesMut::new();
        for i in 0..BATCH {
            let n = batch * BATCH + i;
            parse(&mut out, "f", &format!("SELECT {n}, '{pad}'"));
            close(&mut out, "f");
        }
        let (tags, a) = run(&mut raw, out).await;
        assert!(a.error.is_none(), "{a:?}");
        let count = |t: u8| tags.iter().filter(|x| **x == t).count();
        assert_eq!(
            tags.len(),
            2 * BATCH + 1,
            "batch {batch}: 1={} 3={} E={:?}",
            count(b'1'),
            count(b'3'),
            &tags[..20]
        );
        if batch == 9 {
            rss_at_10k = rss_kib(pooler.pid());
        }
    }
    let rss = rss_kib(pooler.pid());
    // The server keeps max_prepared_statements (200), the pooler what those and its sweeps
    // hold: growth from 10k to 100k statements stays far below the 18 MB the texts would take.
    assert!(
        rss < rss_at_10k + 8 * 1024,
        "RSS grew from {rss_at_10k} KiB to {rss} KiB"
    );
    let a = raw
        .query("SELECT count(*) <= 200 FROM pg_prepared_statements")
        .await;
    assert_eq!(a.rows, vec![vec![Some("t".to_string())]]);
    raw.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipeline_with_an_error_in_the_middle_on_another_server() {
    let pg = Pg::start();
    let pooler = start(&pg, "");
    let mut a = Raw::connect(pooler.port, "olly", "olly_pw", "testdb")
        .await
        .expect("login");
    let mut out = BytesMut::new();
    parse(&mut out, "s", "SELECT 's'::text");
    let (tags, _) = run(&mut a, out).await;
    assert_eq!(tags, b"1Z");
    // That server is held elsewhere: `s` must be prepared, invisibly, on the other one.
    let mut holder = Raw::connect(pooler.port, "olly", "olly_pw", "testdb")
        .await
        .expect("login");
    assert!(holder.query("BEGIN").await.error.is_none());
    let mut out = BytesMut::new();
    parse(&mut out, "n1", "SELECT 'n1'::text");
    bind(&mut out, "n1", &[]);
    execute(&mut out);
    bind(&mut out, "s", &[]);
    execute(&mut out);
    parse(&mut out, "bad", "SELEC 1");
    parse(&mut out, "skipped", "SELECT 2");
    close(&mut out, "s");
    bind(&mut out, "n1", &[]);
    execute(&mut out);
    let (tags, ans) = run(&mut a, out).await;
    assert_eq!(tags, b"12DC2DCEZ", "{ans:?}");
    assert_eq!(ans.error.as_ref().map(|e| e.code.as_str()), Some("42601"));
    assert_eq!(
        ans.rows,
        vec![vec![Some("n1".to_string())], vec![Some("s".to_string())]]
    );
    // After the error nothing ran: `s` was not closed, `skipped` and `bad` do not exist.
    let mut out = BytesMut::new();
    bind(&mut out, "s", &[]);
    execute(&mut out);
    bind(&mut out, "n1", &[]);
    execute(&mut out);
    let (tags, ans) = run(&mut a, out).await;
    assert_eq!(tags, b"2DC2DCZ", "{ans:?}");
    assert!(holder.query("COMMIT").await.error.is_none());
    let mut out = BytesMut::new();
    bind(&mut out, "skipped", &[]);
    execute(&mut out);
    let (_, ans) = run(&mut a, out).await;
    crate::prepared_errors::assert_fatal(&ans, "prepared statement did not exist");
    a.terminate().await;
    holder.terminate().await;
}

/// A cap lowered at run time (SET or RELOAD) applies on the server's next Parse: the LRU
/// shrinks to the new cap at once, as in PgBouncer, not by one statement per Parse.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lowered_cap_shrinks_the_server_on_the_next_parse() {
    let pg = Pg::start();
    let pooler = Pooler::start(
        &pg,
        "",
        "pool_mode = transaction\ndefault_pool_size = 1\nmax_prepared_statements = 5",
        "",
    );
    let mut admin = Raw::connect(pooler.port, "olly", "olly_pw", "pgbouncer")
        .await
        .expect("admin login");
    let mut raw = Raw::connect(pooler.port, "olly", "olly_pw", "testdb")
        .await
        .expect("login");
    let count = "SELECT count(*) FROM pg_prepared_statements";
    let prepare = |i: usize| {
        let mut out = BytesMut::new();
        parse(&mut out, &format!("s{i}"), &format!("SELECT {i}"));
        bind(&mut out, &format!("s{i}"), &[]);
        execute(&mut out);
        out
    };
    for i in 0..5 {
        let (_, a) = run(&mut raw, prepare(i)).await;
        assert!(a.error.is_none(), "{a:?}");
    }
    assert_eq!(raw.query(count).await.rows, vec![vec![Some("5".into())]]);
    let a = admin.query("SET max_prepared_statements = 2").await;
    assert!(a.error.is_none(), "{a:?}");
    let (tags, a) = run(&mut raw, prepare(5)).await;
    assert_eq!(
        tags, b"12DCZ",
        "the evictions' CloseCompletes are swallowed: {a:?}"
    );
    assert_eq!(
        raw.query(count).await.rows,
        vec![vec![Some("2".into())]],
        "the server holds the new cap"
    );
    // The survivors and the evicted still answer (re-prepared on demand).
    for i in [0, 4, 5] {
        let mut out = BytesMut::new();
        bind(&mut out, &format!("s{i}"), &[]);
        execute(&mut out);
        let (_, a) = run(&mut raw, out).await;
        assert_eq!(a.rows, vec![vec![Some(i.to_string())]], "{a:?}");
    }
    raw.terminate().await;
    admin.terminate().await;
}
