//! Console SET for every changeable key this pooler implements (accepted, shown by SHOW CONFIG),
//! restart-only keys kept as PgBouncer's cf_set keeps them, and the effect of the newer keys:
//! transaction_timeout, query_wait_notify, server_fast_close.

use std::time::Duration;

use crate::common::Pooler;
use crate::console::Raw;
use crate::{admin, pg};

/// A valid non-default value for each run-time changeable key (PgBouncer's `changeable = yes`).
const SAMPLES: &[(&str, &str)] = &[
    ("admin_users", "olly"),
    ("application_name_add_host", "1"),
    ("auth_type", "md5"),
    ("autodb_idle_timeout", "600"),
    ("cancel_wait_timeout", "5"),
    ("client_idle_timeout", "30"),
    ("client_login_timeout", "30"),
    ("client_tls13_ciphers", "TLS_CHACHA20_POLY1305_SHA256"),
    ("client_tls_ecdhcurve", "secp384r1"),
    ("default_pool_size", "7"),
    ("dns_max_ttl", "30"),
    ("dns_nxdomain_ttl", "30"),
    ("idle_transaction_timeout", "30"),
    ("ignore_startup_parameters", "extra_float_digits"),
    ("log_connections", "0"),
    ("log_disconnections", "0"),
    ("log_pooler_errors", "0"),
    ("log_stats", "0"),
    ("login_notify_message", "hello"),
    ("max_client_conn", "50"),
    ("max_db_client_connections", "40"),
    ("max_db_connections", "30"),
    ("max_packet_size", "100000"),
    ("max_prepared_statements", "100"),
    ("max_user_client_connections", "40"),
    ("max_user_connections", "30"),
    ("min_pool_size", "1"),
    ("pool_mode", "session"),
    ("pool_idle_timeout", "60"),
    ("query_timeout", "30"),
    ("query_wait_notify", "3"),
    ("query_wait_timeout", "30"),
    ("reserve_pool_size", "1"),
    ("reserve_pool_timeout", "2"),
    ("scram_iterations", "8192"),
    ("server_check_delay", "10"),
    ("server_check_query", "SELECT 1"),
    ("server_connect_timeout", "10"),
    ("server_fast_close", "1"),
    ("server_idle_timeout", "60"),
    ("server_lifetime", "600"),
    ("server_login_retry", "5"),
    ("server_reset_query", "DISCARD ALL"),
    ("server_reset_query_always", "1"),
    ("server_round_robin", "1"),
    ("server_tls13_ciphers", "TLS_AES_256_GCM_SHA384"),
    ("shutdown_drain", "transaction"),
    ("shutdown_timeout", "20"),
    ("stats_period", "30"),
    ("stats_users", "stats"),
    ("suspend_timeout", "5"),
    ("syslog", "0"),
    ("syslog_facility", "local1"),
    ("syslog_ident", "olly-test"),
    ("tcp_defer_accept", "0"),
    ("tcp_keepalive", "1"),
    ("tcp_keepcnt", "3"),
    ("tcp_keepidle", "30"),
    ("tcp_keepintvl", "5"),
    ("tcp_socket_buffer", "65536"),
    ("tcp_user_timeout", "1000"),
    ("transaction_timeout", "30"),
    ("verbose", "0"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_changeable_key_is_accepted_and_shown() {
    let p = Pooler::start(pg(), "", "", "");
    let mut c = admin(&p).await;
    let cfg = c.query("SHOW CONFIG").await;
    for (key, value) in SAMPLES {
        assert_eq!(
            cfg.get("key", key, "changeable").as_deref(),
            Some("yes"),
            "{key} is changeable in PgBouncer"
        );
        let a = c.query(&format!("SET {key} = '{value}'")).await;
        assert!(a.error.is_none(), "SET {key}: {a:?}");
        assert_eq!(a.tag, Some(format!("SET {key}={value}")));
    }
    let cfg = c.query("SHOW CONFIG").await;
    for (key, value) in SAMPLES {
        assert_eq!(
            cfg.get("key", key, "value").as_deref(),
            Some(*value),
            "{key}"
        );
    }
    // The console still works under the new settings (pool_mode session, and the rest).
    let mut client = Raw::connect(p.port, "olly", "olly_pw", "testdb")
        .await
        .unwrap();
    assert_eq!(
        client.query("SELECT 1").await.rows,
        vec![vec![Some("1".into())]]
    );
}

/// SET conffile names the file the next RELOAD reads, and SHOW CONFIG prints it (PgBouncer's
/// cf_config_file).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_conffile_makes_reload_read_that_file() {
    let p = Pooler::start(pg(), "", "", "");
    let mut c = admin(&p).await;
    let cfg = c.query("SHOW CONFIG").await;
    let first = p.ini_path.display().to_string();
    assert_eq!(cfg.get("key", "conffile", "value"), Some(first));
    let other = p.dir.join("other.ini");
    let ini = std::fs::read_to_string(&p.ini_path).unwrap();
    std::fs::write(
        &other,
        ini.replace("[pgbouncer]\n", "[pgbouncer]\ndefault_pool_size = 13\n"),
    )
    .unwrap();
    let other = other.display().to_string();
    let a = c.query(&format!("SET conffile = '{other}'")).await;
    assert!(a.error.is_none(), "{a:?}");
    assert!(c.query("RELOAD").await.error.is_none());
    let cfg = c.query("SHOW CONFIG").await;
    assert_eq!(cfg.get("key", "conffile", "value"), Some(other));
    assert_eq!(
        cfg.get("key", "default_pool_size", "value").as_deref(),
        Some("13")
    );
}

/// A curve ring lacks is refused by SET (PgBouncer's `SET failed`, the reason in the log with
/// libusual's text), and the value in force stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_ecdh_curve_is_refused() {
    let p = Pooler::start(pg(), "", "client_tls_ecdhcurve = P-256\n", "");
    let mut c = admin(&p).await;
    let a = c.query("SET client_tls_ecdhcurve = 'secp521r1'").await;
    let e = a.error.expect("secp521r1 must be refused");
    assert_eq!(e.message, "SET failed");
    assert!(
        p.wait_for_log("invalid ecdhe curve 'secp521r1'", Duration::from_secs(5)),
        "{}",
        p.log()
    );
    let cfg = c.query("SHOW CONFIG").await;
    assert_eq!(
        cfg.get("key", "client_tls_ecdhcurve", "value").as_deref(),
        Some("P-256")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_only_keys_answer_set_and_keep_their_value() {
    let p = Pooler::start(pg(), "", "", "");
    let mut c = admin(&p).await;
    for (key, value) in [
        ("so_reuseport", "1"),
        ("unix_socket_group", "nogroup"),
        ("listen_addr", "*"),
        ("pkt_buf", "8192"),
        ("disable_pqexec", "1"),
    ] {
        let before = c.query("SHOW CONFIG").await.get("key", key, "value");
        let a = c.query(&format!("SET {key} = '{value}'")).await;
        assert!(a.error.is_none(), "SET {key}: {a:?}");
        assert_eq!(a.tag, Some(format!("SET {key}={value}")));
        let after = c.query("SHOW CONFIG").await;
        assert_eq!(after.get("key", key, "value"), before, "{key}");
        assert_eq!(after.get("key", key, "changeable").as_deref(), Some("no"));
    }
}

/// transaction_timeout closes a transaction that stays open too long, busy or idle, with
/// PgBouncer's text; SET turns it on for clients already connected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_timeout_closes_the_long_transaction() {
    let p = Pooler::start(pg(), "", "", "");
    let mut client = Raw::connect(p.port, "olly", "olly_pw", "testdb")
        .await
        .unwrap();
    let mut c = admin(&p).await;
    assert!(c.query("SET transaction_timeout = 1").await.error.is_none());
    // Short transactions are fine.
    assert!(client.query("BEGIN").await.error.is_none());
    assert!(client.query("SELECT 1").await.error.is_none());
    assert!(client.query("COMMIT").await.error.is_none());
    // A running statement inside the transaction is cut at the transaction's deadline.
    assert!(client.query("BEGIN").await.error.is_none());
    let a = client.query("SELECT pg_sleep(3)").await;
    let e = a.error.expect("transaction timeout");
    assert_eq!(
        (e.severity.as_str(), e.code.as_str(), e.message.as_str()),
        ("FATAL", "08P01", "transaction timeout")
    );
    assert!(a.closed);
}

/// The [users] override wins over the global value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_timeout_per_user() {
    let p = Pooler::start(pg(), "", "[users]\nmd5user = transaction_timeout=1", "");
    let mut olly = Raw::connect(p.port, "olly", "olly_pw", "testdb")
        .await
        .unwrap();
    let mut md5 = Raw::connect(p.port, "md5user", "md5_pw", "testdb")
        .await
        .unwrap();
    for c in [&mut olly, &mut md5] {
        assert!(c.query("BEGIN").await.error.is_none());
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let a = md5.query("SELECT 1").await;
    assert_eq!(
        a.error.map(|e| e.message).as_deref(),
        Some("transaction timeout")
    );
    let a = olly.query("SELECT 1").await;
    assert!(a.error.is_none(), "{a:?}");
    assert!(olly.query("COMMIT").await.error.is_none());
}

/// A client queued longer than query_wait_notify gets PgBouncer's NOTICE, then its answer; once
/// per wait, so a client queued long a second time is told again (PgBouncer's test_notify_queue).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_wait_notify_tells_a_queued_client() {
    let p = Pooler::start(pg(), "", "default_pool_size = 1\nquery_wait_notify = 1", "");
    let mut holder = Raw::connect(p.port, "olly", "olly_pw", "testdb")
        .await
        .unwrap();
    let mut waiter = Raw::connect(p.port, "olly", "olly_pw", "testdb")
        .await
        .unwrap();
    assert!(holder.query("BEGIN").await.error.is_none());
    let wait = tokio::spawn(async move {
        let a = waiter.query("SELECT 1").await;
        (waiter, a)
    });
    tokio::time::sleep(Duration::from_millis(1800)).await;
    assert!(holder.query("COMMIT").await.error.is_none());
    let (mut waiter, a) = wait.await.unwrap();
    assert!(a.error.is_none(), "{a:?}");
    assert_eq!(a.rows, vec![vec![Some("1".into())]]);
    assert_eq!(a.notices.len(), 1, "{a:?}");
    let n = &a.notices[0];
    assert_eq!(
        (n.severity.as_str(), n.code.as_str(), n.message.as_str()),
        (
            "NOTICE",
            "00000",
            "No server connection available in postgres backend, client being queued"
        )
    );
    // Queued long a second time: told again, once.
    assert!(holder.query("BEGIN").await.error.is_none());
    let wait = tokio::spawn(async move { waiter.query("SELECT 2").await });
    tokio::time::sleep(Duration::from_millis(1800)).await;
    assert!(holder.query("COMMIT").await.error.is_none());
    let a = wait.await.unwrap();
    assert!(a.error.is_none(), "{a:?}");
    assert_eq!(a.notices.len(), 1, "{a:?}");
    assert_eq!(a.notices[0].message, n.message);
}

