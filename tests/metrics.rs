//! `/metrics`, `/livez` and `/readyz` of the built pooler in front of a real PostgreSQL: the
//! scrape parses as Prometheus text, carries pgbouncer_exporter's names, types and labels, and
//! agrees with the console; readiness follows the servers and flips to 503 while draining. Also
//! the periodic `stats:` log line.

mod common;
mod console;

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{free_port, Pg, Pooler};
use console::{http, parse_prometheus, Exposition, Raw};

fn pg() -> &'static Pg {
    static PG: OnceLock<Pg> = OnceLock::new();
    PG.get_or_init(Pg::start)
}

/// A pooler serving HTTP on a free port; returns (pooler, http port).
fn pooler_with_http(databases_extra: &str, pgbouncer_extra: &str) -> (Pooler, u16) {
    let port = free_port();
    let extra =
        format!("http_listen_addr = 127.0.0.1\nhttp_listen_port = {port}\n{pgbouncer_extra}");
    (Pooler::start(pg(), databases_extra, &extra, ""), port)
}

async fn scrape(port: u16) -> Exposition {
    let (status, body) = http(port, "GET", "/metrics")
        .await
        .expect("scrape answered");
    assert_eq!(status, 200, "{body}");
    parse_prometheus(&body).unwrap_or_else(|e| panic!("bad exposition: {e}\n{body}"))
}

/// pgbouncer_exporter's families: (name, type, label names).
const EXPORTER: &[(&str, &str, &[&str])] = &[
    ("pgbouncer_up", "gauge", &[]),
    ("pgbouncer_version_info", "gauge", &["version"]),
    (
        "pgbouncer_stats_queries_pooled_total",
        "counter",
        &["database"],
    ),
    (
        "pgbouncer_stats_queries_duration_seconds_total",
        "counter",
        &["database"],
    ),
    (
        "pgbouncer_stats_received_bytes_total",
        "counter",
        &["database"],
    ),
    ("pgbouncer_stats_sent_bytes_total", "counter", &["database"]),
    (
        "pgbouncer_stats_client_wait_seconds_total",
        "counter",
        &["database"],
    ),
    (
        "pgbouncer_stats_sql_transactions_pooled_total",
        "counter",
        &["database"],
    ),
    (
        "pgbouncer_stats_server_in_transaction_seconds_total",
        "counter",
        &["database"],
    ),
    (
        "pgbouncer_stats_client_parses_total",
        "counter",
        &["database"],
    ),
    (
        "pgbouncer_stats_server_parses_total",
        "counter",
        &["database"],
    ),
    ("pgbouncer_stats_binds_total", "counter", &["database"]),
    (
        "pgbouncer_pools_client_active_connections",
        "gauge",
        &["database", "user"],
    ),
    (
        "pgbouncer_pools_client_waiting_connections",
        "gauge",
        &["database", "user"],
    ),
    (
        "pgbouncer_pools_client_active_cancel_connections",
        "gauge",
        &["database", "user"],
    ),
    (
        "pgbouncer_pools_client_waiting_cancel_connections",
        "gauge",
        &["database", "user"],
    ),
    (
        "pgbouncer_pools_server_active_connections",
        "gauge",
        &["database", "user"],
    ),
    (
        "pgbouncer_pools_server_active_cancel_connections",
        "gauge",
        &["database", "user"],
    ),
    (
        "pgbouncer_pools_server_being_canceled_connections",
        "gauge",
        &["database", "user"],
    ),
    (
        "pgbouncer_pools_server_idle_connections",
        "gauge",
        &["database", "user"],
    ),
    (
        "pgbouncer_pools_server_used_connections",
        "gauge",
        &["database", "user"],
    ),
    (
        "pgbouncer_pools_server_testing_connections",
        "gauge",
        &["database", "user"],
    ),
    (
        "pgbouncer_pools_server_login_connections",
        "gauge",
        &["database", "user"],
    ),
    (
        "pgbouncer_pools_client_maxwait_seconds",
        "gauge",
        &["database", "user"],
    ),
    ("pgbouncer_databases_pool_size", "gauge", DB_LABELS),
    ("pgbouncer_databases_reserve_pool", "gauge", DB_LABELS),
    ("pgbouncer_databases_max_connections", "gauge", DB_LABELS),
    (
        "pgbouncer_databases_current_connections",
        "gauge",
        DB_LABELS,
    ),
    ("pgbouncer_databases_paused", "gauge", DB_LABELS),
    ("pgbouncer_databases_disabled", "gauge", DB_LABELS),
    ("pgbouncer_databases", "gauge", &[]),
    ("pgbouncer_users", "gauge", &[]),
    ("pgbouncer_pools", "gauge", &[]),
    ("pgbouncer_free_clients", "gauge", &[]),
    ("pgbouncer_used_clients", "gauge", &[]),
    ("pgbouncer_login_clients", "gauge", &[]),
    ("pgbouncer_free_servers", "gauge", &[]),
    ("pgbouncer_used_servers", "gauge", &[]),
    ("pgbouncer_cached_dns_names", "gauge", &[]),
    ("pgbouncer_cached_dns_zones", "gauge", &[]),
    ("pgbouncer_in_flight_dns_queries", "gauge", &[]),
    ("pgbouncer_config_max_client_connections", "gauge", &[]),
    ("pgbouncer_config_max_user_connections", "gauge", &[]),
];

