//! Keys that act at login and on the request loop: login_notify_message (a NOTICE in the
//! welcome), scram_iterations (the count the pooler puts in its server-first-message when it
//! derives a SCRAM secret from a plain userlist password), disable_pqexec (a simple Query ends the
//! client with FATAL `PQexec disallowed`; the extended protocol keeps working).

use bytes::{Buf, BytesMut};
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::{psql, Pooler};
use crate::console::Raw;
use crate::{admin, fatal, pg, refused};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_notify_message_is_a_notice_in_the_welcome() {
    let p = Pooler::start(pg(), "", "login_notify_message = Welcome to olly", "");
    let c = Raw::connect(p.port, "olly", "olly_pw", "testdb")
        .await
        .unwrap();
    assert_eq!(c.notices.len(), 1, "{:?}", c.notices.len());
    let n = &c.notices[0];
    assert_eq!(
        (n.severity.as_str(), n.code.as_str(), n.message.as_str()),
        ("NOTICE", "00000", "Welcome to olly")
    );
    // psql shows it too.
    let (code, _, stderr) = psql(&p.conn_str("olly", "olly_pw", "testdb"), "SELECT 1");
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("NOTICE:  Welcome to olly"), "{stderr}");
    // SET empties it: no notice any more.
    let mut a = admin(&p).await;
    assert!(a
        .query("SET login_notify_message = ''")
        .await
        .error
        .is_none());
    let c = Raw::connect(p.port, "olly", "olly_pw", "testdb")
        .await
        .unwrap();
    assert!(c.notices.is_empty());
}

/// Reads one backend message.
async fn read_msg(s: &mut TcpStream, buf: &mut BytesMut) -> (u8, BytesMut) {
    loop {
        if buf.len() >= 5 {
            let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
            if buf.len() > len {
                let mut f = buf.split_to(1 + len);
                let tag = f.get_u8();
                f.advance(4);
                return (tag, f);
            }
        }
        let n = tokio::time::timeout(std::time::Duration::from_secs(10), s.read_buf(buf))
            .await
            .expect("answer in time")
            .expect("read");
        assert!(n > 0, "connection closed");
    }
}

/// Logs in with SCRAM as `user`; returns the iteration count of the server-first-message and
/// whether the login ended with ReadyForQuery.
async fn scram_login(port: u16, user: &str, password: &str) -> (u32, bool) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut out = BytesMut::new();
    frontend::startup_message([("user", user), ("database", "testdb")], &mut out).unwrap();
    s.write_all(&out).await.unwrap();
    let mut buf = BytesMut::new();
    let (tag, mut body) = read_msg(&mut s, &mut buf).await;
    assert_eq!((tag, body.get_i32()), (b'R', 10), "AuthenticationSASL");
    let mut scram = ScramSha256::new(password.as_bytes(), ChannelBinding::unsupported());
    out.clear();
    frontend::sasl_initial_response("SCRAM-SHA-256", scram.message(), &mut out).unwrap();
    s.write_all(&out).await.unwrap();
    let (tag, mut body) = read_msg(&mut s, &mut buf).await;
    assert_eq!(
        (tag, body.get_i32()),
        (b'R', 11),
        "AuthenticationSASLContinue"
    );
    let first = String::from_utf8(body.to_vec()).unwrap();
    let iterations = first
        .split(',')
        .find_map(|f| f.strip_prefix("i="))
        .and_then(|i| i.parse().ok())
        .unwrap_or_else(|| panic!("no i= in {first}"));
    scram.update(&body).unwrap();
    out.clear();
    frontend::sasl_response(scram.message(), &mut out).unwrap();
    s.write_all(&out).await.unwrap();
    loop {
        match read_msg(&mut s, &mut buf).await {
            (b'Z', _) => return (iterations, true),
            (b'E', _) => return (iterations, false),
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_iterations_is_the_count_of_a_secret_made_from_a_plain_password() {
    // scramuser has a plain password in userlist.txt.
    let p = Pooler::start(pg(), "", "", "");
    // The console session first: its md5 login must happen before SCRAM is required.
    let mut a = admin(&p).await;
    assert!(a
        .query("SET auth_type = 'scram-sha-256'")
        .await
        .error
        .is_none());
    assert_eq!(
        scram_login(p.port, "scramuser", "scram_pw").await,
        (4096, true)
    );
    let set = a.query("SET scram_iterations = 1000").await;
    assert_eq!(
        set.tag.as_deref(),
        Some("SET scram_iterations=1000"),
        "{set:?}"
    );
    assert_eq!(
        scram_login(p.port, "scramuser", "scram_pw").await,
        (1000, true)
    );
    // The mock exchange of an unknown user uses the same count, so it looks the same.
    assert_eq!(scram_login(p.port, "nobody", "x").await, (1000, false));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disable_pqexec_refuses_simple_queries_and_keeps_the_extended_protocol() {
    let p = Pooler::start(pg(), "", "disable_pqexec = 1", "");
    // Extended protocol (tokio-postgres prepares and binds).
    let client = p.connect("olly", "olly_pw", "testdb").await;
    let row = client
        .query_one("SELECT $1::int + 1", &[&41i32])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 42);
    // A simple Query: FATAL, and the connection is closed.
    let mut raw = Raw::connect(p.port, "olly", "olly_pw", "testdb")
        .await
        .unwrap();
    let a = raw.query("SELECT 1").await;
    let e = a.error.expect("refused");
    assert_eq!((e.severity, e.code, e.message), fatal("PQexec disallowed"));
    assert!(a.closed);
    // psql -c sends a simple Query.
    let (code, _, stderr) = psql(&p.conn_str("olly", "olly_pw", "testdb"), "SELECT 1");
    assert_ne!(code, 0);
    assert!(stderr.contains("PQexec disallowed"), "{stderr}");
    // Restart-only: SET keeps the value, SHOW CONFIG says so.
    let mut c = admin(&p).await;
    assert!(c.query("SET disable_pqexec = 0").await.error.is_none());
    let cfg = c.query("SHOW CONFIG").await;
    assert_eq!(
        cfg.get("key", "disable_pqexec", "value").as_deref(),
        Some("1")
    );
    assert_eq!(
        cfg.get("key", "disable_pqexec", "changeable").as_deref(),
        Some("no")
    );
    // Unchanged by the SET: still refused. (The console, simple-protocol only, stays usable:
    // it forwards nothing to a server.)
    let mut raw = Raw::connect(p.port, "olly", "olly_pw", "testdb")
        .await
        .unwrap();
    assert!(raw.query("SELECT 1").await.closed);
}

/// client_login_timeout while the pool's first server login hangs (a server that accepts TCP and
/// never answers): PgBouncer names the cause, `client_login_timeout (server down)`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_login_timeout_waiting_for_the_first_server_says_server_down() {
    // Accepts connections (the kernel does, from the backlog) and never speaks.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let p = Pooler::start(
        pg(),
        &format!("mute = host=127.0.0.1 port={port} dbname=testdb"),
        "client_login_timeout = 1\nserver_connect_timeout = 60\nquery_wait_timeout = 60",
        "",
    );
    assert_eq!(
        refused(&p, "olly", "olly_pw", "mute").await,
        fatal("client_login_timeout (server down)")
    );
    drop(silent);
}

