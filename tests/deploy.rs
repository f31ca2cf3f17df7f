//! What the container image and the Kubernetes manifests rely on, against a real PostgreSQL:
//! `--check` (exit status and `file:line: key:` messages), operator image mode (the binary
//! started with no config file from the Zalando operator's pooler environment builds the operator
//! template's configuration and serves psql), and cancel requests across the two replicas
//! (`[peers]` + `peer_id`).

mod common;
mod console;

use std::process::Command;
use std::sync::OnceLock;

use std::time::Duration;

use common::{free_port, psql, Pg, Pooler};
use console::Raw;

fn pg() -> &'static Pg {
    static PG: OnceLock<Pg> = OnceLock::new();
    PG.get_or_init(Pg::start)
}

fn bin() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ollyscale-pooler"));
    for (k, _) in std::env::vars() {
        if k.starts_with("PG") || k.starts_with("CONNECTION_POOLER_") || k.starts_with("OLLYSCALE_")
        {
            cmd.env_remove(k);
        }
    }
    cmd
}

/// `--check` exits 0 with one summary line for a good file, and non-zero naming file, line and
/// key of every problem for a bad one, without starting anything.
#[test]
fn check_mode_reports_file_line_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = dir.path().join("good.ini");
    let users = dir.path().join("userlist.txt");
    std::fs::write(&users, "\"a\" \"b\"\n").expect("write");
    std::fs::write(
        &good,
        format!(
            "[databases]\nappdb = host=127.0.0.1 port=5432\n[pgbouncer]\nlisten_addr = *\n\
             listen_port = 5432\npool_mode = transaction\nauth_file = {}\nsbuf_loopcnt = 10\n",
            users.display()
        ),
    )
    .expect("write");
    let out = bin().arg("--check").arg(&good).output().expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(
        stdout.contains(
            "OK: 1 databases, 1 users in auth_file, pool_mode transaction, listen *:5432"
        ),
        "{stdout}"
    );
    assert!(
        stderr.contains("setting sbuf_loopcnt is not supported"),
        "{stderr}"
    );

    let bad = dir.path().join("bad.ini");
    std::fs::write(
        &bad,
        "[databases]\nappdb = host=127.0.0.1 port=70000\n[pgbouncer]\npool_mode = trans\nnot_a_key = 1\n",
    )
    .expect("write");
    let out = bin().arg("-c").arg(&bad).output().expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let shown = bad.display();
    for expected in [
        format!("{shown}:2: appdb: port: expected a port number"),
        format!("{shown}:4: pool_mode: expected session, transaction or statement"),
        format!("{shown}:5: not_a_key: unknown setting"),
    ] {
        assert!(
            stderr.contains(&expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }
    assert!(out.stdout.is_empty());

    // Operator mode names the variable it misses.
    let out = bin()
        .args(["--operator", "--check"])
        .env("PGUSER", "pooler")
        .env("OLLYSCALE_RUNTIME_DIR", dir.path())
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("operator mode: PGHOST: must be set"),
        "{stderr}"
    );
}