const DB_LABELS: &[&str] = &[
    "name",
    "host",
    "port",
    "database",
    "force_user",
    "pool_mode",
];

/// The scrape has every exporter family with its type and labels, only `ollyscale_pooler_`
/// additions, and the same numbers as the console.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrape_has_exporter_names_and_matches_show() {
    let (p, hport) = pooler_with_http("", "");
    let a = p.connect("md5user", "md5_pw", "testdb").await;
    let b = p.connect("md5user", "md5_pw", "testdb").await;
    for _ in 0..4 {
        a.simple_query("SELECT pg_sleep(0.01)")
            .await
            .expect("select");
    }
    b.simple_query("SELECT 1").await.expect("select");
    let m = scrape(hport).await;
    if std::env::var_os("SHOW_SCRAPE").is_some() {
        eprintln!("{}", http(hport, "GET", "/metrics").await.expect("x").1);
    }

    for (name, ty, labels) in EXPORTER {
        assert_eq!(
            m.types.get(*name).map(String::as_str),
            Some(*ty),
            "TYPE of {name}"
        );
        assert!(m.helps.contains_key(*name), "HELP of {name}");
        let samples = m.find(name, &[]);
        assert!(!samples.is_empty(), "no sample of {name}");
        for s in samples {
            let got: Vec<&str> = s.labels.keys().map(String::as_str).collect();
            let mut want = labels.to_vec();
            want.sort_unstable();
            assert_eq!(got, want, "labels of {name}");
        }
    }
    for s in &m.samples {
        assert!(
            s.name.starts_with("pgbouncer_") || s.name.starts_with("ollyscale_pooler_"),
            "unprefixed metric {}",
            s.name
        );
        if s.name.starts_with("pgbouncer_") {
            assert!(
                EXPORTER.iter().any(|(n, _, _)| *n == s.name),
                "{} is not a pgbouncer_exporter name: ours must use ollyscale_pooler_",
                s.name
            );
        }
    }
    assert_eq!(m.value("pgbouncer_up", &[]), 1.0);
    assert_eq!(
        m.value("pgbouncer_version_info", &[("version", "1.25.2")]),
        1.0
    );

    // Same numbers as the console (no traffic in between).
    let mut c = Raw::connect(p.port, "stats", "stats_pw", "pgbouncer")
        .await
        .expect("console");
    let totals = c.query("SHOW STATS_TOTALS").await;
    let db = [("database", "testdb")];
    let xacts = totals.num("database", "testdb", "xact_count");
    assert!(xacts >= 5);
    assert_eq!(
        m.value("pgbouncer_stats_sql_transactions_pooled_total", &db),
        xacts as f64
    );
    assert_eq!(
        m.value("pgbouncer_stats_queries_pooled_total", &db),
        totals.num("database", "testdb", "query_count") as f64
    );
    assert_eq!(
        m.value("pgbouncer_stats_received_bytes_total", &db),
        totals.num("database", "testdb", "bytes_received") as f64
    );
    let query_us = totals.num("database", "testdb", "query_time");
    assert!(query_us >= 40_000, "4 × pg_sleep(0.01) = {query_us} µs");
    let secs = m.value("pgbouncer_stats_queries_duration_seconds_total", &db);
    assert!(
        (secs - query_us as f64 * 1e-6).abs() < 1e-9,
        "{secs} s vs {query_us} µs"
    );
    assert_eq!(
        m.value("ollyscale_pooler_stats_server_assignments_total", &db),
        totals.num("database", "testdb", "server_assignment_count") as f64
    );
    let logins = totals.num("database", "testdb", "client_login_count");
    assert!(logins >= 2, "two clients logged in to testdb: {logins}");
    assert_eq!(
        m.value("ollyscale_pooler_stats_client_logins_total", &db),
        logins as f64
    );

    let pool = [("database", "testdb"), ("user", "md5user")];
    assert_eq!(
        m.value("pgbouncer_pools_client_active_connections", &pool),
        2.0
    );
    assert_eq!(
        m.value("pgbouncer_pools_client_waiting_connections", &pool),
        0.0
    );
    let pools = c.query("SHOW POOLS").await;
    assert_eq!(
        m.value("pgbouncer_pools_server_idle_connections", &pool),
        pools.num("database", "testdb", "sv_idle") as f64
    );
    let dbl = [
        ("name", "testdb"),
        ("host", "127.0.0.1"),
        ("database", "testdb"),
        ("force_user", ""),
        ("pool_mode", ""),
    ];
    assert_eq!(m.value("pgbouncer_databases_pool_size", &dbl), 20.0);
    assert_eq!(m.value("pgbouncer_databases_paused", &dbl), 0.0);
    let port = pg().port.to_string();
    assert_eq!(
        m.find("pgbouncer_databases_pool_size", &[("port", port.as_str())])
            .len(),
        1
    );
    let lists = c.query("SHOW LISTS").await;
    assert_eq!(
        m.value("pgbouncer_used_clients", &[]),
        lists.num("list", "used_clients", "items") as f64 - 1.0,
        "the console session itself arrived after the scrape"
    );
    assert_eq!(
        m.value("pgbouncer_config_max_client_connections", &[]),
        100.0
    );

    // Values move between scrapes.
    a.simple_query("SELECT 1").await.expect("select");
    let m2 = scrape(hport).await;
    assert_eq!(
        m2.value("pgbouncer_stats_sql_transactions_pooled_total", &db),
        xacts as f64 + 1.0
    );
    assert_eq!(m2.value("ollyscale_pooler_shutting_down", &[]), 0.0);
}