/// server_connect_timeout on a server that accepts and never answers: the queued client gets
/// `query_timeout` (PgBouncer's text for a client still waiting), and the log has PgBouncer's
/// `closing because: connect timeout` for the server attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_connect_timeout_logs_connect_timeout() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let p = Pooler::start(
        pg(),
        &format!("mute = host=127.0.0.1 port={port} dbname=testdb"),
        "server_connect_timeout = 1\nquery_timeout = 3\nclient_login_timeout = 60",
        "",
    );
    assert_eq!(
        refused(&p, "olly", "olly_pw", "mute").await,
        fatal("query_timeout")
    );
    assert!(
        p.log().contains("closing because: connect timeout"),
        "{}",
        p.log()
    );
    drop(silent);
}

/// A `_pq_.` protocol option the pooler does not know is answered with NegotiateProtocolVersion
/// first, before the authentication request, as PostgreSQL and PgBouncer send it (its suite's
/// test_protocol_extension_negotiation reads the first message).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negotiate_protocol_version_comes_before_authentication() {
    let p = Pooler::start(pg(), "", "", "");
    let mut s = TcpStream::connect(("127.0.0.1", p.port)).await.unwrap();
    let mut out = BytesMut::new();
    frontend::startup_message(
        [
            ("user", "md5user"),
            ("database", "testdb"),
            ("_pq_.test_protocol_negotiation", ""),
        ],
        &mut out,
    )
    .unwrap();
    s.write_all(&out).await.unwrap();
    let mut buf = BytesMut::new();
    let (tag, mut body) = read_msg(&mut s, &mut buf).await;
    assert_eq!(tag, b'v', "{body:?}");
    assert_eq!(body.get_u32(), 0x0003_0000, "protocol 3.0");
    assert_eq!(body.get_u32(), 1, "one option not recognised");
    assert_eq!(&body[..], b"_pq_.test_protocol_negotiation\0");
    let (tag, mut body) = read_msg(&mut s, &mut buf).await;
    assert_eq!(tag, b'R', "then the authentication request");
    assert_eq!(body.get_u32(), 5, "md5");
}

/// verbose = 2 logs PgBouncer's `varcache_apply:` line with the SETs that bring a server to a
/// client's startup parameters, once, and `varcache_set_canonical:` when the server spells the
/// value its own way (its suite's test_equivalent_startup_param greps both).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracked_parameter_sets_are_logged_at_verbose_2() {
    let p = Pooler::start(pg(), "", "verbose = 2", "");
    let mut c = Raw::connect_with(
        p.port,
        "olly",
        "olly_pw",
        "testdb",
        &[("options", "-c DateStyle=ISO")],
    )
    .await
    .unwrap();
    for _ in 0..2 {
        let a = c.query("SELECT 1").await;
        assert!(a.error.is_none(), "{a:?}");
    }
    let log = p.log();
    assert_eq!(
        log.matches("varcache_apply: SET DateStyle='ISO'").count(),
        1,
        "{log}"
    );
    assert!(
        log.contains(
            "varcache_set_canonical: setting DateStyle to its canonical version ISO -> ISO, MDY"
        ),
        "{log}"
    );
}