async fn backend_pid(c: &mut Raw) -> String {
    let a = c.query("SELECT pg_backend_pid()").await;
    assert!(a.error.is_none(), "{a:?}");
    a.rows[0][0].clone().expect("pid")
}

/// Session mode: with server_fast_close, a server marked by RECONNECT is closed at the client's
/// next transaction boundary and the client with it (FATAL `database configuration changed`, as
/// PgBouncer's own suite expects); without it, the client keeps its server until it leaves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_fast_close_in_session_mode() {
    for fast in [false, true] {
        let p = Pooler::start(
            pg(),
            "",
            &format!(
                "pool_mode = session\nserver_fast_close = {}",
                u8::from(fast)
            ),
            "",
        );
        let mut client = Raw::connect(p.port, "olly", "olly_pw", "testdb")
            .await
            .unwrap();
        let first = backend_pid(&mut client).await;
        let mut c = admin(&p).await;
        assert!(c.query("RECONNECT testdb").await.error.is_none());
        let next = client.query("SELECT pg_backend_pid()").await;
        if fast {
            let e = next.error.expect("the session ends with its server");
            assert_eq!(
                (e.severity.as_str(), e.code.as_str(), e.message.as_str()),
                ("FATAL", "08P01", "database configuration changed")
            );
            assert!(p
                .log()
                .contains("closing because: database configuration changed"));
        } else {
            assert!(next.error.is_none(), "{next:?}");
            assert_eq!(next.rows[0][0].as_deref(), Some(first.as_str()));
        }
    }
}