/// /livez, /readyz, HEAD, 404, 405; /readyz is 503 while a configured server is unreachable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_endpoints() {
    let (p, hport) = pooler_with_http("", "");
    assert_eq!(
        http(hport, "GET", "/livez").await,
        Some((200, "ok\n".into()))
    );
    assert_eq!(
        http(hport, "GET", "/readyz").await,
        Some((200, "ready\n".into()))
    );
    assert_eq!(http(hport, "HEAD", "/readyz").await.map(|r| r.0), Some(200));
    assert_eq!(http(hport, "GET", "/nope").await.map(|r| r.0), Some(404));
    assert_eq!(
        http(hport, "POST", "/metrics").await.map(|r| r.0),
        Some(405)
    );
    drop(p);

    // A database whose server does not answer keeps the pooler unready.
    let dead = free_port();
    let (_p2, hport2) = pooler_with_http(&format!("deaddb = host=127.0.0.1 port={dead}"), "");
    let (status, body) = http(hport2, "GET", "/readyz").await.expect("answer");
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains(&format!("127.0.0.1:{dead} unreachable")),
        "{body}"
    );
    assert_eq!(http(hport2, "GET", "/livez").await.map(|r| r.0), Some(200));
}

/// SIGTERM: /readyz answers 503 while the pooler waits for its last client, /livez stays 200,
/// and the scrape says shutting_down; the endpoint goes away with the process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_flips_to_503_during_shutdown() {
    let (mut p, hport) = pooler_with_http("", "shutdown_timeout = 30");
    let client = p.connect("md5user", "md5_pw", "testdb").await;
    client.simple_query("BEGIN").await.expect("begin");
    assert_eq!(http(hport, "GET", "/readyz").await.map(|r| r.0), Some(200));
    p.signal(libc::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = http(hport, "GET", "/readyz").await.expect("still serving");
        if r.0 == 503 {
            assert_eq!(r.1, "not ready: shutting down\n");
            break;
        }
        assert!(Instant::now() < deadline, "/readyz never flipped: {r:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(http(hport, "GET", "/livez").await.map(|r| r.0), Some(200));
    let m = scrape(hport).await;
    assert_eq!(m.value("ollyscale_pooler_shutting_down", &[]), 1.0);
    client.simple_query("COMMIT").await.expect("commit");
    drop(client);
    let (exited, p) =
        tokio::task::spawn_blocking(move || (p.wait_exit(Duration::from_secs(15)), p))
            .await
            .expect("wait");
    assert!(exited.is_some(), "pooler exited after its last client");
    assert!(
        http(hport, "GET", "/livez").await.is_none(),
        "endpoint gone"
    );
    drop(p);
}

/// Every stats_period the pooler logs PgBouncer's `stats:` line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_stats_log_line() {
    let (p, _) = pooler_with_http("", "stats_period = 1");
    let client = p.connect("md5user", "md5_pw", "testdb").await;
    client.simple_query("SELECT 1").await.expect("select");
    let found = tokio::task::spawn_blocking(move || {
        let ok = p.wait_for_log(" xacts/s, ", Duration::from_secs(10));
        (ok, p.log())
    })
    .await
    .expect("wait");
    assert!(found.0, "no stats line:\n{}", found.1);
    let line = found
        .1
        .lines()
        .find(|l| l.contains("stats: "))
        .expect("stats line")
        .to_string();
    for part in [
        "queries/s,",
        "client parses/s,",
        "server parses/s,",
        "binds/s,",
        "in ",
        "B/s, out ",
        "B/s, xact ",
        "us, query ",
        "us, wait ",
    ] {
        assert!(line.contains(part), "{part:?} missing in {line}");
    }
}
