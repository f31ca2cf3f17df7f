//! Replication connections through the pooler: `pg_recvlogical` (replication=database) creates a
//! slot and streams changes, and a physical replication connection (replication=true) runs
//! IDENTIFY_SYSTEM; each has a server connection of its own, outside the pools.

use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use crate::common::{Pg, Pooler};
use crate::console::Raw;
use crate::{admin, eventually};

/// A PostgreSQL with logical decoding.
fn logical_pg() -> &'static Pg {
    static PG: OnceLock<Pg> = OnceLock::new();
    PG.get_or_init(|| Pg::start_with_conf("wal_level = logical"))
}

/// Kills the child (by its pid) when dropped, also on panic.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn recvlogical(p: &Pooler, args: &[&str]) -> Command {
    let mut cmd = Command::new("pg_recvlogical");
    cmd.env("PGPASSWORD", "olly_pw")
        .env("PGCONNECT_TIMEOUT", "10")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &p.port.to_string(),
            "-U",
            "olly",
            "-d",
            "testdb",
        ])
        .args(args);
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_recvlogical_streams_through_the_pooler() {
    let pg = logical_pg();
    let p = Pooler::start(pg, "", "", "");
    let out = recvlogical(
        &p,
        &[
            "--slot",
            "olly_slot",
            "--create-slot",
            "-P",
            "test_decoding",
        ],
    )
    .output()
    .expect("run pg_recvlogical");
    assert!(
        out.status.success(),
        "create slot: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        p.log()
    );
    let file = p.dir.join("changes.txt");
    let child = recvlogical(
        &p,
        &[
            "--slot",
            "olly_slot",
            "--start",
            "-f",
            file.to_str().unwrap(),
            "-F",
            "1",
            "--no-loop",
        ],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .expect("start pg_recvlogical");
    let mut child = Reaped(child);
    pg.psql("CREATE TABLE IF NOT EXISTS repl_t (x int); INSERT INTO repl_t VALUES (4242)");
    let seen = eventually(Duration::from_secs(20), || {
        std::fs::read_to_string(&file).is_ok_and(|t| t.contains("4242"))
    })
    .await;
    assert!(
        seen,
        "change streamed: {:?}",
        std::fs::read_to_string(&file)
    );
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        text.contains("table public.repl_t: INSERT: x[integer]:4242"),
        "{text}"
    );
    // The console lists it as a logical replication client; no pool holds its server.
    let mut c = admin(&p).await;
    let clients = c.query("SHOW CLIENTS").await;
    let repl: Vec<_> = clients.rows_where("replication", "logical");
    assert_eq!(repl.len(), 1, "{:?}", clients.rows);
    let pools = c.query("SHOW POOLS").await;
    assert!(pools
        .rows_where("database", "testdb")
        .iter()
        .all(|r| { r[pools.col("sv_active")].as_deref() == Some("0") }));
    // Normal clients are served beside it.
    let mut normal = Raw::connect(p.port, "olly", "olly_pw", "testdb")
        .await
        .unwrap();
    assert!(normal.query("SELECT 1").await.error.is_none());
    let _ = child.0.kill();
    let _ = child.0.wait();
    pg.psql("SELECT pg_drop_replication_slot('olly_slot')");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn physical_replication_connection_runs_replication_commands() {
    let pg = logical_pg();
    let pg_port = pg.port;
    let p = Pooler::start(
        pg,
        &format!("replication = host=127.0.0.1 port={pg_port} dbname=testdb"),
        "",
        "",
    );
    let conn = format!(
        "host=127.0.0.1 port={} user=olly password=olly_pw dbname=replication replication=true",
        p.port
    );
    let (code, out, err) = crate::common::psql(&conn, "IDENTIFY_SYSTEM");
    assert_eq!(code, 0, "{err}\n{}", p.log());
    let system_id = pg.psql("SELECT system_identifier FROM pg_control_system()");
    assert!(out.starts_with(system_id.trim()), "{out} vs {system_id}");
    // A normal (non-replication) query is refused by the walsender, not by the pooler.
    let (code, _, err) = crate::common::psql(&conn, "SELECT 1");
    assert_ne!(code, 0);
    assert!(!err.contains("unsupported startup parameter"), "{err}");
}

/// A logical replication connection takes SQL too (PostgreSQL 10+), with the client's
/// `options` and application_name passed to its server as they are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replication_connection_keeps_options_and_application_name() {
    let pg = logical_pg();
    let p = Pooler::start(pg, "", "", "");
    let conn = format!(
        "host=127.0.0.1 port={} user=olly password=olly_pw dbname=testdb replication=database \
         application_name=abc options='-c enable_seqscan=off'",
        p.port
    );
    let (code, out, err) = crate::common::psql(
        &conn,
        "SELECT current_setting('application_name') || ',' || current_setting('enable_seqscan')",
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "abc,off");
    // The same options on a pooled connection are refused, as PgBouncer refuses them.
    let conn = format!(
        "host=127.0.0.1 port={} user=olly password=olly_pw dbname=testdb \
         options='-c enable_seqscan=off'",
        p.port
    );
    let (code, _, err) = crate::common::psql(&conn, "SELECT 1");
    assert_ne!(code, 0);
    assert!(
        err.contains("unsupported startup parameter in options: enable_seqscan"),
        "{err}"
    );
}

