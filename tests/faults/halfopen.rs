//! Half-open TCP on either side of the pooler, made honestly: nftables rules on the loopback
//! interface drop every packet of one connection (matched by both its ports) or every SYN to
//! one port, so the peer's socket stays open but nothing gets through: no FIN, no RST, exactly
//! what a pulled cable, a dead node or a silently dropping firewall looks like.
//!
//! The rules live in a table of their own, named after the process and a counter, and the
//! [`Blackhole`] guard deletes the table when it drops, also when the test fails or panics.
//! The tests need root (CI runs as root) and `nft` (Debian package `nftables`, installed by
//! scripts/test.sh); without them they fail loudly, never skip.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

use super::still_serves;
use crate::common::{self, Pg, Pooler};
use crate::console::Raw;

/// An nftables table dropping loopback TCP packets; deleted on drop.
struct Blackhole {
    table: String,
}

impl Blackhole {
    /// Drops every packet of the loopback connection between ports `a` and `b`, both ways.
    /// Both ports are matched: Linux reuses an ephemeral port for connections to other
    /// destinations, so one port alone could silence a bystander connection too.
    fn connection(a: u16, b: u16) -> Blackhole {
        Blackhole::install(&format!(
            "oifname \"lo\" tcp sport {a} tcp dport {b} drop\n    \
             oifname \"lo\" tcp sport {b} tcp dport {a} drop"
        ))
    }

    /// Drops every packet to `port`: a SYN sent there is never answered.
    fn port(port: u16) -> Blackhole {
        Blackhole::install(&format!("oifname \"lo\" tcp dport {port} drop"))
    }

