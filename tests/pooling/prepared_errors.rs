//! Misnamed prepared statements, as PgBouncer 1.21+ answers them and its own suite
//! (test/test_prepared.py) expects: a Bind or Describe of a name the client does not hold (never
//! prepared, closed, or forgotten by DEALLOCATE ALL / DISCARD ALL) closes the client with FATAL
//! 08P01 `prepared statement did not exist`; a Parse of a name it holds closes it with
//! `prepared statement name is already in use`; a Close of any name is answered by the pooler
//! and never reaches a server, so it cannot close a shared statement.

use std::time::{Duration, Instant};

use bytes::BytesMut;

use crate::common::{Pg, Pooler};
use crate::console::{Answer, Raw};
use crate::extended::{bind, parse};
use crate::prepared::{close, describe, execute, run, start};

/// The answer is PgBouncer's FATAL 08P01 `text`, and the connection closed after it.
pub(crate) fn assert_fatal(a: &Answer, text: &str) {
    let e = a.error.as_ref().expect("an error");
    assert_eq!(
        (e.severity.as_str(), e.code.as_str(), e.message.as_str()),
        ("FATAL", "08P01", text),
        "{a:?}"
    );
    assert!(a.closed, "the client is closed: {a:?}");
}

/// The pooler's log has `line` `times` times (the lines are written as the client's socket
/// closes, so they are there or about to be).
fn assert_logged(pooler: &Pooler, line: &str, times: usize) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while pooler.log().matches(line).count() < times && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        pooler.log().matches(line).count(),
        times,
        "{line:?} in:\n{}",
        pooler.log()
    );
}

async fn login(pooler: &Pooler) -> Raw {
    Raw::connect(pooler.port, "olly", "olly_pw", "testdb")
        .await
        .expect("login")
}

/// The single value a Bind + Execute of `name` returns.
async fn value_of(raw: &mut Raw, name: &str) -> Answer {
    let mut out = BytesMut::new();
    bind(&mut out, name, &[]);
    execute(&mut out);
    run(raw, out).await.1
}

/// PgBouncer's test_discard_or_deallocate_all: two clients prepare `mystmt` with different
/// texts; one of them runs DISCARD ALL / DEALLOCATE ALL as a simple query. The other's statement
/// still runs; the first one's use of `mystmt` closes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bind_after_discard_or_deallocate_all_closes_the_client() {
    let pg = Pg::start();
    let pooler = start(&pg, "");
    for (round, command) in ["DISCARD ALL", "DEALLOCATE ALL"].into_iter().enumerate() {
        let (mut c1, mut c2) = (login(&pooler).await, login(&pooler).await);
        for (raw, sql) in [(&mut c1, "SELECT 1"), (&mut c2, "SELECT 2")] {
            let mut out = BytesMut::new();
            parse(&mut out, "mystmt", sql);
            let (tags, a) = run(raw, out).await;
            assert_eq!(tags, b"1Z", "{command}: {a:?}");
        }
        assert_eq!(value_of(&mut c1, "mystmt").await.rows, [[Some("1".into())]]);
        assert_eq!(value_of(&mut c2, "mystmt").await.rows, [[Some("2".into())]]);

        let a = c1.query(command).await;
        assert!(a.error.is_none(), "{command}: {a:?}");
        assert_eq!(a.tag.as_deref(), Some(command));

        let a = value_of(&mut c2, "mystmt").await;
        assert_eq!(
            a.rows,
            [[Some("2".into())]],
            "{command}: the other client keeps its own"
        );
        let a = value_of(&mut c1, "mystmt").await;
        assert_fatal(&a, "prepared statement did not exist");
        let times = round + 1;
        assert_logged(&pooler, "prepared statement 'mystmt' not found", times);
        assert_logged(
            &pooler,
            "closing because: prepared statement did not exist",
            times,
        );
        c2.terminate().await;
    }
}

