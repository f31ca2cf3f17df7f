//! Client-side TLS: sslmode require/verify-full with psql, `SSL required` for plain clients,
//! pipelined requests over TLS, the `tls` column, certificates swapped by SIGHUP without dropping
//! anyone, and `auth_type = cert`.

use std::time::Duration;

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::common::{Pg, Pooler};
use super::{conninfo, run_psql, Certs};

fn tls_lines(certs: &Certs, mode: &str) -> String {
    format!(
        "client_tls_sslmode = {mode}\nclient_tls_key_file = {}\nclient_tls_cert_file = {}\n",
        certs.p("pooler.key"),
        certs.p("pooler.crt")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_serves_psql_and_refuses_plain_clients() {
    let certs = Certs::new("client");
    certs.leaf("pooler", "pooler", &["localhost", "127.0.0.1"]);
    let pg = Pg::start();
    let pooler = Pooler::start(&pg, "", &tls_lines(&certs, "require"), "");
    let port = pooler.port;

    let ci = conninfo(
        "127.0.0.1",
        port,
        "olly",
        "olly_pw",
        "testdb",
        "sslmode=require",
    );
    let (code, out, err) = run_psql(&ci, "SELECT 40 + 2");
    assert_eq!((code, out.as_str()), (0, "42"), "{err}");

    let ca = certs.p("ca.crt");
    for host in ["localhost", "127.0.0.1"] {
        let ci = conninfo(
            host,
            port,
            "olly",
            "olly_pw",
            "testdb",
            &format!("sslmode=verify-full sslrootcert={ca}"),
        );
        let (code, out, err) = run_psql(&ci, "SELECT 'verified'");
        assert_eq!((code, out.as_str()), (0, "verified"), "{host}: {err}");
    }

    // tokio-postgres over TLS, verify-full: extended protocol, several transactions, a prepared
    // statement reused across them.
    let tls = super::pgtls::RustlsTls::new(&certs.path("ca.crt"));
    let c = super::pgtls::connect(
        &conninfo(
            "localhost",
            port,
            "olly",
            "olly_pw",
            "testdb",
            "sslmode=require",
        ),
        &tls,
    )
    .await
    .expect("tokio-postgres over TLS");
    let stmt = c.prepare("SELECT $1::int + 1").await.unwrap();
    for i in 0..20 {
        let row = c.query_one(&stmt, &[&i]).await.unwrap();
        assert_eq!(row.get::<_, i32>(0), i + 1);
    }

    // A large answer and several transactions over one TLS session (rustls buffers writes: every
    // one of them must reach the client).
    let (code, out, err) = run_psql(
        &ci,
        "SELECT repeat('x', 1000) FROM generate_series(1, 3000); BEGIN; SELECT 1; COMMIT; SELECT 'last'",
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().filter(|l| l.len() == 1000).count(), 3000);
    assert!(out.ends_with("last"), "{out}");

    // Plain clients get PgBouncer's FATAL.
    let plain = conninfo(
        "127.0.0.1",
        port,
        "olly",
        "olly_pw",
        "testdb",
        "sslmode=disable",
    );
    let (code, _, err) = run_psql(&plain, "SELECT 1");
    assert_ne!(code, 0);
    assert!(err.contains("SSL required"), "{err}");
    let Err(e) = pooler.try_connect("olly", "olly_pw", "testdb").await else {
        panic!("plain login must be refused");
    };
    let db = e.as_db_error().expect("server error");
    assert_eq!((db.code().code(), db.message()), ("08P01", "SSL required"));

    // SHOW CLIENTS shows the TLS description of the TLS client (the console session itself).
    let admin = conninfo(
        "127.0.0.1",
        port,
        "olly",
        "olly_pw",
        "pgbouncer",
        "sslmode=require",
    );
    let (code, out, err) = run_psql(&admin, "SHOW CLIENTS");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("|TLSv1.3/TLS_"), "{out}");
    assert!(out.contains("/ECDH="), "{out}");
}

/// A raw TLS client (tokio-rustls) logged in as olly to testdb under auth_type trust.
async fn raw_tls_client(
    certs: &Certs,
    port: u16,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    tcp.write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f])
        .await
        .unwrap();
    assert_eq!(tcp.read_u8().await.unwrap(), b'S');
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let mut s = certs.tls_connector().connect(name, tcp).await.unwrap();
    let mut out = BytesMut::new();
    let body = b"user\0olly\0database\0testdb\0\0";
    out.put_i32(8 + body.len() as i32);
    out.put_i32(196608);
    out.put_slice(body);
    s.write_all(&out).await.unwrap();
    s.flush().await.unwrap();
    let mut inbuf = BytesMut::new();
    assert_eq!(read_until_ready(&mut s, &mut inbuf, 1).await, 0);
    assert!(inbuf.is_empty());
    s
}

fn query(out: &mut BytesMut, sql: &str) {
    out.put_u8(b'Q');
    out.put_i32(5 + sql.len() as i32);
    out.put_slice(sql.as_bytes());
    out.put_u8(0);
}