/// The operator's pooler container environment, no config file: the pooler renders the operator
/// template (pool sizes, auth_query settings, TLS modes, admin user), warns by name about what it
/// does not implement yet, and serves psql through the `*` entry with the PGUSER/PGPASSWORD
/// userlist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_environment_mode() {
    let pg = pg();
    let port = free_port();
    let http_port = free_port();
    let p = Pooler::start_custom(pg, port, |dir| {
        let include = dir.join("local.ini");
        // Loopback only in tests; in a pod the template's `listen_addr = *` stands. The shared
        // test PostgreSQL has no TLS, so the template's server_tls_sslmode = require (checked in
        // the operator unit tests, and end to end in tests/tls zalando) becomes prefer here.
        std::fs::write(
            &include,
            format!(
                "[pgbouncer]\nlisten_addr = 127.0.0.1\nunix_socket_dir = {}\n\
                 http_listen_addr = 127.0.0.1\nhttp_listen_port = {http_port}\n\
                 server_tls_sslmode = prefer\n",
                dir.display()
            ),
        )
        .expect("write include");
        let env = [
            ("PGHOST", "127.0.0.1".to_string()),
            ("PGPORT", pg.port.to_string()),
            ("PGUSER", "md5user".into()),
            ("PGPASSWORD", "md5_pw".into()),
            ("PGSCHEMA", "pooler".into()),
            ("CONNECTION_POOLER_PORT", port.to_string()),
            ("CONNECTION_POOLER_MODE", "transaction".into()),
            ("CONNECTION_POOLER_DEFAULT_SIZE", "7".into()),
            ("CONNECTION_POOLER_MIN_SIZE", "3".into()),
            ("CONNECTION_POOLER_RESERVE_SIZE", "3".into()),
            ("CONNECTION_POOLER_MAX_CLIENT_CONN", "500".into()),
            ("CONNECTION_POOLER_MAX_DB_CONN", "11".into()),
            ("OLLYSCALE_RUNTIME_DIR", dir.display().to_string()),
            (
                "OLLYSCALE_OPERATOR_USERLIST",
                dir.join("not-mounted").display().to_string(),
            ),
            ("OLLYSCALE_INCLUDE", include.display().to_string()),
        ];
        let env = env.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        (Vec::new(), env)
    });

    // psql through the `*` entry as the operator's pooler user.
    let (code, out, err) = psql(&p.conn_str("md5user", "md5_pw", "testdb"), "SELECT 40 + 2");
    assert_eq!((code, out.as_str()), (0, "42"), "{err}");

    // SHOW CONFIG as the admin user the template names ($PGUSER).
    let admin = p.connect("md5user", "md5_pw", "pgbouncer").await;
    let rows = admin
        .simple_query("SHOW CONFIG")
        .await
        .expect("show config");
    let value = |key: &str| -> String {
        rows.iter()
            .find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) if r.get(0) == Some(key) => {
                    Some(r.get(1).unwrap_or("").to_string())
                }
                _ => None,
            })
            .unwrap_or_else(|| panic!("no {key} in SHOW CONFIG"))
    };
    for (key, want) in [
        ("pool_mode", "transaction".to_string()),
        ("default_pool_size", "7".into()),
        ("reserve_pool_size", "3".into()),
        ("min_pool_size", "0".into()),
        ("max_client_conn", "500".into()),
        ("max_db_connections", "11".into()),
        ("listen_port", port.to_string()),
        ("admin_users", "md5user".into()),
        ("auth_type", "md5".into()),
        ("auth_dbname", "postgres".into()),
        ("auth_query", "SELECT * FROM pooler.user_lookup($1)".into()),
        ("server_tls_sslmode", "prefer".into()),
        ("max_prepared_statements", "200".into()),
        ("idle_transaction_timeout", "600".into()),
        ("server_login_retry", "5".into()),
        (
            "ignore_startup_parameters",
            "extra_float_digits,options".into(),
        ),
    ] {
        assert_eq!(value(key), want, "SHOW CONFIG {key}");
    }
    // TLS and auth_query are implemented now: no start-up warning names them.
    let log = p.log();
    for key in [
        "auth_query",
        "auth_dbname",
        "server_tls_sslmode",
        "[databases] *: auth_user",
    ] {
        assert!(
            !log.contains(&format!("setting {key} is not supported")),
            "warning for {key}:\n{log}"
        );
    }
    // The rendered files are kept for RELOAD; the userlist is private.
    let mode = std::fs::metadata(p.dir.join("userlist.txt"))
        .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777)
        .expect("userlist written");
    assert_eq!(mode, 0o600);
    let (status, _) = common_http(http_port).await;
    assert_eq!(status, 200);
}

async fn common_http(port: u16) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("http connect");
    s.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.expect("read");
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, text)
}

/// Sends a CancelRequest for `key` to 127.0.0.1:`port` and waits until the pooler closes it.
async fn send_cancel(port: u16, (pid, key): (u32, u32)) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect for cancel");
    let mut msg = Vec::with_capacity(16);
    msg.extend_from_slice(&16u32.to_be_bytes());
    msg.extend_from_slice(&80877102u32.to_be_bytes());
    msg.extend_from_slice(&pid.to_be_bytes());
    msg.extend_from_slice(&key.to_be_bytes());
    s.write_all(&msg).await.expect("send cancel");
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut rest)).await;
    assert!(
        rest.is_empty(),
        "nothing is ever written on a cancel connection"
    );
}

