//! Extended-protocol frames in every pool mode, on the raw protocol so each test controls exactly
//! what a frame holds: named and unnamed Parse/Bind of 8 KB to 400 KB (larger than any read
//! buffer, so they arrive in pieces), a statement name over 4 KB, a Parse of a name that is
//! still prepared, and total_xact_count counting SQL transactions (issue 6: items 1, 2, 3, 11;
//! issue 10 for the duplicate Parse).

use std::time::Duration;

use bytes::BytesMut;
use postgres_protocol::message::frontend;

use crate::common::{Pg, Pooler};
use crate::console::{Answer, Raw};
use crate::extended::{bind, parse};

const MODES: [&str; 3] = ["session", "transaction", "statement"];
const SIZES: [usize; 3] = [8 * 1024, 40 * 1024, 400 * 1024];

fn execute_sync(out: &mut BytesMut) {
    frontend::execute("", 0, out).expect("execute message");
    frontend::sync(out);
}

fn sync(out: &mut BytesMut) {
    frontend::sync(out);
}

async fn exchange(raw: &mut Raw, out: BytesMut) -> Answer {
    raw.send(&out).await;
    raw.answer().await
}

/// The single value a request returns; panics on an error or a closed connection.
async fn value(raw: &mut Raw, out: BytesMut, what: &str) -> String {
    let a = exchange(raw, out).await;
    assert!(!a.closed, "{what}: connection closed");
    assert!(a.error.is_none(), "{what}: {:?}", a.error);
    assert_eq!(a.rows.len(), 1, "{what}: {:?}", a.tag);
    a.rows[0][0].clone().expect("not null")
}

fn start(pg: &Pg, mode: &str) -> Pooler {
    // Two servers, so transaction and statement mode may move the client between them.
    Pooler::start(
        pg,
        "",
        &format!("pool_mode = {mode}\ndefault_pool_size = 2"),
        "",
    )
}

/// Items 1 and 2: before the fix a named Parse/Bind over ~8 KB outside a transaction block
/// spun the pooler (the read timeout of `Raw` fails the test), and a 400 KB named Bind reached
/// the server under the client's name (26000 does not exist).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_parse_and_bind_named_and_unnamed_in_every_mode() {
    let pg = Pg::start();
    for mode in MODES {
        let pooler = start(&pg, mode);
        let mut raw = Raw::connect(pooler.port, "olly", "olly_pw", "testdb")
            .await
            .expect("login");
        for (i, &n) in SIZES.iter().enumerate() {
            let what = |s: &str| format!("{mode}, {n} bytes: {s}");
            let text_sql = format!("SELECT '{}'::text", "1".repeat(n));
            let big = "x".repeat(n);

            // A named Parse carrying the large query, bound in the same request and again later.
            let name = format!("big_query_{i}");
            let mut out = BytesMut::new();
            parse(&mut out, &name, &text_sql);
            bind(&mut out, &name, &[]);
            execute_sync(&mut out);
            let got = value(&mut raw, out, &what("named Parse")).await;
            assert_eq!(got.len(), n, "{}", what("named Parse"));
            let mut out = BytesMut::new();
            bind(&mut out, &name, &[]);
            execute_sync(&mut out);
            let got = value(&mut raw, out, &what("Bind of a large statement")).await;
            assert_eq!(got.len(), n);

            // The same, unnamed.
            let mut out = BytesMut::new();
            parse(&mut out, "", &text_sql);
            bind(&mut out, "", &[]);
            execute_sync(&mut out);
            let got = value(&mut raw, out, &what("unnamed Parse")).await;
            assert_eq!(got.len(), n);

            // A small named statement bound with a large parameter, in a request of its own.
            let name = format!("big_param_{i}");
            let mut out = BytesMut::new();
            parse(&mut out, &name, "SELECT $1::text");
            sync(&mut out);
            let a = exchange(&mut raw, out).await;
            assert!(a.error.is_none(), "{}: {:?}", what("Parse"), a.error);
            let mut out = BytesMut::new();
            bind(&mut out, &name, &[&big]);
            execute_sync(&mut out);
            let got = value(&mut raw, out, &what("named Bind")).await;
            assert_eq!(got, big, "{}", what("named Bind"));

            // The same, unnamed.
            let mut out = BytesMut::new();
            parse(&mut out, "", "SELECT $1::text");
            bind(&mut out, "", &[&big]);
            execute_sync(&mut out);
            let got = value(&mut raw, out, &what("unnamed Bind")).await;
            assert_eq!(got, big);
        }

        if mode != "statement" {
            // Inside a transaction block (where the spin never happened) a 400 KB named Bind
            // still has to be renamed: it reached the server under the client's name.
            assert!(raw.query("BEGIN").await.error.is_none());
            let big = "y".repeat(400 * 1024);
            let mut out = BytesMut::new();
            bind(&mut out, "big_param_0", &[&big]);
            execute_sync(&mut out);
            let got = value(&mut raw, out, &format!("{mode}: named Bind in BEGIN")).await;
            assert_eq!(got, big);
            assert!(raw.query("COMMIT").await.error.is_none());
        }

        // A statement name longer than 4 KB, bound with an 8 KB parameter.
        let long = "n".repeat(5000);
        let param = "p".repeat(8 * 1024);
        let mut out = BytesMut::new();
        parse(&mut out, &long, "SELECT $1::text || '!'");
        sync(&mut out);
        let a = exchange(&mut raw, out).await;
        assert!(a.error.is_none(), "{mode}: long name: {:?}", a.error);
        let mut out = BytesMut::new();
        bind(&mut out, &long, &[&param]);
        execute_sync(&mut out);
        let got = value(&mut raw, out, &format!("{mode}: Bind of a long name")).await;
        assert_eq!(got, format!("{param}!"));

        // Still one healthy connection, and every transaction above was a real one.
        let a = raw.query("SELECT 1").await;
        assert_eq!(a.rows, vec![vec![Some("1".to_string())]], "{mode}");
        raw.terminate().await;
    }
}

