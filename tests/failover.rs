//! Failover under load through the built pooler, against a real Patroni cluster (etcd + two
//! Patroni nodes, tests/common/patroni.rs): 8 clients commit numbered rows in a loop
//! (BEGIN; INSERT ... inet_server_port(); COMMIT) through a `cluster=` database while the lab
//! switches over (`POST /switchover`) and while the leader is killed with `kill -9` (Patroni,
//! postmaster and backends). Asserted per scenario: no error for a client between transactions
//! (an error on BEGIN or on connecting), no acknowledged commit missing on the new leader, writes
//! resume; the longest stall is printed. Also: reads on the `role=replica` database land on the
//! replica and fall back to the primary when the replica is down.
//!
//! `FAILOVER_ROUNDS=N` repeats switchover + kill -9 N times (benches/failover.sh prints the
//! figures); the default, 1 round, is what CI runs.

mod common;
mod console;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{PatroniLab, Pooler};
use console::Raw;

const WRITERS: i32 = 8;
const USER: &str = "ollyscale";
const PASSWORD: &str = "ollyscale";

/// What one writer saw.
#[derive(Default)]
struct WriterLog {
    /// (seq, acknowledged at, server port of the row) of every commit that returned OK.
    acked: Vec<(i32, Instant, i32)>,
    /// Errors on connecting or on BEGIN: the client was between transactions.
    between: Vec<(Instant, String)>,
    /// Errors on the INSERT or the COMMIT: inside a transaction.
    inside: Vec<(Instant, String)>,
}

/// One scenario's figures.
struct Figures {
    scenario: &'static str,
    between: Vec<(Instant, String)>,
    inside: usize,
    acked: usize,
    lost: usize,
    longest_stall: Duration,
    /// From the action to Patroni reporting the new leader (as the harness saw it).
    patroni_took: Duration,
}

async fn writer(port: u16, round: i32, id: i32, stop: Arc<AtomicBool>) -> WriterLog {
    let mut log = WriterLog::default();
    let conn = format!(
        "host=127.0.0.1 port={port} user={USER} password={PASSWORD} dbname=ollyscale \
         connect_timeout=60"
    );
    let mut client: Option<tokio_postgres::Client> = None;
    let mut seq = 0;
    while !stop.load(Ordering::Relaxed) {
        let c = match &client {
            Some(c) => c,
            None => {
                match common::try_connect_to(&conn).await {
                    Ok(c) => client = Some(c),
                    Err(e) => {
                        log.between.push((Instant::now(), format!("connect: {e}")));
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
                continue;
            }
        };
        seq += 1;
        if let Err(e) = c.batch_execute("BEGIN").await {
            log.between
                .push((Instant::now(), format!("BEGIN: {}", describe(&e))));
            client = None;
            continue;
        }
        let insert = c
            .query_one(
                "INSERT INTO ha_rows (round, writer, seq, port) \
                 VALUES ($1, $2, $3, inet_server_port()) RETURNING port",
                &[&round, &id, &seq],
            )
            .await;
        let port: i32 = match insert {
            Ok(row) => row.get(0),
            Err(e) => {
                log.inside
                    .push((Instant::now(), format!("INSERT: {}", describe(&e))));
                client = None;
                continue;
            }
        };
        match c.batch_execute("COMMIT").await {
            Ok(()) => log.acked.push((seq, Instant::now(), port)),
            Err(e) => {
                log.inside
                    .push((Instant::now(), format!("COMMIT: {}", describe(&e))));
                client = None;
            }
        }
    }
    log
}

/// The server's (or pooler's) message and SQLSTATE, or the client-side error.
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => format!("{} ({})", d.message(), d.code().code()),
        None => e.to_string(),
    }
}

/// Runs the writers around `action` (blocking, on a thread); returns what they saw and the
/// action's result. Writers run 1.5 s before the action and until `settle` after writes resume.
async fn under_load<T: Send + 'static>(
    port: u16,
    round: i32,
    action: impl FnOnce() -> T + Send + 'static,
) -> (Vec<WriterLog>, T, Instant) {
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..WRITERS)
        .map(|id| tokio::spawn(writer(port, round, id, stop.clone())))
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let started = Instant::now();
    let out = tokio::task::spawn_blocking(action).await.expect("action");
    // Writes must resume: wait for fresh commits from several writers, then a little more.
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    let mut logs = Vec::new();
    for w in writers {
        logs.push(
            tokio::time::timeout(Duration::from_secs(90), w)
                .await
                .expect("writer stopped")
                .expect("writer task"),
        );
    }
    (logs, out, started)
}

