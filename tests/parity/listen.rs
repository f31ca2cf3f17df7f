//! The listener's settings: so_reuseport (two processes on one port, one stopped under load),
//! tcp_defer_accept, tcp_socket_buffer and unix_socket_group; and syslog.

use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use crate::common::{free_port, Pooler};
use crate::console::Raw;
use crate::{admin, pg};

/// Logins a pooler logged (one `login attempt` line per client).
fn logins(p: &Pooler) -> usize {
    p.log().matches("login attempt").count()
}

/// Two processes share 127.0.0.1:port with so_reuseport, each with its own Unix socket dir. The
/// kernel spreads new connections over both; when one is told to stop (SIGTERM) while clients
/// keep connecting, the other goes on serving, a client in the middle of a transaction on the
/// stopped one finishes it, and once its clients have left (PgBouncer's rolling restart) the
/// stopped one exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn so_reuseport_two_processes_one_stopped_under_load() {
    let port = free_port();
    let extra = format!("listen_port = {port}\nso_reuseport = 1");
    let a = Pooler::start(pg(), "", &extra, "");
    let b = Pooler::start(pg(), "", &extra, "");
    assert_ne!(a.dir, b.dir, "each process has its own unix_socket_dir");

    // Load: four tasks that connect, run a query and leave, over and over.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for _ in 0..4 {
        let stop = stop.clone();
        load.push(tokio::spawn(async move {
            let (mut ok, mut failed) = (0u32, 0u32);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match Raw::connect(port, "olly", "olly_pw", "testdb").await {
                    Ok(mut c) => {
                        let r = c.query("SELECT 1").await;
                        if r.error.is_none() && !r.closed {
                            ok += 1;
                        } else {
                            failed += 1;
                        }
                        c.terminate().await;
                    }
                    Err(_) => failed += 1,
                }
            }
            (ok, failed)
        }));
    }
    // Both processes take a share of the connections.
    assert!(
        crate::eventually(Duration::from_secs(20), || logins(&a) > 5 && logins(&b) > 5).await,
        "connections spread over both processes: a={} b={}",
        logins(&a),
        logins(&b)
    );
    // Clients inside a transaction when `a` is told to stop; at least one of them on `a`.
    let mut inside = Vec::new();
    while inside.len() < 20 {
        let on_a = logins(&a);
        let mut c = Raw::connect(port, "olly", "olly_pw", "testdb")
            .await
            .unwrap();
        assert!(c.query("BEGIN").await.error.is_none());
        let is_a = logins(&a) > on_a;
        inside.push(c);
        if is_a && inside.len() >= 2 {
            break;
        }
    }
    let before_b = logins(&b);
    a.signal(libc::SIGTERM);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Every transaction, on whichever process it was, completes.
    for mut c in inside {
        assert!(c.query("SELECT 1").await.error.is_none());
        let end = c.query("COMMIT").await;
        assert!(end.error.is_none(), "{end:?}");
        c.terminate().await;
    }
    let mut a = a;
    assert!(
        a.wait_exit(Duration::from_secs(20)).is_some(),
        "the stopped process exits after its drain"
    );
    // The survivor keeps serving the load, and every new connection now succeeds.
    assert!(
        crate::eventually(Duration::from_secs(10), || logins(&b) > before_b + 20).await,
        "b keeps serving"
    );
    for _ in 0..20 {
        let mut c = Raw::connect(port, "olly", "olly_pw", "testdb")
            .await
            .expect("b serves every new client");
        assert!(c.query("SELECT 1").await.error.is_none());
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total_ok = 0;
    for t in load {
        let (ok, _failed) = t.await.unwrap();
        total_ok += ok;
    }
    assert!(total_ok > 20);
}

/// Without so_reuseport a second process cannot take the port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_so_reuseport_the_port_is_exclusive() {
    let a = Pooler::start(pg(), "", "", "");
    let port = a.port;
    let result =
        std::panic::catch_unwind(|| Pooler::start(pg(), "", &format!("listen_port = {port}"), ""));
    assert!(result.is_err(), "second bind must fail");
}