/// cancel_wait_timeout bounds how long a cancel forwarded to a `[peers]` process waits for a free
/// slot: with the peer's one slot taken, the second cancel gives up after 1 s (the built-in wait
/// was 10 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_wait_timeout_bounds_the_wait_for_a_peer_slot() {
    // A "peer" that takes connections and never answers: each forwarded cancel holds the slot.
    let peer = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let peer_port = peer.local_addr().unwrap().port();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let count = accepted.clone();
    let holder = tokio::spawn(async move {
        let mut keep = Vec::new();
        while let Ok((s, _)) = peer.accept().await {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            keep.push(s);
        }
    });
    let p = Pooler::start(
        pg(),
        "",
        &format!(
            "peer_id = 1\ncancel_wait_timeout = 1\n[peers]\n2 = host=127.0.0.1 port={peer_port} pool_size=1"
        ),
        "",
    );
    // A cancel key that names peer 2 (bytes 1-2 of the pid) with hops left (low key bits).
    let pid: u32 = 0x1000_0000 | (2 << 16);
    let key: u32 = 0x0000_1003;
    for _ in 0..2 {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", p.port))
            .await
            .unwrap();
        let mut req = Vec::new();
        req.extend_from_slice(&16u32.to_be_bytes());
        req.extend_from_slice(&80877102u32.to_be_bytes());
        req.extend_from_slice(&pid.to_be_bytes());
        req.extend_from_slice(&key.to_be_bytes());
        tokio::io::AsyncWriteExt::write_all(&mut s, &req)
            .await
            .unwrap();
    }
    let gave_up = crate::eventually(Duration::from_secs(3), || {
        p.log().contains("cancel request to peer timed out waiting")
    })
    .await;
    assert!(gave_up, "{}", p.log());
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
    holder.abort();
}

/// server_fast_close turned on by SET while a session-mode client already holds its server still
/// applies to that client (its session is one long transfer that started with the key off).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_fast_close_set_mid_session_applies() {
    let p = Pooler::start(pg(), "", "pool_mode = session", "");
    let mut client = Raw::connect(p.port, "olly", "olly_pw", "testdb")
        .await
        .unwrap();
    backend_pid(&mut client).await;
    let mut c = admin(&p).await;
    assert!(c.query("SET server_fast_close = 1").await.error.is_none());
    assert!(c.query("RECONNECT testdb").await.error.is_none());
    let e = client
        .query("SELECT 1")
        .await
        .error
        .expect("the session ends with its server");
    assert_eq!(e.message, "database configuration changed");
}