/// Many queries pipelined in one write, and large answers to a client that reads late (rustls
/// holds written bytes while the socket is full: all of them, and the ReadyForQuery, must come).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_and_large_answers_over_tls_all_arrive() {
    let certs = Certs::new("pipe");
    certs.leaf("pooler", "pooler", &["localhost"]);
    let pg = Pg::start();
    let extra = tls_lines(&certs, "require") + "auth_type = trust\n";
    let pooler = Pooler::start(&pg, "", &extra, "");
    let mut s = raw_tls_client(&certs, pooler.port).await;
    let mut inbuf = BytesMut::new();

    const N: usize = 40;
    let mut out = BytesMut::new();
    for i in 0..N {
        query(&mut out, &format!("SELECT {i}, '{}'", "y".repeat(20_000)));
    }
    s.write_all(&out).await.unwrap();
    s.flush().await.unwrap();
    let rows = tokio::time::timeout(
        Duration::from_secs(60),
        read_until_ready(&mut s, &mut inbuf, N),
    )
    .await
    .expect("every pipelined query answered");
    assert_eq!(rows, N);

    for round in 0..2 {
        out.clear();
        query(
            &mut out,
            "SELECT repeat('z', 1000000) FROM generate_series(1, 16)",
        );
        s.write_all(&out).await.unwrap();
        s.flush().await.unwrap();
        // Let the socket buffers fill while the pooler still writes.
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let rows = tokio::time::timeout(
            Duration::from_secs(60),
            read_until_ready(&mut s, &mut inbuf, 1),
        )
        .await
        .unwrap_or_else(|_| panic!("round {round}: the answer's tail never arrived"));
        assert_eq!(rows, 16);
    }
}

/// Reads messages until `n` ReadyForQuery arrived; returns the DataRows seen.
async fn read_until_ready<S: tokio::io::AsyncRead + Unpin>(
    s: &mut S,
    buf: &mut BytesMut,
    n: usize,
) -> usize {
    let (mut ready, mut rows) = (0, 0);
    loop {
        while buf.len() >= 5 {
            let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
            if buf.len() < 1 + len {
                break;
            }
            let tag = buf[0];
            buf.advance(1 + len);
            match tag {
                b'Z' => ready += 1,
                b'D' => rows += 1,
                b'E' => panic!("error from the pooler"),
                _ => {}
            }
            if ready == n {
                return rows;
            }
        }
        let got = s.read_buf(buf).await.unwrap();
        assert!(got > 0, "pooler closed the connection");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_swaps_certificates_without_dropping_clients() {
    let a = Certs::new("first");
    let b = Certs::new("second");
    a.leaf("pooler", "pooler", &["localhost"]);
    b.leaf("pooler", "pooler", &["localhost"]);
    let pg = Pg::start();
    // prefer: plain clients are still served, so one can stay connected across the reload.
    let pooler = Pooler::start(&pg, "", &tls_lines(&a, "prefer"), "");
    let port = pooler.port;
    let plain = pooler.connect("olly", "olly_pw", "testdb").await;
    plain.simple_query("SELECT 1").await.unwrap();

    let verify = |ca: &Certs| {
        let ci = conninfo(
            "localhost",
            port,
            "olly",
            "olly_pw",
            "testdb",
            &format!("sslmode=verify-full sslrootcert={}", ca.p("ca.crt")),
        );
        run_psql(&ci, "SELECT 1").0
    };
    assert_eq!(verify(&a), 0);
    assert_ne!(verify(&b), 0);

    for f in ["pooler.crt", "pooler.key"] {
        std::fs::copy(b.path(f), a.path(f)).unwrap();
    }
    pooler.signal(libc::SIGHUP);
    assert!(pooler.wait_for_log("configuration reloaded", Duration::from_secs(10)));
    assert_eq!(verify(&b), 0, "new certificate in use after SIGHUP");
    assert_ne!(verify(&a), 0);
    plain
        .simple_query("SELECT 2")
        .await
        .expect("plain client kept across the reload");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cert_auth_matches_the_common_name() {
    let certs = Certs::new("cert");
    certs.leaf("pooler", "pooler", &["localhost"]);
    certs.leaf("olly", "olly", &[]);
    let other = Certs::new("stranger");
    other.leaf("olly", "olly", &[]);
    let pg = Pg::start();
    let extra = tls_lines(&certs, "verify-full")
        + &format!(
            "client_tls_ca_file = {}\nauth_type = cert\n",
            certs.p("ca.crt")
        );
    let pooler = Pooler::start(&pg, "", &extra, "");
    let with_cert = |c: &Certs, user: &str| {
        let ci = conninfo(
            "127.0.0.1",
            pooler.port,
            user,
            "unused",
            "testdb",
            &format!(
                "sslmode=require sslcert={} sslkey={}",
                c.p("olly.crt"),
                c.p("olly.key")
            ),
        );
        run_psql(&ci, "SELECT current_user")
    };
    let (code, out, err) = with_cert(&certs, "olly");
    assert_eq!((code, out.as_str()), (0, "olly"), "{err}");
    let (code, _, err) = with_cert(&certs, "md5user");
    assert_ne!(code, 0);
    assert!(err.contains("certificate authentication failed"), "{err}");
    // A certificate from another CA, or none, fails the handshake.
    assert_ne!(with_cert(&other, "olly").0, 0);
    let none = conninfo(
        "127.0.0.1",
        pooler.port,
        "olly",
        "x",
        "testdb",
        "sslmode=require",
    );
    assert_ne!(run_psql(&none, "SELECT 1").0, 0);
}
