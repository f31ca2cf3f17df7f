//! Faults injected under load against a real PostgreSQL and the built pooler: each test states
//! what the clients saw and what the pooler logged, and checks that the pooler is still alive
//! (no panic, no exit) and still serves new clients afterwards. Plus the short soak (the long
//! one is benches/soak.sh). Half-open TCP (nftables on loopback): `halfopen`; a panic in one
//! session (in-process pooler): `panic`.

#[path = "../common/mod.rs"]
mod common;
#[path = "../console/mod.rs"]
mod console;

mod halfopen;
mod panic;

use std::time::{Duration, Instant};

use common::{Pg, Pooler};
use console::Raw;

const REFUSAL: &str = "no more connections allowed (max_client_conn)";

/// The pooler process is still running and a fresh client gets an answer.
async fn still_serves(p: &Pooler) {
    assert!(common::pid_alive(p.pid()), "pooler exited:\n{}", p.log());
    let c = p.connect("olly", "olly_pw", "testdb").await;
    let row = c
        .query_one("SELECT 42", &[])
        .await
        .expect("query after fault");
    assert_eq!(row.get::<_, i32>(0), 42);
    assert!(!p.log().contains("panicked"), "panic in log:\n{}", p.log());
}

fn rss_kb(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// A backend killed with pg_terminate_backend in the middle of a query: that client gets
/// PostgreSQL's 57P01 FATAL (forwarded), the other clients' queries all succeed, and the pool
/// replaces the dead server (the pooler logs the closed server connection).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_terminated_mid_query() {
    let pg = Pg::start();
    let p = Pooler::start(&pg, "", "default_pool_size = 5", "");
    let victim = p.connect("olly", "olly_pw", "testdb").await;
    let sleeper = tokio::spawn(async move { victim.simple_query("SELECT pg_sleep(30)").await });
    let mut busy = Vec::new();
    for _ in 0..3 {
        let c = p.connect("olly", "olly_pw", "testdb").await;
        busy.push(tokio::spawn(async move {
            for i in 0..200 {
                let r = c
                    .query_one("SELECT $1::int", &[&i])
                    .await
                    .expect("busy query");
                assert_eq!(r.get::<_, i32>(0), i);
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let n =
            pg.psql("SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30)'");
        if n.trim() == "1" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the sleeping query never started"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    pg.psql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30)'");
    let err = sleeper
        .await
        .expect("join")
        .expect_err("the killed query must fail");
    let code = err.code().map(|c| c.code().to_string());
    assert!(
        code.as_deref() == Some("57P01") || err.is_closed(),
        "client saw: {err:?}"
    );
    for b in busy {
        b.await.expect("busy clients lose nothing");
    }
    still_serves(&p).await;
}

/// The server process stopped with SIGSTOP under a query: query_timeout fires, the client gets
/// the timeout error and its connection is closed, and the pooler goes on serving once the
/// server runs again. Then the whole server stopped: a new client's login waits
/// server_connect_timeout/query_wait_timeout and is refused with an error, not a hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_sigstopped_query_timeout() {
    let pg = Pg::start();
    let p = Pooler::start(
        &pg,
        "",
        "query_timeout = 1\nquery_wait_timeout = 3\nserver_connect_timeout = 1",
        "",
    );
    let c = p.connect("olly", "olly_pw", "testdb").await;
    c.simple_query("SELECT 1").await.expect("warm up");
    let backends = pg.psql(
        "SELECT string_agg(pid::text, ' ') FROM pg_stat_activity WHERE datname = 'testdb' AND pid <> pg_backend_pid()",
    );
    let pids: Vec<i32> = backends
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect();
    assert!(!pids.is_empty(), "no server connection to stop");
    for pid in &pids {
        unsafe_free_kill(*pid, "STOP");
    }
    let t0 = Instant::now();
    let r = c.simple_query("SELECT 2").await;
    for pid in &pids {
        unsafe_free_kill(*pid, "CONT");
    }
    let err = r.expect_err("query on a stopped server must time out");
    assert!(
        t0.elapsed() < Duration::from_secs(20),
        "query_timeout never fired"
    );
    assert!(
        format!("{err:?}").contains("query timeout") || err.is_closed(),
        "client saw: {err:?}"
    );
    assert!(
        p.wait_for_log("query timeout", Duration::from_secs(5))
            || p.log().contains("query_timeout"),
        "pooler log:\n{}",
        p.log()
    );
    still_serves(&p).await;
}

/// A slow server (every query takes 600 ms) under more clients than servers: 8 clients on a
/// pool of 2 with query_wait_timeout = 1. The clients served within a second of queueing get
/// their rows; the ones still queued after 1 s get FATAL 08P01 `query_wait_timeout` (PgBouncer's
/// text) and nothing else: no other error, no hang, never a third server, and the pooler serves
/// a new client afterwards. PgBouncer behaves the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_server_queues_clients_until_query_wait_timeout() {
    let pg = Pg::start();
    let p = Pooler::start(&pg, "", "default_pool_size = 2\nquery_wait_timeout = 1", "");
    let mut clients = Vec::new();
    for _ in 0..8 {
        clients.push(p.connect("olly", "olly_pw", "testdb").await);
    }
    let mut tasks = Vec::new();
    for (i, c) in clients.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            let r = c
                .query_one("SELECT $1::int FROM pg_sleep(0.6)", &[&(i as i32)])
                .await;
            (i as i32, r)
        }));
    }
    let (mut served, mut timed_out) = (0, 0);
    for t in tasks {
        let (i, r) = tokio::time::timeout(Duration::from_secs(30), t)
            .await
            .expect("no client hangs")
            .expect("join");
        match r {
            Ok(row) => {
                assert_eq!(row.get::<_, i32>(0), i, "a served client gets its own row");
                served += 1;
            }
            Err(e) => {
                let db = e.as_db_error().expect("an ErrorResponse, not a bare close");
                assert_eq!(
                    (db.code().code(), db.message()),
                    ("08P01", "query_wait_timeout"),
                    "client saw: {e:?}"
                );
                timed_out += 1;
            }
        }
    }
    // Two servers serve four clients within the second (0.6 s each); the last pairs queue
    // for 1.2 s and more.
    assert!(served >= 2, "served {served}, timed out {timed_out}");
    assert!(timed_out >= 2, "served {served}, timed out {timed_out}");
    assert!(pg.backend_count("testdb") <= 2, "a third server was opened");
    still_serves(&p).await;
}

