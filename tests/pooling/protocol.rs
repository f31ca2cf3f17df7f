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