/// Item 11, and PgBouncer parity (issue 10): a Parse of a name still prepared. Where the pooler
/// tracks statements (transaction and statement mode) it closes the client as PgBouncer does,
/// FATAL 08P01 `prepared statement name is already in use`, before the server sees it; in
/// session mode the server answers (ERROR 42P05, the old statement kept, the connection usable).
/// In every mode a Parse that fails creates nothing, and a closed name can be prepared again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_parse_in_every_mode() {
    let pg = Pg::start();
    for mode in MODES {
        let pooler = start(&pg, mode);
        let login = || Raw::connect(pooler.port, "olly", "olly_pw", "testdb");
        let mut raw = login().await.expect("login");
        let mut out = BytesMut::new();
        parse(&mut out, "dup", "SELECT 1");
        sync(&mut out);
        let a = exchange(&mut raw, out).await;
        assert!(a.error.is_none(), "{mode}: {:?}", a.error);

        // Parse, Bind, Execute, Sync.
        let mut out = BytesMut::new();
        parse(&mut out, "dup", "SELECT 2");
        bind(&mut out, "dup", &[]);
        execute_sync(&mut out);
        let a = exchange(&mut raw, out).await;
        let e = a.error.clone().expect("duplicate Parse refused");
        if mode != "session" {
            assert_eq!(
                (e.severity.as_str(), e.code.as_str(), e.message.as_str()),
                (
                    "FATAL",
                    "08P01",
                    "prepared statement name is already in use"
                ),
                "{mode}"
            );
            assert!(a.closed, "{mode}: {a:?}");
            raw = login().await.expect("login");
            let mut out = BytesMut::new();
            parse(&mut out, "dup", "SELECT 1");
            sync(&mut out);
            assert!(exchange(&mut raw, out).await.error.is_none(), "{mode}");
        } else {
            // The error, then nothing until ReadyForQuery.
            assert_eq!(e.code, "42P05", "{mode}: {e:?}");
            assert_eq!(
                e.message, "prepared statement \"dup\" already exists",
                "{mode}"
            );
            assert_eq!(e.severity, "ERROR", "{mode}");
            assert!(a.rows.is_empty() && !a.closed, "{mode}: {a:?}");
            // A syntax error is reported first, as PostgreSQL parses before it stores.
            let mut out = BytesMut::new();
            parse(&mut out, "dup", "SELEC 3");
            sync(&mut out);
            let e = exchange(&mut raw, out).await.error.expect("syntax error");
            assert_eq!(e.code, "42601", "{mode}: {e:?}");
            // Inside a transaction block the error aborts it, as PostgreSQL's does.
            assert!(raw.query("BEGIN").await.error.is_none());
            let mut out = BytesMut::new();
            parse(&mut out, "dup", "SELECT 3");
            sync(&mut out);
            let e = exchange(&mut raw, out).await.error.expect("refused");
            assert_eq!(e.code, "42P05", "{mode}: {e:?}");
            let e = raw.query("SELECT 1").await.error.expect("aborted");
            assert_eq!(e.code, "25P02", "{mode}: {e:?}");
            assert!(raw.query("ROLLBACK").await.error.is_none());
        }

        // The first statement is the one that runs.
        let mut out = BytesMut::new();
        bind(&mut out, "dup", &[]);
        execute_sync(&mut out);
        assert_eq!(value(&mut raw, out, mode).await, "1", "{mode}");

        // Other errors about the statement name it as the client knows it, too.
        let mut out = BytesMut::new();
        bind(&mut out, "dup", &["extra"]);
        execute_sync(&mut out);
        let e = exchange(&mut raw, out)
            .await
            .error
            .expect("too many parameters");
        assert_eq!(
            e.message,
            "bind message supplies 1 parameters, but prepared statement \"dup\" requires 0",
            "{mode}"
        );

        // A Parse that fails creates nothing: the name is free for the next one.
        let mut out = BytesMut::new();
        parse(&mut out, "fresh", "SELEC 5");
        sync(&mut out);
        let e = exchange(&mut raw, out).await.error.expect("syntax error");
        assert_eq!(e.code, "42601", "{mode}: {e:?}");
        let mut out = BytesMut::new();
        parse(&mut out, "fresh", "SELECT 6");
        bind(&mut out, "fresh", &[]);
        execute_sync(&mut out);
        assert_eq!(value(&mut raw, out, mode).await, "6", "{mode}");

        // Closed, the name can be prepared again.
        let mut out = BytesMut::new();
        frontend::close(b'S', "dup", &mut out).expect("close message");
        parse(&mut out, "dup", "SELECT 4");
        bind(&mut out, "dup", &[]);
        execute_sync(&mut out);
        assert_eq!(value(&mut raw, out, mode).await, "4", "{mode}");
        raw.terminate().await;
    }
}

