//! A TLS client that vanishes (RST) while the pooler still holds part of its answer inside
//! rustls: the transfer loop's TLS flush step is what fails. The session must end quietly, the
//! server (which had answered everything) goes back to the pool and serves the next client, and
//! the pooler goes on.

use std::time::Duration;

use bytes::BytesMut;
use postgres_protocol::message::frontend;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;
use tokio_postgres::SimpleQueryMessage;

use super::common::{Pg, Pooler};
use super::Certs;

/// The answer's size: more than the two small socket buffers between pooler and client take,
/// less than rustls buffers on top of them (64 KiB), so the pooler's writes all succeed and only
/// its flush is left waiting.
const ANSWER: usize = 48_000;
/// SO_SNDBUF/SO_RCVBUF on both ends of the client connection (the kernel doubles it).
const SOCKET_BUFFER: u32 = 4096;

/// Text of the first column of every row of a simple query.
async fn col(c: &tokio_postgres::Client, sql: &str) -> Vec<String> {
    c.simple_query(sql)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(r.get(0).unwrap_or("").to_string()),
            _ => None,
        })
        .collect()
}

/// (cl_active, sv_active, sv_idle) of testdb/olly in SHOW POOLS.
async fn pool_counts(admin: &tokio_postgres::Client) -> (i64, i64, i64) {
    for m in admin.simple_query("SHOW POOLS").await.unwrap() {
        if let SimpleQueryMessage::Row(r) = m {
            if r.get("database") == Some("testdb") && r.get("user") == Some("olly") {
                let n = |k: &str| r.get(k).unwrap().parse::<i64>().unwrap();
                return (n("cl_active"), n("sv_active"), n("sv_idle"));
            }
        }
    }
    (0, 0, 0)
}

/// Send and receive queues (bytes) of the established IPv4 TCP sockets whose local or remote
/// port is `port`, from /proc/net/tcp: (local port, remote port, tx_queue, rx_queue).
fn tcp_queues(port: u16) -> Vec<(u16, u16, u64, u64)> {
    let text = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let port_of = |addr: &str| u16::from_str_radix(addr.rsplit(':').next().unwrap(), 16).unwrap();
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (local, remote) = (port_of(f[1]), port_of(f[2]));
            let (tx, rx) = f[4].split_once(':').unwrap();
            let q = |h: &str| u64::from_str_radix(h, 16).unwrap();
            (f[3] == "01" && (local == port || remote == port))
                .then(|| (local, remote, q(tx), q(rx)))
        })
        .collect()
}

/// Polls `probe` every 50 ms until it returns true; panics with `what` after 30 s.
async fn wait_until<F, Fut>(what: &str, mut probe: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..600 {
        if probe().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting until {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_reset_while_tls_flush_pending_releases_the_server() {
    let certs = Certs::new("vanish");
    certs.leaf("pooler", "pooler", &["localhost"]);
    let pg = Pg::start();
    let extra = format!(
        "client_tls_sslmode = prefer\nclient_tls_key_file = {}\nclient_tls_cert_file = {}\n\
         auth_type = trust\ntcp_socket_buffer = {SOCKET_BUFFER}\ndefault_pool_size = 1\n",
        certs.p("pooler.key"),
        certs.p("pooler.crt")
    );
    let pooler = Pooler::start(&pg, "", &extra, "");
    let admin = pooler.connect("olly", "olly_pw", "pgbouncer").await;
    let direct = super::common::connect_to(&pg.conn_str("olly", "olly_pw", "testdb")).await;

    // A TLS client with a small receive window that never reads its answer (so closing it sends
    // a reset: Linux answers a close with unread received data by RST).
    let sock = TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(SOCKET_BUFFER).unwrap();
    let mut tcp = sock
        .connect(([127, 0, 0, 1], pooler.port).into())
        .await
        .unwrap();
    tcp.set_nodelay(true).unwrap();
    let mut ssl = BytesMut::new();
    frontend::ssl_request(&mut ssl);
    tcp.write_all(&ssl).await.unwrap();
    assert_eq!(tcp.read_u8().await.unwrap(), b'S');
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let mut s = certs.tls_connector().connect(name, tcp).await.unwrap();
    let mut out = BytesMut::new();
    frontend::startup_message([("user", "olly"), ("database", "testdb")], &mut out).unwrap();
    s.write_all(&out).await.unwrap();
    s.flush().await.unwrap();
    // Read the welcome up to ReadyForQuery.
    let mut inbuf = BytesMut::new();
    while !inbuf.ends_with(&[b'Z', 0, 0, 0, 5, b'I']) {
        assert!(s.read_buf(&mut inbuf).await.unwrap() > 0, "closed at login");
    }
    out.clear();
    frontend::query(
        &format!("SELECT repeat('x', {ANSWER}) AS flush_probe"),
        &mut out,
    )
    .unwrap();
    s.write_all(&out).await.unwrap();
    s.flush().await.unwrap();

    // The backend serving it, to see it again after the reset.
    let mut backend = String::new();
    for _ in 0..600 {
        let pids = col(
            &direct,
            "SELECT pid FROM pg_stat_activity WHERE query LIKE '%flush_probe%' \
             AND pid <> pg_backend_pid()",
        )
        .await;
        if let Some(pid) = pids.into_iter().next() {
            backend = pid;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!backend.is_empty(), "the query never reached PostgreSQL");
    // Every byte PostgreSQL sent was taken by the pooler (nothing queued on either end of the
    // server connections), while the client connection still has bytes the client does not take;
    // the rest of the answer, ReadyForQuery included, waits in rustls for the transfer loop's
    // flush, and the pooler still holds the server for this client.
    let (pg_port, pooler_port) = (pg.port, pooler.port);
    let drained = || {
        let server_side = tcp_queues(pg_port);
        let client_side = tcp_queues(pooler_port);
        let pg_sent_all = server_side.iter().all(|&(_, _, tx, rx)| tx == 0 && rx == 0);
        let client_stuck = client_side
            .iter()
            .any(|&(local, _, tx, _)| local == pooler_port && tx > 0);
        pg_sent_all && client_stuck
    };
    wait_until("the pooler has read the whole answer", || {
        let ok = drained();
        async move { ok }
    })
    .await;
    assert_eq!(
        pool_counts(&admin).await,
        (1, 1, 0),
        "the pooler must still be writing this client's answer (no flush pending means the test \
         did not reach the state it is about)"
    );

    // The client vanishes: RST (unread data in its receive buffer).
    drop(s);

    // The session ends; the server had answered everything, so it goes back to the pool.
    wait_until("the server is back in the pool", || {
        let admin = &admin;
        async move { pool_counts(admin).await == (0, 0, 1) }
    })
    .await;
    // The same backend serves the next client, and the pooler is unharmed.
    let next = pooler.connect("olly", "olly_pw", "testdb").await;
    assert_eq!(col(&next, "SELECT pg_backend_pid()").await, [backend]);
    let log = pooler.log();
    assert!(!log.contains("panicked"), "{log}");
}