    fn install(rules: &str) -> Blackhole {
        static N: AtomicU32 = AtomicU32::new(0);
        let table = format!(
            "ollyscale_test_{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        // Every loopback packet leaves through the output hook, so one chain covers both ends.
        let script = format!(
            "table inet {table} {{\n  chain out {{\n    type filter hook output priority 0; \
             policy accept;\n    {rules}\n  }}\n}}\n"
        );
        // The guard exists before the table does: a failure below still tries to delete it.
        let guard = Blackhole { table };
        let out = nft(&["-f", "-"], Some(&script));
        assert!(
            out.status.success(),
            "nft could not install the rules (root and the nftables package are needed):\n{}{}",
            String::from_utf8_lossy(&out.stderr),
            script
        );
        guard
    }
}

impl Drop for Blackhole {
    fn drop(&mut self) {
        let out = nft(&["delete", "table", "inet", &self.table], None);
        if !out.status.success() && !std::thread::panicking() {
            panic!(
                "nft could not delete table {}: {}",
                self.table,
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

fn nft(args: &[&str], stdin: Option<&str>) -> std::process::Output {
    use std::io::Write;
    let mut child = Command::new("nft")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run nft (install the nftables package): {e}"));
    let mut input = child.stdin.take().expect("piped stdin");
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).expect("write nft script");
    }
    drop(input);
    child.wait_with_output().expect("nft runs")
}

/// Polls `cond` every 100 ms for up to `limit`.
async fn eventually(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Send-Q of the established loopback connection from port `local` to port `peer` (ss(8)),
/// `None` while there is no such connection.
fn send_queue(local: u16, peer: u16) -> Option<u64> {
    let out = Command::new("ss")
        .args(["-tnH", "state", "established"])
        .output()
        .unwrap_or_else(|e| panic!("cannot run ss (package iproute2): {e}"));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let port_of = |a: &str| a.rsplit(':').next().and_then(|p| p.parse::<u16>().ok());
            match f.as_slice() {
                [_, sendq, l, r, ..] if port_of(l) == Some(local) && port_of(r) == Some(peer) => {
                    sendq.parse().ok()
                }
                _ => None,
            }
        })
}

/// The pooler-side port of the server connection running `query` (pg_stat_activity.client_port).
fn server_port_running(pg: &Pg, query: &str) -> u16 {
    let sql = format!(
        "SELECT client_port FROM pg_stat_activity WHERE query = '{query}' AND state = 'active'"
    );
    let out = pg.psql(&sql);
    out.trim()
        .parse()
        .unwrap_or_else(|_| panic!("no server connection runs {query:?}: {out:?}"))
}

/// The pooler's server connection goes silent in the middle of a query (the query reached
/// PostgreSQL, then every packet of that connection is dropped). No query_timeout is set: TCP
/// keepalive (tcp_keepidle = 1, tcp_keepintvl = 1, tcp_keepcnt = 2) finds the peer dead and the
/// kernel fails the socket. What the client sees: FATAL 08P01 `server conn crashed?` instead of
/// a hang. The pooler logs the closed server and goes on: new clients are served at once (a new
/// server connection, on another port) while the dead one is still black-holed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_silent_mid_query_keepalive_fires() {
    let pg = Pg::start();
    let p = Pooler::start(
        &pg,
        "",
        "tcp_keepalive = 1\ntcp_keepidle = 1\ntcp_keepintvl = 1\ntcp_keepcnt = 2",
        "",
    );
    // A raw client, which reads exactly the frames the pooler sent (see the next test).
    let mut c = Raw::connect(p.port, "olly", "olly_pw", "testdb")
        .await
        .expect("login");
    let sleeper = tokio::spawn(async move { c.query("SELECT pg_sleep(60)").await });
    let mut port = None;
    eventually(
        "the query reaches PostgreSQL",
        Duration::from_secs(10),
        || {
            let n = pg
                .psql("SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(60)'");
            if n.trim() == "1" {
                port = Some(server_port_running(&pg, "SELECT pg_sleep(60)"));
            }
            port.is_some()
        },
    )
    .await;
    let port = port.expect("set above");
    // Keepalive probes are only sent on a connection with nothing unacknowledged: had the hole
    // swallowed PostgreSQL's (possibly delayed) ACK of the query, the pooler would retransmit
    // instead, which only tcp_user_timeout bounds (the next test). So wait for that ACK.
    eventually(
        "PostgreSQL acknowledged the query",
        Duration::from_secs(10),
        || send_queue(port, pg.port) == Some(0),
    )
    .await;
    let hole = Blackhole::connection(port, pg.port);
    let answer = tokio::time::timeout(Duration::from_secs(40), sleeper)
        .await
        .expect("keepalive must end the query long before it would finish")
        .expect("join");
    let err = answer
        .error
        .as_ref()
        .unwrap_or_else(|| panic!("an ErrorResponse, not a bare close: {answer:?}"));
    assert_eq!(
        (err.code.as_str(), err.message.as_str()),
        ("08P01", "server conn crashed?"),
        "client saw: {answer:?}"
    );
    still_serves(&p).await;
    drop(hole);
    still_serves(&p).await;
}

/// The pooler's server connection is black-holed while idle in the pool; the next query is
/// written into the hole. tcp_user_timeout = 1500 ms bounds how long written data may stay
/// unacknowledged: the kernel fails the socket, the client gets FATAL 08P01 `server conn
/// crashed?`, and the pool replaces the server (the next client is served).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_silent_before_query_tcp_user_timeout_fires() {
    let pg = Pg::start();
    let p = Pooler::start(
        &pg,
        "",
        "default_pool_size = 1\ntcp_user_timeout = 1500",
        "",
    );
    // The raw client reads exactly the frames the pooler sent: tokio-postgres sometimes reports a
    // FATAL ErrorResponse that is followed at once by the close as a bare `Closed` (seen in 6 of
    // 20 runs on a loaded machine, with the pooler's write of the ErrorResponse logged as done).
    let mut c = Raw::connect(p.port, "olly", "olly_pw", "testdb")
        .await
        .expect("login");
    let port = c.query("SELECT inet_client_port()").await;
    let before: i32 = port.rows[0][0]
        .as_deref()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("the server's view of the pooler's port: {port:?}"));
    let hole = Blackhole::connection(before as u16, pg.port);
    let answer = tokio::time::timeout(Duration::from_secs(40), c.query("SELECT 2"))
        .await
        .expect("tcp_user_timeout must end the wait");
    let err = answer
        .error
        .as_ref()
        .unwrap_or_else(|| panic!("an ErrorResponse, not a bare close: {answer:?}"));
    assert_eq!(
        (
            err.severity.as_str(),
            err.code.as_str(),
            err.message.as_str()
        ),
        ("FATAL", "08P01", "server conn crashed?"),
        "client saw: {answer:?}"
    );
    assert!(
        answer.closed,
        "the client is closed after the FATAL: {answer:?}"
    );
    // The pool of one replaced its server: a new client gets a new connection.
    let c2 = p.connect("olly", "olly_pw", "testdb").await;
    let after: i32 = c2
        .query_one("SELECT inet_client_port()", &[])
        .await
        .expect("served by a new server")
        .get(0);
    assert_ne!(after, before);
    drop(hole);
    still_serves(&p).await;
}