/// pg_basebackup of the pooler's `replication` database into `dest`, WAL streamed alongside.
fn basebackup(p: &Pooler, dest: &std::path::Path) -> Command {
    let mut cmd = Command::new("pg_basebackup");
    cmd.env("PGCONNECT_TIMEOUT", "10").args([
        "-d",
        &format!(
            "host=127.0.0.1 port={} user=olly password=olly_pw dbname=replication",
            p.port
        ),
        "-D",
        dest.to_str().unwrap(),
        "--checkpoint=fast",
        "-X",
        "stream",
        "--no-sync",
    ]);
    cmd
}

/// PgBouncer's test_physical_rep_pg_basebackup: a base backup (with its WAL streamed over a
/// second replication connection) through the pooler.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_basebackup_through_the_pooler() {
    let pg = logical_pg();
    let pg_port = pg.port;
    let p = Pooler::start(
        pg,
        &format!("replication = host=127.0.0.1 port={pg_port} dbname=testdb"),
        "",
        "",
    );
    let dest = p.dir.join("backup");
    let out = basebackup(&p, &dest).output().expect("run pg_basebackup");
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        p.log()
    );
    assert!(dest.join("PG_VERSION").exists());
    assert!(dest.join("backup_label").exists() || dest.join("backup_manifest").exists());
}

/// PgBouncer's test_replication_pool_size / _mixed_clients: a replication connection takes a
/// place in its pool. With pool_size = 1 it evicts the idle pooled server, and two replication
/// clients run one after the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replication_connections_count_against_pool_size() {
    let pg = logical_pg();
    let p = Pooler::start(pg, "", "default_pool_size = 1", "");
    let mut normal = Raw::connect(p.port, "olly", "olly_pw", "testdb")
        .await
        .unwrap();
    assert!(normal.query("SELECT 1").await.error.is_none());
    let conn = format!(
        "host=127.0.0.1 port={} user=olly password=olly_pw dbname=testdb replication=database",
        p.port
    );
    let started = std::time::Instant::now();
    let runs: Vec<_> = (0..2)
        .map(|_| {
            let conn = conn.clone();
            std::thread::spawn(move || crate::common::psql(&conn, "SELECT pg_sleep(1)"))
        })
        .collect();
    for r in runs {
        let (code, _, err) = r.join().unwrap();
        assert_eq!(code, 0, "{err}");
    }
    assert!(
        started.elapsed() >= Duration::from_millis(1900),
        "one place: the second waited for the first ({:?})",
        started.elapsed()
    );
    assert!(
        p.log().contains("closing because: evicted for pool_size"),
        "{}",
        p.log()
    );
    // The pooled client gets a server again once the replication clients are gone.
    assert!(normal.query("SELECT 2").await.error.is_none());
}

/// PgBouncer's test_replication_pool_size_over_full_pool: a pool over pool_size (through the
/// reserve) loses as many idle servers as it takes to get under pool_size, each logged with
/// PgBouncer's `closing because: evicted for pool_size (age=Ns)`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replication_client_evicts_down_to_pool_size() {
    let pg = logical_pg();
    let p = Pooler::start(
        pg,
        "",
        "default_pool_size = 1\nreserve_pool_size = 1\nreserve_pool_timeout = 0.2",
        "",
    );
    let mut a = Raw::connect(p.port, "olly", "olly_pw", "testdb")
        .await
        .unwrap();
    let mut b = Raw::connect(p.port, "olly", "olly_pw", "testdb")
        .await
        .unwrap();
    assert!(a.query("BEGIN").await.error.is_none());
    // b waits reserve_pool_timeout, then gets the reserve server.
    assert!(b.query("SELECT 1").await.error.is_none());
    assert!(a.query("COMMIT").await.error.is_none());
    let conn = format!(
        "host=127.0.0.1 port={} user=olly password=olly_pw dbname=testdb replication=database",
        p.port
    );
    let (code, _, err) =
        tokio::task::spawn_blocking(move || crate::common::psql(&conn, "SELECT 1"))
            .await
            .unwrap();
    assert_eq!(code, 0, "{err}");
    let log = p.log();
    assert_eq!(
        log.matches("closing because: evicted for pool_size (age=")
            .count(),
        2,
        "{log}"
    );
}

