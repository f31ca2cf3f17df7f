//! Protocol coverage through the pooler: COPY, cancel, pipelining with errors, notices, psql,
//! malformed and oversized packets.

use std::io::{Read, Write};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio_postgres::types::Type;

use crate::common::{psql, Pg, Pooler};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_100k_rows_both_ways() {
    let pg = Pg::start();
    pg.psql("CREATE TABLE c (id int, name text)");
    let pooler = Pooler::start(&pg, "", "default_pool_size = 2", "");
    let client = pooler.connect("olly", "olly_pw", "testdb").await;
    let sink = client
        .copy_in("COPY c FROM STDIN")
        .await
        .expect("COPY FROM STDIN starts");
    let mut sink = Box::pin(sink);
    let mut chunk = String::new();
    for i in 0..100_000 {
        chunk.push_str(&format!("{i}\tname-{i}\n"));
        if chunk.len() > 60_000 {
            sink.send(Bytes::from(std::mem::take(&mut chunk)))
                .await
                .unwrap();
        }
    }
    sink.send(Bytes::from(chunk)).await.unwrap();
    let rows = sink.as_mut().finish().await.expect("COPY completes");
    assert_eq!(rows, 100_000);
    let stream = client.copy_out("COPY c TO STDOUT").await.unwrap();
    let mut stream = Box::pin(stream);
    let mut lines = 0usize;
    while let Some(chunk) = stream.next().await {
        lines += chunk.unwrap().iter().filter(|b| **b == b'\n').count();
    }
    assert_eq!(lines, 100_000);
    // The server went back clean: the next transaction works.
    let r = client.simple_query("SELECT count(*) FROM c").await.unwrap();
    assert!(
        matches!(&r[1], tokio_postgres::SimpleQueryMessage::Row(row) if row.get(0) == Some("100000"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_request_reaches_the_running_query() {
    let pg = Pg::start();
    let pooler = Pooler::start_default(&pg);
    let client = pooler.connect("olly", "olly_pw", "testdb").await;
    let token = client.cancel_token();
    let q = tokio::spawn(async move { client.simple_query("SELECT pg_sleep(20)").await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    token
        .cancel_query(tokio_postgres::NoTls)
        .await
        .expect("cancel request sent");
    let res = tokio::time::timeout(Duration::from_secs(10), q)
        .await
        .expect("query ended after cancel")
        .unwrap();
    let e = res.expect_err("cancelled query fails");
    let db = e.as_db_error().expect("server error");
    assert_eq!(db.code().code(), "57014", "{db:?}");
}

/// A TCP relay in front of PostgreSQL that holds the first CancelRequest it sees for `delay`
/// before passing it on: a cancel the pooler forwarded while the query ran, that reaches the
/// backend only after that query ended (what PgBouncer's suite provokes with 100 concurrent
/// cancels). Everything else passes at once. Returns the relay's port.
async fn relay_delaying_first_cancel(pg_port: u16, delay: Duration) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let held = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let held = held.clone();
            tokio::spawn(async move {
                let mut head = [0u8; 8];
                if inbound.read_exact(&mut head).await.is_err() {
                    return;
                }
                // CancelRequest: length 16, code 80877102.
                let cancel = head == [0, 0, 0, 16, 0x04, 0xd2, 0x16, 0x2e];
                if cancel && !held.swap(true, std::sync::atomic::Ordering::SeqCst) {
                    tokio::time::sleep(delay).await;
                }
                let Ok(mut outbound) = tokio::net::TcpStream::connect(("127.0.0.1", pg_port)).await
                else {
                    return;
                };
                if outbound.write_all(&head).await.is_ok() {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    port
}

/// A cancel still on its way to the backend when its query ends must not cancel the next
/// client's query on the same server: the server waits for it (`being_canceled`) before reuse.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_cancel_never_reaches_the_next_clients_query() {
    let pg = Pg::start();
    let relay = relay_delaying_first_cancel(pg.port, Duration::from_secs(3)).await;
    // One server, so the second client's query runs on the server the cancels are aimed at.
    let pooler = Pooler::start_for_port(relay, "", "default_pool_size = 1", "");
    let c1 = pooler.connect("olly", "olly_pw", "testdb").await;
    let c2 = pooler.connect("olly", "olly_pw", "testdb").await;
    let console = pooler.connect("olly", "olly_pw", "pgbouncer").await;
    let token = c1.cancel_token();
    let q1 = tokio::spawn(async move { c1.simple_query("SELECT pg_sleep(20)").await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let q2 = tokio::spawn(async move { c2.simple_query("SELECT pg_sleep(5)").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The first cancel is held by the relay; the second reaches PostgreSQL at once and ends q1.
    let late = tokio::spawn({
        let token = token.clone();
        async move { token.cancel_query(tokio_postgres::NoTls).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    token
        .cancel_query(tokio_postgres::NoTls)
        .await
        .expect("cancel request sent");
    let e = tokio::time::timeout(Duration::from_secs(10), q1)
        .await
        .expect("q1 ended after the cancel")
        .unwrap()
        .expect_err("q1 was cancelled");
    assert_eq!(
        e.as_db_error().expect("server error").code().code(),
        "57014"
    );
    // Meanwhile (the held cancel is ~2.7 s away) the console shows the server as held back, once
    // the session has checked it in (it may still be doing so as q1's answer arrives).
    let mut row = None;
    for _ in 0..40 {
        let pools = console.simple_query("SHOW POOLS").await.unwrap();
        row = pools.iter().find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) if r.get("database") == Some("testdb") => {
                Some((
                    r.get("sv_being_canceled").map(String::from),
                    r.get("sv_active").map(String::from),
                ))
            }
            _ => None,
        });
        if row == Some((Some("1".into()), Some("0".into()))) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(
        row,
        Some((Some("1".into()), Some("0".into()))),
        "(sv_being_canceled, sv_active)"
    );
    // The held cancel arrives ~2.7 s into q2's 5 s sleep if q2 got the server at once.
    let r2 = tokio::time::timeout(Duration::from_secs(30), q2)
        .await
        .expect("q2 ended")
        .unwrap();
    assert!(
        r2.is_ok(),
        "the late cancel hit the next client's query: {r2:?}"
    );
    late.await.unwrap().expect("late cancel sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_extended_queries_with_an_error_in_the_middle() {
    let pg = Pg::start();
    let pooler = Pooler::start(&pg, "", "default_pool_size = 1", "");
    let client = pooler.connect("olly", "olly_pw", "testdb").await;
    // tokio-postgres pipelines concurrent requests on one connection: several Syncs in flight.
    let ok1 = client.query_typed("SELECT $1::int + 1", &[(&1i32, Type::INT4)]);
    let bad = client.query_typed("SELECT 1/0", &[]);
    let ok2 = client.query_typed("SELECT $1::text", &[(&"after", Type::TEXT)]);
    let (r1, r2, r3) = tokio::join!(ok1, bad, ok2);
    assert_eq!(r1.unwrap()[0].get::<_, i32>(0), 2);
    assert_eq!(
        r2.unwrap_err().as_db_error().unwrap().code().code(),
        "22012"
    );
    assert_eq!(r3.unwrap()[0].get::<_, String>(0), "after");
    // Many in flight at once, interleaved with other clients on the single server.
    let other = pooler.connect("olly", "olly_pw", "testdb").await;
    let values: Vec<i32> = (0..50).collect();
    let params: Vec<[(&(dyn tokio_postgres::types::ToSql + Sync), Type); 1]> = values
        .iter()
        .map(|v| [(v as &(dyn tokio_postgres::types::ToSql + Sync), Type::INT4)])
        .collect();
    let mut futs = Vec::new();
    for p in &params {
        futs.push(client.query_typed("SELECT $1::int * 2", p));
    }
    let o = other.simple_query("SELECT 7");
    let (results, o) = tokio::join!(futures_util::future::join_all(futs), o);
    for (i, r) in results.into_iter().enumerate() {
        assert_eq!(r.unwrap()[0].get::<_, i32>(0), i as i32 * 2);
    }
    assert!(o.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notices_empty_queries_and_multi_statement_strings() {
    let pg = Pg::start();
    let pooler = Pooler::start_default(&pg);
    let conn = pooler.conn_str("olly", "olly_pw", "testdb");
    let (code, out, err) = psql(
        &conn,
        "DO $$ BEGIN RAISE NOTICE 'hello from plpgsql'; END $$; SELECT 1; ; SELECT 'x' || 'y'",
    );
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("hello from plpgsql"), "notice missing: {err}");
    assert!(out.contains("xy"), "{out}");
    let client = pooler.connect("olly", "olly_pw", "testdb").await;
    client.simple_query("").await.expect("empty query");
    client.batch_execute(";;").await.expect("only semicolons");
    // A function call over the protocol (psql \lo_ functions use it); here plain SQL functions.
    let (code, out, _) = psql(&conn, "SELECT md5('a')");
    assert_eq!(code, 0);
    assert_eq!(out, "0cc175b9c0f1b6a831c399e269772661");
}

fn raw_connect(pooler: &Pooler) -> std::net::TcpStream {
    let s = std::net::TcpStream::connect(("127.0.0.1", pooler.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

fn read_all(mut s: std::net::TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_packets_end_only_that_connection() {
    let pg = Pg::start();
    let pooler = Pooler::start(&pg, "", "max_packet_size = 65536", "");
    let bystander = pooler.connect("olly", "olly_pw", "testdb").await;

    // Garbage instead of a startup packet: a FATAL 08P01, then close.
    let mut s = raw_connect(&pooler);
    s.write_all(&[0, 0, 0, 3, 1, 2, 3, 4]).unwrap();
    let reply = read_all(s);
    assert_eq!(reply.first(), Some(&b'E'), "{reply:?}");
    assert!(String::from_utf8_lossy(&reply).contains("08P01"));

    // A huge length in the startup packet is refused before anything is allocated for it.
    let mut s = raw_connect(&pooler);
    s.write_all(&[0x7f, 0xff, 0xff, 0xff, 0, 3, 0, 0]).unwrap();
    let reply = read_all(s);
    assert_eq!(reply.first(), Some(&b'E'));

    // Protocol 2 gets PgBouncer's text.
    let mut s = raw_connect(&pooler);
    s.write_all(&[0, 0, 0, 8, 0, 2, 0, 0]).unwrap();
    let reply = String::from_utf8_lossy(&read_all(s)).to_string();
    assert!(reply.contains("old V2 protocol not supported"), "{reply}");

    // A logged-in client sending a message over max_packet_size.
    let client = pooler.connect("olly", "olly_pw", "testdb").await;
    let big = "x".repeat(100_000);
    let e = client
        .simple_query(&format!("SELECT '{big}'"))
        .await
        .expect_err("oversized query refused");
    let (code, msg) = crate::db_error(&e);
    assert_eq!(code, "08P01", "{e:?}");
    assert!(msg.contains("max_packet_size"), "{msg}");

    // Nobody else noticed.
    assert!(bystander.simple_query("SELECT 1").await.is_ok());
    let fresh = pooler.connect("olly", "olly_pw", "testdb").await;
    assert!(fresh.simple_query("SELECT 1").await.is_ok());
}