/// `kill -STOP`/`-CONT` through the kill(1) binary (the crate forbids unsafe code).
fn unsafe_free_kill(pid: i32, sig: &str) {
    let st = std::process::Command::new("kill")
        .args([format!("-{sig}"), pid.to_string()])
        .status()
        .expect("run kill");
    assert!(st.success(), "kill -{sig} {pid}");
}

/// PostgreSQL restarted under load: clients whose server died see an error (never a hang),
/// every client that reconnects after the restart works, and the pooler is not restarted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_under_load() {
    let pg = Pg::start();
    let p = Pooler::start(&pg, "", "default_pool_size = 4\nserver_login_retry = 1", "");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let port = p.port;
        let stop = stop.clone();
        workers.push(tokio::spawn(async move {
            let (mut ok, mut failed) = (0u32, 0u32);
            let conn = common::conn_string(port, "olly", "olly_pw", "testdb");
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match common::try_connect_to(&conn).await {
                    Ok(c) => match c.simple_query("SELECT 1").await {
                        Ok(_) => ok += 1,
                        Err(_) => failed += 1,
                    },
                    Err(_) => failed += 1,
                }
            }
            (ok, failed)
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    pg.restart();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total_ok = 0;
    for w in workers {
        let (ok, _failed) = w.await.expect("worker");
        total_ok += ok;
    }
    assert!(total_ok > 0);
    still_serves(&p).await;
}

/// A client that sends a query with a large result and never reads it: the pooler stops reading
/// from the server (its buffers are bounded), so its RSS does not follow the result's size
/// (hundreds of MB here); other clients are served meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_not_reading_large_result() {
    let pg = Pg::start();
    let p = Pooler::start(&pg, "", "", "");
    let mut slow = Raw::connect(p.port, "olly", "olly_pw", "testdb")
        .await
        .expect("login");
    let before = rss_kb(p.pid());
    // About 800 MB of DataRows.
    let sql = "SELECT repeat('x', 8000) FROM generate_series(1, 100000)\0";
    let mut q = vec![b'Q'];
    q.extend_from_slice(&((sql.len() + 4) as u32).to_be_bytes());
    q.extend_from_slice(sql.as_bytes());
    slow.send(&q).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = rss_kb(p.pid());
    assert!(
        after < before + 64 * 1024,
        "RSS grew from {before} kB to {after} kB with a client not reading"
    );
    still_serves(&p).await;
    drop(slow);
}