/// PgBouncer's suite runs with `tcp_socket_buffer = 4096`. The buffers must be set before the
/// server connection's handshake: set after it, the TCP window stayed tiny and a base backup
/// crawled at a few KiB per delayed ACK (minutes for this one). A minute is a hang bound, far
/// above the seconds it takes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_basebackup_through_the_pooler_with_a_small_tcp_socket_buffer() {
    let pg = logical_pg();
    let pg_port = pg.port;
    let p = Pooler::start(
        pg,
        &format!("replication = host=127.0.0.1 port={pg_port} dbname=testdb"),
        "tcp_socket_buffer = 4096",
        "",
    );
    let dest = p.dir.join("small-buffer-backup");
    let child = basebackup(&p, &dest)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run pg_basebackup");
    let mut child = Reaped(child);
    let finished = eventually(Duration::from_secs(60), || {
        matches!(child.0.try_wait(), Ok(Some(_)))
    })
    .await;
    assert!(finished, "pg_basebackup still running after a minute");
    assert!(child.0.wait().expect("status").success(), "{}", p.log());
    assert!(dest.join("PG_VERSION").exists());
}

/// PgBouncer's test_logical_rep_unprivileged: a replication login the server refuses (md5user
/// has no REPLICATION) reaches the client as PgBouncer's own FATAL `login failed` (08P01), not
/// the server's error; the server's message is only logged, with a disconnect line for the server
/// and one for the client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_replication_login_is_reported_as_login_failed() {
    let pg = logical_pg();
    let p = Pooler::start(pg, "", "log_disconnections = 1", "");
    let err = match Raw::connect_with(
        p.port,
        "md5user",
        "md5_pw",
        "testdb",
        &[("replication", "database")],
    )
    .await
    {
        Ok(_) => panic!("an unprivileged replication login succeeded\n{}", p.log()),
        Err(e) => e,
    };
    assert_eq!(
        (
            err.severity.as_str(),
            err.code.as_str(),
            err.message.as_str()
        ),
        ("FATAL", "08P01", "login failed"),
        "{}",
        p.log()
    );
    let log = p.log();
    assert!(
        log.contains("permission denied to start WAL sender")
            || log.contains("must be superuser or replication role"),
        "the server's refusal is logged:\n{log}"
    );
    // PgBouncer's two disconnect lines, the server's and the client's (its suite counts them).
    assert_eq!(
        log.matches("closing because: login failed (age=").count(),
        2,
        "{log}"
    );
}

/// A replication client that leaves while its server is busy (and so sends nothing and does
/// not notice the close) ends its session at once: its max_user_client_connections place is
/// free for the next login, as in PgBouncer, where a client's close ends its server link.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replication_client_that_leaves_a_quiet_server_frees_its_place() {
    let pg = logical_pg();
    let p = Pooler::start(pg, "", "max_user_client_connections = 1", "");
    let conn = format!(
        "host=127.0.0.1 port={} user=olly password=olly_pw dbname=testdb replication=database",
        p.port
    );
    let marker = "relay_quiet_server_marker";
    let mut cmd = Command::new("psql");
    cmd.env_remove("PGSERVICE")
        .env_remove("PGOPTIONS")
        .args(["-X", "-A", "-t", "-q", &conn, "-c"])
        .arg(format!("SELECT '{marker}', pg_sleep(300)"))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut client = Reaped(cmd.spawn().expect("psql"));
    let sleeping = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%{marker}%' \
         AND state = 'active' AND pid <> pg_backend_pid()"
    );
    assert!(
        eventually(Duration::from_secs(20), || pg
            .psql_db("postgres", &sleeping)
            == "1")
        .await,
        "the replication client's query never ran\n{}",
        p.log()
    );
    // The client goes away (its socket closed by the kernel); the server sleeps on, quiet.
    let _ = client.0.kill();
    let _ = client.0.wait();
    let next = || crate::common::psql(&conn, "SELECT 1").0 == 0;
    let freed = eventually(Duration::from_secs(10), next).await;
    pg.psql_db(
        "postgres",
        &format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE query LIKE '%{marker}%' AND pid <> pg_backend_pid()"
        ),
    );
    assert!(freed, "the place was still held\n{}", p.log());
}