/// Two pooler processes behind one Service: a `pg_sleep` running through A is cancelled by a
/// CancelRequest that lands on B, which forwards it to A by the peer id inside the key (57014).
/// SHOW PEERS / PEER_POOLS / LISTS on B show the peer and the pool the forward made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_lands_on_the_other_peer() {
    let pg = pg();
    let (port_a, port_b) = (free_port(), free_port());
    let peers = format!(
        "[peers]\n1 = host=127.0.0.1 port={port_a}\n2 = host=127.0.0.1 port={port_b} pool_size=4\n"
    );
    let a = Pooler::start(
        pg,
        "",
        &format!("listen_port = {port_a}\npeer_id = 1\n{peers}"),
        "",
    );
    let b = Pooler::start(
        pg,
        "",
        &format!("listen_port = {port_b}\npeer_id = 2\n{peers}"),
        "",
    );
    assert_eq!((a.port, b.port), (port_a, port_b));

    let mut client = Raw::connect(port_a, "md5user", "md5_pw", "testdb")
        .await
        .expect("login through A");
    let key = client.key.expect("BackendKeyData");
    // PgBouncer's layout: bytes 1-2 of the key hold the peer id, the low 2 bits of byte 7 a TTL.
    let bytes = key.0.to_be_bytes();
    assert_eq!(u16::from(bytes[1]) + (u16::from(bytes[2]) << 8), 1);
    assert_eq!(key.1 & 3, 3);

    let mut q = bytes::BytesMut::new();
    postgres_protocol::message::frontend::query("SELECT pg_sleep(30)", &mut q).expect("query");
    client.send(&q).await;
    // Let the query reach the server (a cancel for an idle client is dropped, as in PgBouncer).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while pg
        .psql("SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30)' AND state = 'active'")
        != "1"
    {
        assert!(std::time::Instant::now() < deadline, "query never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    send_cancel(port_b, key).await;
    let answer = tokio::time::timeout(Duration::from_secs(10), client.answer())
        .await
        .expect("the query ended after the cancel");
    let error = answer.error.expect("cancelled");
    assert_eq!(error.code, "57014", "{error:?}");
    assert_eq!(error.message, "canceling statement due to user request");
    // The session goes on.
    assert_eq!(
        client.query("SELECT 1").await.rows,
        vec![vec![Some("1".to_string())]]
    );

    let mut admin = Raw::connect(port_b, "olly", "olly_pw", "pgbouncer")
        .await
        .expect("console of B");
    let peers = admin.query("SHOW PEERS").await;
    peers.expect_show();
    assert_eq!(
        peers.rows,
        vec![
            vec![
                Some("1".to_string()),
                Some("127.0.0.1".to_string()),
                Some(port_a.to_string()),
                Some("20".to_string()),
            ],
            vec![
                Some("2".to_string()),
                Some("127.0.0.1".to_string()),
                Some(port_b.to_string()),
                Some("4".to_string()),
            ]
        ],
        "B lists every [peers] entry, itself included, as PgBouncer does (A with default_pool_size)"
    );
    let pools = admin.query("SHOW PEER_POOLS").await;
    pools.expect_show();
    let zero = Some("0".to_string());
    assert_eq!(
        pools.rows,
        vec![vec![
            Some("1".to_string()),
            zero.clone(),
            zero.clone(),
            zero.clone(),
            zero
        ]]
    );
    let lists = admin.query("SHOW LISTS").await;
    assert_eq!(lists.num("list", "peers", "items"), 2);
    assert_eq!(lists.num("list", "peer_pools", "items"), 1);

    // A key whose TTL is used up is not forwarded again; one naming an unknown peer is dropped.
    let log_before = b.log();
    send_cancel(port_b, (key.0, key.1 & !3)).await;
    let unknown = (key.0 & 0xff00_00ff) | (7 << 16);
    send_cancel(port_b, (unknown, key.1)).await;
    assert!(
        b.wait_for_log("TTL was exhausted", Duration::from_secs(5)),
        "{}",
        &b.log()[log_before.len()..]
    );
    assert!(b.wait_for_log("could not find peer", Duration::from_secs(5)));
    drop(a);
}