/// The pool's total_xact_count, read from the console.
async fn xact_count(admin: &mut Raw) -> i64 {
    let stats = admin.query("SHOW STATS").await;
    stats
        .get("database", "testdb", "total_xact_count")
        .map_or(0, |v| v.parse().expect("number"))
}

/// Item 3: total_xact_count counts SQL transactions in every mode (session mode counted one per
/// server link, and only when the client left), live while the client stays connected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xact_count_counts_sql_transactions_in_every_mode() {
    let pg = Pg::start();
    for mode in MODES {
        let pooler = start(&pg, mode);
        let mut admin = Raw::connect(pooler.port, "olly", "olly_pw", "pgbouncer")
            .await
            .expect("console login");
        let before = xact_count(&mut admin).await;
        let client = pooler.connect("olly", "olly_pw", "testdb").await;
        // Five autocommit statements, and a multi-statement Query: six transactions.
        for _ in 0..5 {
            client.simple_query("SELECT 1").await.expect("select");
        }
        client
            .batch_execute("SELECT 1; SELECT 2")
            .await
            .expect("batch");
        let mut want = 6;
        if mode != "statement" {
            // BEGIN .. COMMIT in three requests: one transaction.
            client.batch_execute("BEGIN").await.expect("begin");
            client.simple_query("SELECT 1").await.expect("select");
            client.batch_execute("COMMIT").await.expect("commit");
            want += 1;
        }
        let mut now = 0;
        // Read until the last transaction's count lands (it is added as the server returns).
        for _ in 0..50 {
            now = xact_count(&mut admin).await - before;
            if now >= want {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(now, want, "{mode}: total_xact_count moved by {now}");
        drop(client);
        admin.terminate().await;
    }
}

/// Item 1's mechanism: a client that stalls half-way through a named Parse holds no server and
/// costs nothing while it waits (before the fix every loop took a server, gave it back unused and
/// counted an empty transaction, so the counters raced away); the rest then completes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_half_frame_takes_no_server() {
    let pg = Pg::start();
    let pooler = start(&pg, "transaction");
    let mut admin = Raw::connect(pooler.port, "olly", "olly_pw", "pgbouncer")
        .await
        .expect("console login");
    let mut raw = Raw::connect(pooler.port, "olly", "olly_pw", "testdb")
        .await
        .expect("login");
    let mut out = BytesMut::new();
    parse(
        &mut out,
        "stalled",
        &format!("SELECT '{}'::text", "1".repeat(40 * 1024)),
    );
    bind(&mut out, "stalled", &[]);
    execute_sync(&mut out);
    let stats = |a: &Answer| {
        (
            a.num("database", "testdb", "total_server_assignment_count"),
            a.num("database", "testdb", "total_xact_count"),
        )
    };
    let before = stats(&admin.query("SHOW STATS").await);
    raw.send(&out[..16 * 1024]).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let during = stats(&admin.query("SHOW STATS").await);
    assert_eq!(during, before, "a half-sent frame took a server");
    let pools = admin.query("SHOW POOLS").await;
    assert_eq!(pools.num("database", "testdb", "sv_active"), 0);
    raw.send(&out[16 * 1024..]).await;
    let a = raw.answer().await;
    assert!(a.error.is_none(), "{:?}", a.error);
    assert_eq!(a.rows[0][0].as_ref().map(String::len), Some(40 * 1024));
}