/// tcp_defer_accept is on by default (PgBouncer's Linux default): a connection that has sent
/// nothing stays in the kernel (SYN_RECV on our side) instead of being accepted. SET turns it
/// off for the listener. tcp_socket_buffer and unix_socket_group reach their sockets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_options_reach_the_sockets() {
    let p = Pooler::start(
        pg(),
        "",
        "tcp_socket_buffer = 24576\nunix_socket_group = nogroup",
        "",
    );
    let socket = p.dir.join(format!(".s.PGSQL.{}", p.port));
    let gid = std::fs::metadata(&socket).unwrap().gid();
    assert_eq!(Some(gid), ollyscale_pooler::sys::group_id("nogroup"));

    let silent = tokio::net::TcpStream::connect(("127.0.0.1", p.port))
        .await
        .unwrap();
    let state =
        |s: &tokio::net::TcpStream| server_side_state(p.port, s.local_addr().unwrap().port());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(state(&silent).as_deref(), Some("03"), "deferred: SYN_RECV");

    let mut c = admin(&p).await;
    assert!(c.query("SET tcp_defer_accept = 0").await.error.is_none());
    // Applied at the next accept.
    let mut client = Raw::connect(p.port, "olly", "olly_pw", "testdb")
        .await
        .unwrap();
    assert!(client.query("SELECT 1").await.error.is_none());
    let silent2 = tokio::net::TcpStream::connect(("127.0.0.1", p.port))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        state(&silent2).as_deref(),
        Some("01"),
        "accepted at once: ESTABLISHED"
    );

    // SO_RCVBUF/SO_SNDBUF of the accepted socket: `ss` shows the kernel's doubled values.
    let out = std::process::Command::new("ss")
        .args([
            "-tmnH",
            "state",
            "established",
            "sport",
            "=",
            &format!(":{}", p.port),
        ])
        .output()
        .expect("ss");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("rb49152"), "{text}");
    assert!(text.contains("tb49152"), "{text}");
}

/// `ss` output for the sockets matching `filter` (ss filter words, e.g. `sport = :N`).
fn ss(flags: &str, filter: &[&str]) -> String {
    let out = std::process::Command::new("ss")
        .arg(flags)
        .args(filter)
        .output()
        .expect("ss");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The receive window scale (`wscale:<snd>,<rcv>`) of the one established socket from
/// `local` to `remote`.
fn rcv_wscale(local: u16, remote: u16) -> u8 {
    let (l, r) = (format!(":{local}"), format!(":{remote}"));
    let text = ss(
        "-tinH",
        &[
            "state",
            "established",
            "sport",
            "=",
            &l,
            "and",
            "dport",
            "=",
            &r,
        ],
    );
    let scales = text
        .split_whitespace()
        .find_map(|w| w.strip_prefix("wscale:"))
        .unwrap_or_else(|| panic!("no wscale in {text:?}"));
    scales.split(',').nth(1).unwrap().parse().unwrap()
}

/// (pooler side, client side) receive window scales of a fresh client's connection.
async fn window_scales(p: &Pooler) -> (u8, u8, Raw) {
    let mut c = Raw::connect(p.port, "olly", "olly_pw", "testdb")
        .await
        .unwrap();
    assert!(c.query("SELECT 1").await.error.is_none());
    let client_port = c.local_port();
    (
        rcv_wscale(p.port, client_port),
        rcv_wscale(client_port, p.port),
        c,
    )
}

/// tcp_socket_buffer is on the listening socket before the handshake, so an accepted socket
/// announces a window scale that fits its small buffer (a buffer shrunk after the handshake
/// keeps the default scale: the window can then never open past a few segments). A SET reaches
/// the listener at once, for the next handshake.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_socket_buffer_is_set_before_the_handshake() {
    let small = Pooler::start(pg(), "", "tcp_socket_buffer = 4096", "");
    let (pooler, client, _c) = window_scales(&small).await;
    assert!(
        pooler < client,
        "pooler side wscale {pooler}, client side (OS default) {client}"
    );

    let p = Pooler::start(pg(), "", "", "");
    let (pooler, client, _c1) = window_scales(&p).await;
    assert_eq!(pooler, client, "both sides at the OS default");
    let mut admin_conn = admin(&p).await;
    assert!(admin_conn
        .query("SET tcp_socket_buffer = 4096")
        .await
        .error
        .is_none());
    // The listener's own buffers (the kernel doubles the value asked for).
    let port = format!(":{}", p.port);
    let listener_set = crate::eventually(Duration::from_secs(10), || {
        ss("-tlmnH", &["sport", "=", &port]).contains("rb8192")
    })
    .await;
    assert!(listener_set, "{}", ss("-tlmnH", &["sport", "=", &port]));
    let (pooler, client, _c2) = window_scales(&p).await;
    assert!(
        pooler < client,
        "after SET: pooler side wscale {pooler}, client side {client}"
    );
}