/// PgBouncer's test_describe_non_existent_prepared_statement, and the same for a Bind of a name
/// the client never prepared: the pooler answers, nothing of it reaches a server. The unnamed
/// statement is not the pooler's business: PostgreSQL's own 26000, the connection kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_or_bind_of_a_name_never_prepared_closes_the_client() {
    let pg = Pg::start();
    let pooler = start(&pg, "");
    let mut raw = login(&pooler).await;
    let a = value_of(&mut raw, "").await;
    let e = a.error.as_ref().expect("no unnamed statement");
    assert_eq!(e.code, "26000", "{a:?}");
    assert!(!a.closed);

    let mut out = BytesMut::new();
    describe(&mut out, "doesnotexist");
    assert_fatal(
        &run(&mut raw, out).await.1,
        "prepared statement did not exist",
    );
    assert_logged(&pooler, "prepared statement 'doesnotexist' not found", 1);

    let mut raw = login(&pooler).await;
    let a = value_of(&mut raw, "neverprepared").await;
    assert_fatal(&a, "prepared statement did not exist");
    assert_logged(&pooler, "prepared statement 'neverprepared' not found", 1);
}

/// PgBouncer's test_close_prepared_statement: a Close is answered, again for a name already
/// closed, and the closed name is gone (its Describe closes the client).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_is_answered_for_any_name_and_the_name_is_gone() {
    let pg = Pg::start();
    let pooler = start(&pg, "");
    let mut raw = login(&pooler).await;
    let mut out = BytesMut::new();
    parse(&mut out, "test", "SELECT 1");
    assert_eq!(run(&mut raw, out).await.0, b"1Z");
    for _ in 0..2 {
        let mut out = BytesMut::new();
        close(&mut out, "test");
        let (tags, a) = run(&mut raw, out).await;
        assert_eq!(tags, b"3Z", "{a:?}");
    }
    let mut out = BytesMut::new();
    describe(&mut out, "test");
    assert_fatal(
        &run(&mut raw, out).await.1,
        "prepared statement did not exist",
    );
}

/// A client's Close of a name it does not hold, spelled as a server-side statement name, is
/// answered by the pooler: passed on, it closed the shared statement under every client that
/// uses it on that server, while the pooler still believed the server had it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_of_a_server_side_name_leaves_the_shared_statement_alone() {
    let pg = Pg::start();
    // One server, so every request below runs on the server that holds the statement.
    let pooler = Pooler::start(
        &pg,
        "",
        "pool_mode = transaction\ndefault_pool_size = 1",
        "",
    );
    let mut raw = login(&pooler).await;
    let mut out = BytesMut::new();
    parse(&mut out, "mine", "SELECT 'shared'::text");
    assert_eq!(run(&mut raw, out).await.0, b"1Z");
    let a = raw.query("SELECT name FROM pg_prepared_statements").await;
    let server_name = a.rows[0][0].clone().expect("the server's statement name");
    assert!(server_name.starts_with("OLLY_"), "{server_name}");

    let mut out = BytesMut::new();
    close(&mut out, &server_name);
    let (tags, a) = run(&mut raw, out).await;
    assert_eq!(tags, b"3Z", "{a:?}");
    let a = value_of(&mut raw, "mine").await;
    assert_eq!(a.rows, [[Some("shared".into())]], "{a:?}");
    raw.terminate().await;
}

/// PgBouncer's test_prepared_disallow_name_reuse: a Parse of a name the client still holds
/// closes it, with PgBouncer's log line; nothing reaches the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parse_of_a_held_name_closes_the_client() {
    let pg = Pg::start();
    let pooler = start(&pg, "");
    let mut raw = login(&pooler).await;
    let mut out = BytesMut::new();
    parse(&mut out, "test", "SELECT 1");
    assert_eq!(run(&mut raw, out).await.0, b"1Z");
    let mut out = BytesMut::new();
    parse(&mut out, "test", "SELECT 1");
    let a = run(&mut raw, out).await.1;
    assert_fatal(&a, "prepared statement name is already in use");
    assert_logged(&pooler, "prepared statement 'test' was already prepared", 1);
    let closing = "closing because: prepared statement name is already in use";
    assert_logged(&pooler, closing, 1);
}
