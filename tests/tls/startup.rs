//! The opening packets and console messages through the shared buffered reader (`net::read_with`)
//! with raw clients: an SSLRequest, a startup packet and a console query cut into pieces sent as
//! separate TCP segments (plain) or separate TLS records, and an oversized startup packet over TLS
//! refused with a FATAL before its body is sent.

use std::time::Duration;

use bytes::{Buf, BufMut, BytesMut};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::common::{Pg, Pooler};
use super::Certs;

/// Writes `bytes` as pieces ending at `cuts`, each flushed and given time to leave on its own
/// (NODELAY: one segment or TLS record per piece).
async fn send_in_pieces<S: AsyncWrite + Unpin>(s: &mut S, bytes: &[u8], cuts: &[usize]) {
    let mut from = 0;
    for &to in cuts.iter().chain([bytes.len()].iter()) {
        s.write_all(&bytes[from..to]).await.unwrap();
        s.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        from = to;
    }
}

/// Reads messages until ReadyForQuery; returns (tag, body) of each, ErrorResponse included
/// (then stops at the close).
async fn messages<S: AsyncRead + Unpin>(s: &mut S) -> Vec<(u8, Vec<u8>)> {
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    loop {
        while buf.len() >= 5 {
            let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
            if buf.len() < 1 + len {
                break;
            }
            let tag = buf[0];
            let body = buf[5..1 + len].to_vec();
            buf.advance(1 + len);
            out.push((tag, body));
            if tag == b'Z' {
                return out;
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(30), s.read_buf(&mut buf))
            .await
            .expect("the pooler answers")
            .unwrap_or(0);
        if n == 0 {
            return out;
        }
    }
}

fn startup(user: &str, db: &str) -> BytesMut {
    let mut b = BytesMut::new();
    frontend::startup_message([("user", user), ("database", db)], &mut b).unwrap();
    b
}

fn query(sql: &str) -> BytesMut {
    let mut b = BytesMut::new();
    frontend::query(sql, &mut b).unwrap();
    b
}

/// The DataRow values of a message list, as text.
fn rows(msgs: &[(u8, Vec<u8>)]) -> Vec<String> {
    msgs.iter()
        .filter(|(t, _)| *t == b'D')
        .map(|(_, body)| {
            let len = i32::from_be_bytes([body[2], body[3], body[4], body[5]]) as usize;
            String::from_utf8_lossy(&body[6..6 + len]).to_string()
        })
        .collect()
}

/// Logs in (trust) with the startup packet cut at `cuts`, then runs `sql` cut in two.
async fn login_and_query<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    db: &str,
    cuts: &[usize],
    sql: &str,
) -> Vec<String> {
    send_in_pieces(s, &startup("olly", db), cuts).await;
    let welcome = messages(s).await;
    assert_eq!(welcome.first().map(|m| m.0), Some(b'R'), "{welcome:?}");
    assert_eq!(welcome.last().map(|m| m.0), Some(b'Z'), "{welcome:?}");
    // The tag alone, then the length split, then the rest.
    send_in_pieces(s, &query(sql), &[1, 3]).await;
    rows(&messages(s).await)
}

async fn tls_connect(
    certs: &Certs,
    port: u16,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let mut ssl = BytesMut::new();
    frontend::ssl_request(&mut ssl);
    // Even the SSLRequest in two segments.
    send_in_pieces(&mut tcp, &ssl, &[3]).await;
    assert_eq!(tcp.read_u8().await.unwrap(), b'S');
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    certs.tls_connector().connect(name, tcp).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_startup_packets_and_console_queries_plain_and_tls() {
    let certs = Certs::new("split");
    certs.leaf("pooler", "pooler", &["localhost"]);
    let pg = Pg::start();
    let extra = format!(
        "client_tls_sslmode = prefer\nclient_tls_key_file = {}\nclient_tls_cert_file = {}\nauth_type = trust\n",
        certs.p("pooler.key"),
        certs.p("pooler.crt")
    );
    let pooler = Pooler::start(&pg, "", &extra, "");

    // Plain TCP: the length field itself split, then the code, then the parameters.
    for (db, sql, want) in [
        ("testdb", "SELECT 'plain'", "plain"),
        ("pgbouncer", "SHOW VERSION", "PgBouncer"),
    ] {
        let mut tcp = TcpStream::connect(("127.0.0.1", pooler.port))
            .await
            .unwrap();
        tcp.set_nodelay(true).unwrap();
        let got = login_and_query(&mut tcp, db, &[2, 6, 13], sql).await;
        assert!(got.len() == 1 && got[0].starts_with(want), "{db}: {got:?}");
    }

    // TLS: the same cuts, each piece its own TLS record.
    for (db, sql, want) in [
        ("testdb", "SELECT 'tls'", "tls"),
        ("pgbouncer", "SHOW VERSION", "PgBouncer"),
    ] {
        let mut s = tls_connect(&certs, pooler.port).await;
        let got = login_and_query(&mut s, db, &[2, 6, 13], sql).await;
        assert!(got.len() == 1 && got[0].starts_with(want), "{db}: {got:?}");
    }

    // An oversized startup packet over TLS: only its header is sent, and the pooler answers
    // with a FATAL at once instead of waiting for (and buffering) the announced 10,001 bytes.
    let mut s = tls_connect(&certs, pooler.port).await;
    let mut head = BytesMut::new();
    head.put_u32(10_001);
    head.put_u32(196_608);
    send_in_pieces(&mut s, &head, &[]).await;
    let reply = messages(&mut s).await;
    assert_eq!(reply.len(), 1, "{reply:?}");
    let (tag, body) = &reply[0];
    let text = String::from_utf8_lossy(body);
    assert_eq!(*tag, b'E', "{text}");
    assert!(text.contains("C08P01"), "{text}");
    assert!(
        text.contains("bad startup packet: startup packet too large: 10001 bytes"),
        "{text}"
    );

    // Nothing of the above disturbed a normal client.
    let c = pooler.connect("olly", "olly_pw", "testdb").await;
    assert_eq!(
        c.query_one("SELECT 1", &[]).await.unwrap().get::<_, i32>(0),
        1
    );
}