/// The `st` column of /proc/net/tcp for the server side of a client's connection.
fn server_side_state(server_port: u16, client_port: u16) -> Option<String> {
    server_side_field(server_port, client_port).map(|f| f[3].clone())
}

fn server_side_field(server_port: u16, client_port: u16) -> Option<Vec<String>> {
    let tcp = std::fs::read_to_string("/proc/net/tcp").ok()?;
    tcp.lines().skip(1).find_map(|l| {
        let f: Vec<String> = l.split_whitespace().map(String::from).collect();
        let port = |i: usize| {
            f.get(i)
                .and_then(|a| a.rsplit(':').next())
                .and_then(|p| u16::from_str_radix(p, 16).ok())
        };
        (port(1) == Some(server_port) && port(2) == Some(client_port)).then_some(f)
    })
}

/// Connections the kernel completed for a process but that it had not accepted yet when SIGTERM
/// arrived are served, not reset: closing a listener resets what is left in its accept queue,
/// which in a so_reuseport rolling restart is a client's `connection reset` (the other process
/// would have served it). The process sleeps (SIGSTOP) while the connections complete, so that
/// more of them wait in the queue than one pass of the accept loop takes before it sees the drain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_serves_connections_queued_before_it() {
    const QUEUED: usize = 300;
    let port = free_port();
    let extra = format!(
        "listen_port = {port}\nso_reuseport = 1\ntcp_defer_accept = 0\n\
         listen_backlog = 1024\nmax_client_conn = 1000"
    );
    let mut a = Pooler::start(pg(), "", &extra, "");
    a.signal(libc::SIGSTOP);
    let mut queued = Vec::new();
    for _ in 0..QUEUED {
        // Completed by the kernel alone: the process is stopped.
        queued.push(
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .unwrap(),
        );
    }
    a.signal(libc::SIGTERM);
    a.signal(libc::SIGCONT);
    let config: tokio_postgres::Config = a.conn_str("olly", "olly_pw", "testdb").parse().unwrap();
    let clients = queued.into_iter().map(|tcp| {
        let config = config.clone();
        async move {
            let (client, conn) = config
                .connect_raw(tcp, tokio_postgres::NoTls)
                .await
                .map_err(|e| format!("login: {e}"))?;
            tokio::spawn(conn);
            let rows = client
                .simple_query("SELECT 1")
                .await
                .map_err(|e| format!("query: {e}"))?;
            Ok::<usize, String>(rows.len())
        }
    });
    let results = futures_util::future::join_all(clients).await;
    let failed: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(
        failed.is_empty(),
        "{} of {QUEUED} queued clients failed, e.g. {:?}",
        failed.len(),
        failed.first()
    );
    assert!(
        a.wait_exit(Duration::from_secs(30)).is_some(),
        "the process exits once the clients it took in have left"
    );
}