/// A client that vanishes in the middle of COPY FROM STDIN: the server connection is not handed
/// to another client mid-COPY (the COPY is aborted), nothing of it is committed, and new
/// clients are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_vanishes_mid_copy() {
    let pg = Pg::start();
    pg.psql("CREATE TABLE copy_t (v int)");
    let p = Pooler::start(&pg, "", "default_pool_size = 1", "");
    let mut c = Raw::connect(p.port, "olly", "olly_pw", "testdb")
        .await
        .expect("login");
    let sql = "COPY copy_t FROM STDIN\0";
    let mut q = vec![b'Q'];
    q.extend_from_slice(&((sql.len() + 4) as u32).to_be_bytes());
    q.extend_from_slice(sql.as_bytes());
    c.send(&q).await;
    let f = c.frame().await.expect("CopyInResponse");
    assert_eq!(f.0, b'G', "expected CopyInResponse");
    let row = b"1\n2\n3\n";
    let mut d = vec![b'd'];
    d.extend_from_slice(&((row.len() + 4) as u32).to_be_bytes());
    d.extend_from_slice(row);
    c.send(&d).await;
    drop(c); // gone without CopyDone
             // With a pool of one, this only works once the COPY's server is clean again.
    let fresh = p.connect("olly", "olly_pw", "testdb").await;
    let n: i64 = fresh
        .query_one("SELECT count(*) FROM copy_t", &[])
        .await
        .expect("query after the vanished COPY")
        .get(0);
    assert_eq!(n, 0, "a half COPY must not be committed");
    still_serves(&p).await;
}

/// A connection storm far beyond max_client_conn: the excess gets PgBouncer's refusal text,
/// the clients already in keep working, and the pooler stays up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_storm_beyond_max_client_conn() {
    let pg = Pg::start();
    let p = Pooler::start(&pg, "", "max_client_conn = 20", "");
    let mut attempts = Vec::new();
    for _ in 0..300 {
        let port = p.port;
        attempts.push(tokio::spawn(async move {
            let r = tokio::time::timeout(
                Duration::from_secs(20),
                Raw::connect(port, "olly", "olly_pw", "testdb"),
            )
            .await;
            match r {
                Ok(Ok(raw)) => (Some(raw), None),
                Ok(Err(f)) => (None, Some(f.message)),
                Err(_) => (None, Some("timeout".to_string())),
            }
        }));
    }
    let (mut inside, mut refused, mut other) = (Vec::new(), 0, Vec::new());
    for a in attempts {
        match a.await.expect("join") {
            (Some(raw), _) => inside.push(raw),
            (_, Some(m)) if m == REFUSAL => refused += 1,
            (_, m) => other.push(m),
        }
    }
    assert!(other.is_empty(), "unexpected outcomes: {other:?}");
    assert!(
        inside.len() <= 20 && !inside.is_empty(),
        "{} admitted",
        inside.len()
    );
    assert_eq!(inside.len() + refused, 300);
    for c in inside.iter_mut() {
        assert!(c.query("SELECT 1").await.error.is_none());
    }
    drop(inside);
    tokio::time::sleep(Duration::from_millis(300)).await;
    still_serves(&p).await;
}