/// A client goes silent inside a transaction, holding a server. TCP keepalive on the client
/// socket (tcp_keepidle = 1, tcp_keepintvl = 1, tcp_keepcnt = 2) finds it dead; the pooler drops
/// the client and closes its server (it was inside a transaction, so it is never returned to the
/// pool): the backend goes away in PostgreSQL and the client leaves SHOW CLIENTS. Other clients
/// are served throughout (only the silent client's port is black-holed). tcp_user_timeout is set
/// too, as in production: when the hole swallows the client's (delayed) ACK of the last answer,
/// the pooler retransmits instead of probing, and only tcp_user_timeout bounds that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_silent_in_transaction_keepalive_frees_server() {
    let pg = Pg::start();
    let p = Pooler::start(
        &pg,
        "",
        "tcp_keepalive = 1\ntcp_keepidle = 1\ntcp_keepintvl = 1\ntcp_keepcnt = 2\n\
         tcp_user_timeout = 3000",
        "",
    );
    let sock = TcpStream::connect(("127.0.0.1", p.port))
        .await
        .expect("connect");
    let client_port = sock.local_addr().expect("local addr").port();
    let cfg: tokio_postgres::Config = p
        .conn_str("olly", "olly_pw", "testdb")
        .parse()
        .expect("conn string");
    let (c, conn) = cfg
        .connect_raw(sock, tokio_postgres::NoTls)
        .await
        .expect("login over our own socket");
    tokio::spawn(conn);
    c.batch_execute("BEGIN").await.expect("begin");
    let pid: i32 = c
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .expect("backend pid")
        .get(0);
    let hole = Blackhole::connection(client_port, p.port);
    let gone = format!("SELECT count(*) FROM pg_stat_activity WHERE pid = {pid}");
    eventually(
        "the silent client's server is closed",
        Duration::from_secs(40),
        || pg.psql(&gone).trim() == "0",
    )
    .await;
    let admin = p.connect("olly", "olly_pw", "pgbouncer").await;
    let rows = admin
        .simple_query("SHOW CLIENTS")
        .await
        .expect("SHOW CLIENTS");
    let port_text = client_port.to_string();
    let listed = rows.iter().any(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => r.get("port") == Some(port_text.as_str()),
        _ => false,
    });
    assert!(!listed, "the silent client is still listed");
    still_serves(&p).await;
    drop(hole);
}

/// server_connect_timeout against a port whose SYNs are dropped (a black-holed address, not a
/// refused one). As with PgBouncer, the client's login waits for the pool's first server while
/// each connect attempt times out after server_connect_timeout and is retried; the client gets
/// FATAL 08P01 `query_wait_timeout` when query_wait_timeout ends the wait. The pooler logs each
/// timed-out attempt; other databases are served meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_connect_timeout_on_black_holed_port() {
    let pg = Pg::start();
    let dead = common::free_port();
    let hole = Blackhole::port(dead);
    let p = Pooler::start(
        &pg,
        &format!("blackhole = host=127.0.0.1 port={dead} dbname=testdb"),
        "server_connect_timeout = 1\nquery_wait_timeout = 4",
        "",
    );
    let err = tokio::time::timeout(
        Duration::from_secs(40),
        p.try_connect("olly", "olly_pw", "blackhole"),
    )
    .await
    .expect("query_wait_timeout must end the login")
    .expect_err("no server: the login fails");
    let db = err.as_db_error().expect("an ErrorResponse");
    assert_eq!(
        (db.code().code(), db.message()),
        ("08P01", "query_wait_timeout"),
        "client saw: {err:?}"
    );
    assert!(
        p.log().contains("connect timed out"),
        "no timed-out connect attempt in the log:\n{}",
        p.log()
    );
    still_serves(&p).await;
    drop(hole);
}