/// Rows of `round` on the PostgreSQL at `pg_port`: (writer, seq).
async fn rows_on(pg_port: u16, round: i32) -> HashSet<(i32, i32)> {
    let client = common::connect_to(&format!(
        "host=127.0.0.1 port={pg_port} user={USER} password={PASSWORD} dbname=ollyscale"
    ))
    .await;
    client
        .query(
            "SELECT writer, seq FROM ha_rows WHERE round = $1",
            &[&round],
        )
        .await
        .expect("read back rows")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

async fn figures(
    scenario: &'static str,
    logs: &[WriterLog],
    started: Instant,
    patroni_took: Duration,
    leader_port: u16,
    round: i32,
) -> Figures {
    let present = rows_on(leader_port, round).await;
    let mut acked = Vec::new();
    let mut times = Vec::new();
    for (id, log) in logs.iter().enumerate() {
        for (seq, at, _) in &log.acked {
            acked.push((id as i32, *seq));
            times.push(*at);
        }
    }
    times.sort();
    // The longest gap between two commits (of any writer) that spans the action or follows it.
    let longest_stall = times
        .windows(2)
        .filter(|w| w[1] >= started)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default();
    let lost = acked.iter().filter(|k| !present.contains(k)).count();
    let between = logs.iter().flat_map(|l| l.between.clone()).collect();
    Figures {
        scenario,
        between,
        inside: logs.iter().map(|l| l.inside.len()).sum(),
        acked: acked.len(),
        lost,
        longest_stall,
        patroni_took,
    }
}

fn report(f: &Figures) {
    println!(
        "FAILOVER {:<10} errors between transactions: {}  inside: {}  longest stall: {:.2} s  \
         lost acknowledged commits: {} of {}  (Patroni reported the new leader after {:.2} s)",
        f.scenario,
        f.between.len(),
        f.inside,
        f.longest_stall.as_secs_f64(),
        f.lost,
        f.acked,
        f.patroni_took.as_secs_f64()
    );
}

fn check(f: &Figures, pooler: &Pooler, lab: &PatroniLab) {
    let context = || {
        format!(
            "between: {:?}\n--- pooler log (last 60 lines) ---\n{}\n{}",
            f.between,
            tail(&pooler.log(), 60),
            lab.logs()
        )
    };
    assert!(
        f.between.is_empty(),
        "{}: errors between transactions; {}",
        f.scenario,
        context()
    );
    assert_eq!(
        f.lost,
        0,
        "{}: acknowledged commits lost; {}",
        f.scenario,
        context()
    );
    assert!(
        f.acked > 0,
        "{}: nothing committed; {}",
        f.scenario,
        context()
    );
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// `SELECT pg_is_in_recovery(), inet_server_port()` through the replica database, retried
/// until `want` (the router follows Patroni within a poll or two).
async fn replica_read(pooler: &Pooler, want: bool, timeout: Duration) -> (bool, i32) {
    let deadline = Instant::now() + timeout;
    let mut last = None;
    loop {
        if let Ok(c) = pooler.try_connect(USER, PASSWORD, "ollyscale_ro").await {
            if let Ok(row) = c
                .query_one("SELECT pg_is_in_recovery(), inet_server_port()", &[])
                .await
            {
                let got: (bool, i32) = (row.get(0), row.get(1));
                if got.0 == want {
                    return got;
                }
                last = Some(got);
            }
        }
        if Instant::now() >= deadline {
            panic!(
                "replica database: pg_is_in_recovery() = {want} not seen within {timeout:?} \
                 (last {last:?})\n{}",
                tail(&pooler.log(), 40)
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_survive_switchover_and_kill_9_and_reads_follow_replicas() {
    let rounds: i32 = std::env::var("FAILOVER_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let lab = Arc::new(PatroniLab::start());
    let (n1, n2) = (&lab.nodes[0], &lab.nodes[1]);
    let pooler = Pooler::start_for_port(
        n1.pg_port,
        "ollyscale = cluster=lab role=primary dbname=ollyscale\n\
         ollyscale_ro = cluster=lab role=replica dbname=ollyscale",
        &format!(
            "default_pool_size = 20\n\
             [clusters]\nlab = patroni={},{}",
            n1.api_url(),
            n2.api_url()
        ),
        &format!("\"{USER}\" \"{PASSWORD}\""),
    );
    let c = pooler.connect(USER, PASSWORD, "ollyscale").await;
    c.batch_execute(
        "CREATE TABLE ha_rows (round int, writer int, seq int, port int, \
         PRIMARY KEY (round, writer, seq))",
    )
    .await
    .expect("create table through the pooler");
    drop(c);

    // Reads land on the replica.
    let leader = lab.leader().expect("leader");
    let standby = lab
        .nodes
        .iter()
        .find(|n| n.name != leader)
        .expect("standby");
    let (_, port) = replica_read(&pooler, true, Duration::from_secs(10)).await;
    assert_eq!(
        port,
        i32::from(standby.pg_port),
        "read served by the replica"
    );

    let mut all = Vec::new();
    for r in 0..rounds {
        // 1. Switchover.
        let round = 2 * r;
        let l = lab.clone();
        let (logs, (new_leader, took), started) = under_load(pooler.port, round, move || {
            let t = Instant::now();
            let new = l.switchover();
            (new, t.elapsed())
        })
        .await;
        let port = lab.node(&new_leader).pg_port;
        let f = figures("switchover", &logs, started, took, port, round).await;
        report(&f);
        check(&f, &pooler, &lab);
        all.push(f);
        let l = lab.clone();
        tokio::task::spawn_blocking(move || l.wait_healthy())
            .await
            .expect("healthy again");

        // 2. kill -9 of the leader (Patroni, postmaster, backends).
        let round = 2 * r + 1;
        let l = lab.clone();
        let (logs, (killed, new_leader, took), started) =
            under_load(pooler.port, round, move || {
                let t = Instant::now();
                let killed = l.kill_leader();
                let new = l.wait_leader_other_than(&killed, Duration::from_secs(60));
                (killed, new, t.elapsed())
            })
            .await;
        let port = lab.node(&new_leader).pg_port;
        let f = figures("kill -9", &logs, started, took, port, round).await;
        report(&f);
        check(&f, &pooler, &lab);
        all.push(f);

        if r == 0 {
            // One member left, the leader: the replica database falls back to it.
            let (_, port) = replica_read(&pooler, false, Duration::from_secs(20)).await;
            assert_eq!(port, i32::from(lab.node(&new_leader).pg_port));
        }
        let l = lab.clone();
        tokio::task::spawn_blocking(move || {
            l.restart_node(&killed);
            l.wait_healthy();
        })
        .await
        .expect("rejoined");
    }

    // The replica again takes the reads; then it is killed and reads fall back to the primary.
    let leader = lab.leader().expect("leader");
    let standby = lab
        .nodes
        .iter()
        .find(|n| n.name != leader)
        .expect("standby")
        .name
        .clone();
    let (_, port) = replica_read(&pooler, true, Duration::from_secs(20)).await;
    assert_eq!(port, i32::from(lab.node(&standby).pg_port));
    lab.kill_node(&standby);
    let (_, port) = replica_read(&pooler, false, Duration::from_secs(20)).await;
    assert_eq!(
        port,
        i32::from(lab.node(&leader).pg_port),
        "fallback to the primary"
    );

    // The console shows the routing: the confirmed leader serves the primary role, the holds
    // were counted and timed, and the killed replica is banned.
    let mut admin = Raw::connect(pooler.port, "olly", "olly_pw", "pgbouncer")
        .await
        .expect("console login");
    let clusters = admin.query("SHOW CLUSTERS").await;
    assert_eq!(
        clusters.get("name", "lab", "confirmed_leader"),
        Some(leader.clone()),
        "{:?}",
        clusters.rows
    );
    assert_eq!(clusters.num("name", "lab", "hold"), 0);
    assert!(clusters.num("name", "lab", "holds") >= i64::from(2 * rounds));
    assert!(clusters.get("name", "lab", "last_hold_ms").is_some());
    let members = admin.query("SHOW MEMBERS").await;
    let serves = members.get("name", &leader, "serves").unwrap_or_default();
    assert!(serves.contains("primary"), "{:?}", members.rows);
    assert!(serves.contains("replica"), "fallback: {:?}", members.rows);
    // SHOW POOLS: one row per (database, user), whatever the number of members.
    let pools = admin.query("SHOW POOLS").await;
    let rows = pools
        .rows
        .iter()
        .filter(|r| r.first().and_then(|c| c.as_deref()) == Some("ollyscale"))
        .count();
    assert_eq!(rows, 1, "{:?}", pools.rows);
    if members.get("name", &standby, "name").is_some() {
        // Still listed (Patroni keeps a dead member about ttl): banned, serving nothing.
        assert!(
            members.get("name", &standby, "banned_for").is_some(),
            "{:?}",
            members.rows
        );
        assert_eq!(members.get("name", &standby, "serves").as_deref(), Some(""));
    }

    if std::env::var_os("FAILOVER_LOG").is_some() {
        for line in pooler
            .log()
            .lines()
            .filter(|l| l.contains("patroni cluster"))
        {
            println!("{line}");
        }
    }
    println!("FAILOVER summary over {rounds} round(s):");
    for f in &all {
        report(f);
    }
    let log = pooler.log();
    assert!(log.contains("failover hold started"), "{}", tail(&log, 40));
    assert!(
        log.contains("failover hold ended after"),
        "{}",
        tail(&log, 40)
    );
}

/// The leader cut off from etcd and from the other node while the pooler still reaches it:
/// Patroni demotes it and promotes the other after about ttl. The pooler must never have writes
/// acknowledged by two nodes, and must move to the new leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioned_leader_never_takes_writes_beside_the_new_one() {
    let lab = Arc::new(PatroniLab::start());
    let (n1, n2) = (&lab.nodes[0], &lab.nodes[1]);
    let pooler = Pooler::start_for_port(
        n1.pg_port,
        "ollyscale = cluster=lab role=primary dbname=ollyscale",
        &format!(
            "default_pool_size = 20\n[clusters]\nlab = patroni={},{}",
            n1.api_url(),
            n2.api_url()
        ),
        &format!("\"{USER}\" \"{PASSWORD}\""),
    );
    let c = pooler.connect(USER, PASSWORD, "ollyscale").await;
    c.batch_execute(
        "CREATE TABLE ha_rows (round int, writer int, seq int, port int, \
         PRIMARY KEY (round, writer, seq))",
    )
    .await
    .expect("create table through the pooler");
    drop(c);
    let old = lab.leader().expect("leader");
    let new = lab
        .nodes
        .iter()
        .find(|n| n.name != old)
        .expect("other")
        .name
        .clone();
    let (old_port, new_port) = (lab.node(&old).pg_port, lab.node(&new).pg_port);

    let round = 100;
    let l = lab.clone();
    let (o, n) = (old.clone(), new.clone());
    let (logs, (partition, promoted_at, took), started) =
        under_load(pooler.port, round, move || {
            let t = Instant::now();
            let partition = l.partition(&o);
            // The new leader as the other node's own Patroni reports it.
            let deadline = Instant::now() + Duration::from_secs(90);
            while l.leader_seen_by(&n).as_deref() != Some(n.as_str()) {
                assert!(Instant::now() < deadline, "no promotion\n{}", l.logs());
                std::thread::sleep(Duration::from_millis(50));
            }
            (partition, Instant::now(), t.elapsed())
        })
        .await;
    // Still partitioned: read the new leader and check every acknowledged row is there.
    let f = figures("partition", &logs, started, took, new_port, round).await;
    report(&f);
    assert_eq!(
        f.lost,
        0,
        "acknowledged commits lost\n{}",
        tail(&pooler.log(), 60)
    );
    let after: Vec<i32> = logs
        .iter()
        .flat_map(|l| l.acked.iter())
        .filter(|(_, at, _)| *at > promoted_at)
        .map(|(_, _, port)| *port)
        .collect();
    assert!(!after.is_empty(), "writes resumed on the new leader");
    assert!(
        after.iter().all(|p| *p == i32::from(new_port)),
        "a write acknowledged after the promotion came from the old leader (port {old_port})\n{}",
        tail(&pooler.log(), 60)
    );
    let mut admin = Raw::connect(pooler.port, "olly", "olly_pw", "pgbouncer")
        .await
        .expect("console login");
    let clusters = admin.query("SHOW CLUSTERS").await;
    assert_eq!(
        clusters.get("name", "lab", "confirmed_leader"),
        Some(new.clone()),
        "{:?}",
        clusters.rows
    );
    print_routing_log(&pooler);
    partition.heal();
}

/// With FAILOVER_LOG set: the pooler's routing log lines.
fn print_routing_log(pooler: &Pooler) {
    if std::env::var_os("FAILOVER_LOG").is_some() {
        for line in pooler
            .log()
            .lines()
            .filter(|l| l.contains("patroni cluster"))
        {
            println!("{line}");
        }
    }
}