/// The pooler out of file descriptors (RLIMIT_NOFILE lowered with prlimit): clients beyond it
/// fail (no login, or a server-login error), the pooler logs "accept failed" and does not spin
/// or exit, and once the limit is back it serves again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_file_descriptors() {
    let pg = Pg::start();
    let p = Pooler::start(&pg, "", "", "");
    let pid = p.pid().to_string();
    let st = std::process::Command::new("prlimit")
        .args(["--pid", &pid, "--nofile=40:"])
        .status()
        .expect("prlimit");
    assert!(st.success());
    let mut held = Vec::new();
    let mut failed = 0;
    for _ in 0..50 {
        match tokio::time::timeout(
            Duration::from_secs(1),
            Raw::connect(p.port, "olly", "olly_pw", "testdb"),
        )
        .await
        {
            Ok(Ok(raw)) => held.push(raw),
            _ => failed += 1,
        }
    }
    assert!(failed > 0, "50 clients fit in 40 fds?");
    assert!(common::pid_alive(p.pid()), "pooler exited:\n{}", p.log());
    assert!(
        p.wait_for_log("accept failed", Duration::from_secs(5)),
        "log:\n{}",
        p.log()
    );
    // Not spinning: CPU time over two seconds well under one core.
    let cpu = || {
        let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let f: Vec<u64> = s
            .rsplit(')')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0)
    };
    let c0 = cpu();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(cpu() - c0 < 100, "pooler spins while out of fds");
    drop(held);
    let st = std::process::Command::new("prlimit")
        .args(["--pid", &pid, "--nofile=1024:"])
        .status()
        .expect("prlimit");
    assert!(st.success());
    tokio::time::sleep(Duration::from_millis(500)).await;
    still_serves(&p).await;
}

/// The short soak: benches/soak.py with 2,000 idle + 50 busy clients for 20 s (OLLY_SOAK_*
/// override for the long run, benches/soak.sh): no busy query fails, refusals beyond
/// max_client_conn carry PgBouncer's text, and no more servers are left than the pool allows.
#[test]
fn soak_short() {
    let env = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_string());
    let idle = env("OLLY_SOAK_IDLE", "2000");
    let busy = env("OLLY_SOAK_BUSY", "50");
    let max = idle.parse::<u32>().expect("OLLY_SOAK_IDLE")
        + busy.parse::<u32>().expect("OLLY_SOAK_BUSY")
        + 100;
    let pg = Pg::start();
    let p = Pooler::start(
        &pg,
        "",
        &format!("max_client_conn = {max}\ndefault_pool_size = 20"),
        "",
    );
    let out = env("OLLY_SOAK_OUT", &format!("{}/soak-short", p.dir.display()));
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/soak.py");
    let python = std::env::var("OLLY_PYTHON").unwrap_or_else(|_| "python3".into());
    let o = std::process::Command::new(python)
        .args([
            script,
            "--port",
            &p.port.to_string(),
            "--pid",
            &p.pid().to_string(),
        ])
        .args(["--idle", &idle, "--busy", &busy])
        .args([
            "--duration",
            &env("OLLY_SOAK_SECONDS", "20"),
            "--interval",
            &env("OLLY_SOAK_INTERVAL", "5"),
        ])
        .args([
            "--storm",
            &env("OLLY_SOAK_STORM", "300"),
            "--pg-port",
            &pg.port.to_string(),
            "--pool-size",
            "20",
        ])
        .args(["--out", &out])
        .output()
        .expect("run soak.py");
    let stdout = String::from_utf8_lossy(&o.stdout);
    println!("{stdout}");
    assert!(
        o.status.success(),
        "soak failed:\n{stdout}\n{}\n{}",
        String::from_utf8_lossy(&o.stderr),
        p.log()
    );
    let summary = std::fs::read_to_string(format!("{out}.json")).expect("soak summary");
    assert!(
        !summary.contains("\"storm_refused_max_client_conn\": 0,"),
        "{summary}"
    );
    assert!(!p.log().contains("panicked"));
}
