//! Patroni discovery against a real cluster (etcd + two Patroni nodes, tests/common/patroni.rs)
//! through the built pooler: SHOW MEMBERS / SHOW CLUSTERS and /metrics show the leader and the
//! sync standby, follow a `POST /switchover` within seconds, and show the new leader after a
//! `kill -9` of the old one (Patroni itself takes about ttl = 10 s to fail over).
//!
//! The real cluster is started once, by one test (about 8 s to start). A second test covers what
//! needs no Patroni: an unreachable API, and clusters added and removed by RELOAD.

mod common;
mod console;

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use common::{free_port, PatroniLab, Pooler};
use console::{http, parse_prometheus, Answer, Raw};

const TEXT: u32 = 25;
const INT4: u32 = 23;
const INT8: u32 = 20;

/// Polls `sql` on the console until `ok` holds; panics with the last answer after `timeout`.
async fn wait_for(
    admin: &mut Raw,
    sql: &str,
    timeout: Duration,
    what: &str,
    ok: impl Fn(&Answer) -> bool,
) -> Answer {
    let deadline = Instant::now() + timeout;
    loop {
        let a = admin.query(sql).await;
        assert!(a.error.is_none(), "{sql}: {:?}", a.error);
        if ok(&a) {
            return a;
        }
        if Instant::now() >= deadline {
            panic!("{what}: not within {timeout:?}; last {sql}: {:?}", a.rows);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn role_of(a: &Answer, name: &str) -> Option<String> {
    a.get("name", name, "role")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_follows_switchover_and_failover() {
    let lab = PatroniLab::start();
    let (n1, n2) = (&lab.nodes[0], &lab.nodes[1]);
    let http_port = free_port();
    let pooler = Pooler::start_for_port(
        n1.pg_port,
        "ollyscale = cluster=lab role=primary dbname=ollyscale\n\
         ollyscale_ro = cluster=lab role=replica dbname=ollyscale",
        &format!(
            "patroni_poll_interval = 0.2\n\
             http_listen_addr = 127.0.0.1\nhttp_listen_port = {http_port}\n\
             [clusters]\nlab = patroni={},{}",
            n1.api_url(),
            n2.api_url()
        ),
        "",
    );
    let mut admin = Raw::connect(pooler.port, "olly", "olly_pw", "pgbouncer")
        .await
        .expect("console login");

    // The leader and the sync standby, as Patroni reports them.
    let first = lab.leader().expect("a healthy lab has a leader");
    let standby = if first == n1.name { &n2.name } else { &n1.name };
    let members = wait_for(
        &mut admin,
        "SHOW MEMBERS",
        Duration::from_secs(10),
        "leader and sync standby in SHOW MEMBERS",
        |a| {
            role_of(a, &first).as_deref() == Some("leader")
                && role_of(a, standby).as_deref() == Some("sync_standby")
        },
    )
    .await;
    assert_eq!(
        members.columns,
        [
            ("cluster", TEXT),
            ("name", TEXT),
            ("role", TEXT),
            ("state", TEXT),
            ("host", TEXT),
            ("port", INT4),
            ("timeline", INT8),
            ("lag", INT8),
            ("tags", TEXT),
            ("api_url", TEXT),
            ("serves", TEXT),
            ("banned_for", INT8),
        ]
        .map(|(n, t)| (n.to_string(), t))
    );
    assert_eq!(members.tag.as_deref(), Some("SHOW"));
    let leader_node = lab.node(&first);
    assert_eq!(
        members.get("name", &first, "cluster").as_deref(),
        Some("lab")
    );
    assert_eq!(
        members.get("name", &first, "host").as_deref(),
        Some("127.0.0.1")
    );
    assert_eq!(
        members.num("name", &first, "port"),
        i64::from(leader_node.pg_port)
    );
    assert_eq!(
        members.get("name", &first, "state").as_deref(),
        Some("running")
    );
    assert_eq!(
        members.get("name", &first, "lag"),
        None,
        "no lag on the leader"
    );
    assert_eq!(members.num("name", standby, "lag"), 0);
    assert_eq!(
        members.get("name", &first, "api_url"),
        Some(format!("{}/patroni", leader_node.api_url()))
    );
    let timeline = members.num("name", &first, "timeline");

    let clusters = admin.query("SHOW CLUSTERS").await;
    assert_eq!(clusters.rows.len(), 1);
    assert_eq!(clusters.get("name", "lab", "leader"), Some(first.clone()));
    assert_eq!(clusters.num("name", "lab", "members"), 2);
    assert_eq!(
        clusters.get("name", "lab", "patroni"),
        Some(format!("{},{}", n1.api_url(), n2.api_url()))
    );
    assert!(clusters.get("name", "lab", "last_success").is_some());
    assert_eq!(clusters.num("name", "lab", "consecutive_errors"), 0);

    // Switchover: Patroni reports the new leader within ~2 s; the pooler shortly after.
    let second = lab.switchover();
    assert_eq!(
        &second, standby,
        "sync mode switches over to the sync standby"
    );
    wait_for(
        &mut admin,
        "SHOW CLUSTERS",
        Duration::from_secs(5),
        "the switchover in SHOW CLUSTERS",
        |a| a.get("name", "lab", "leader").as_deref() == Some(second.as_str()),
    )
    .await;

    // Failover: kill -9 the new leader once the old one is back as sync standby.
    lab.wait_healthy();
    let killed = lab.kill_leader();
    assert_eq!(killed, second);
    let third = lab.wait_leader_other_than(&killed, Duration::from_secs(60));
    assert_eq!(third, first);
    let members = wait_for(
        &mut admin,
        "SHOW MEMBERS",
        Duration::from_secs(5),
        "the failover in SHOW MEMBERS",
        |a| role_of(a, &third).as_deref() == Some("leader"),
    )
    .await;
    assert!(
        members.num("name", &third, "timeline") > timeline,
        "a promotion starts a new timeline: {:?}",
        members.rows
    );
    let clusters = admin.query("SHOW CLUSTERS").await;
    assert_eq!(clusters.get("name", "lab", "leader"), Some(third.clone()));
    assert!(clusters.num("name", "lab", "leader_changes") >= 2);

    // /metrics agrees with the console.
    let (status, body) = http(http_port, "GET", "/metrics").await.expect("scrape");
    assert_eq!(status, 200);
    let m = parse_prometheus(&body).unwrap_or_else(|e| panic!("{e}\n{body}"));
    let leader_labels = [
        ("cluster", "lab"),
        ("member", third.as_str()),
        ("role", "leader"),
    ];
    assert_eq!(
        m.value("ollyscale_pooler_patroni_member_info", &leader_labels),
        1.0
    );
    assert_eq!(
        m.value("ollyscale_pooler_patroni_member_running", &leader_labels),
        1.0
    );
    assert_eq!(
        m.value("ollyscale_pooler_patroni_has_leader", &[("cluster", "lab")]),
        1.0
    );
    assert!(
        m.value(
            "ollyscale_pooler_patroni_leader_changes_total",
            &[("cluster", "lab")]
        ) >= 2.0
    );

    // One greppable info line per change.
    let log = pooler.log();
    if std::env::var_os("SHOW_POOLER_LOG").is_some() {
        eprintln!("{log}");
    }
    for needle in [
        "patroni cluster lab: first answer from ".to_string(),
        format!("patroni cluster lab: leader changed: {first} -> "),
        format!("-> {second}"),
        format!("patroni cluster lab: leader changed: {killed} -> "),
        format!("patroni cluster lab: member changed: {third} role sync_standby -> leader"),
    ] {
        assert!(
            log.contains(&needle),
            "no {needle:?} in the pooler log:\n{log}"
        );
    }

    // The killed node rejoins (pg_rewind) and shows up again as a standby.
    lab.restart_node(&killed);
    wait_for(
        &mut admin,
        "SHOW MEMBERS",
        Duration::from_secs(60),
        "the killed node back as a standby",
        |a| {
            role_of(a, &killed).is_some_and(|r| r == "sync_standby" || r == "replica")
                && a.get("name", &killed, "state").as_deref() == Some("running")
        },
    )
    .await;
}

/// A fake Patroni API that answers every request with `body` (until the runtime ends).
async fn fake_patroni(body: &'static str) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    // Detached: ends with the test's runtime.
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = s.write_all(head.as_bytes()).await;
                let _ = s.write_all(body.as_bytes()).await;
            });
        }
    });
    port
}

const ONE_LEADER: &str = r#"{"members":[{"name":"a","role":"leader","state":"running",
  "host":"127.0.0.1","port":5432,"timeline":3,"api_url":"http://127.0.0.1:1/patroni",
  "tags":{"nofailover":true}}]}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_patroni_and_clusters_changed_by_reload() {
    let closed = free_port();
    let http_port = free_port();
    let general = format!(
        "patroni_poll_interval = 0.1\npatroni_timeout = 0.5\nfailover_hold_timeout = 1\n\
         http_listen_addr = 127.0.0.1\nhttp_listen_port = {http_port}\n"
    );
    let gone = format!("[clusters]\ngone = patroni=http://127.0.0.1:{closed}\n");
    let pooler = Pooler::start_for_port(
        closed,
        "app = cluster=gone dbname=app",
        &format!("{general}{gone}"),
        "",
    );
    let mut admin = Raw::connect(pooler.port, "olly", "olly_pw", "pgbouncer")
        .await
        .expect("console login");
    let a = wait_for(
        &mut admin,
        "SHOW CLUSTERS",
        Duration::from_secs(10),
        "poll errors in SHOW CLUSTERS",
        |a| a.rows.len() == 1 && a.num("name", "gone", "consecutive_errors") >= 2,
    )
    .await;
    assert_eq!(
        a.columns,
        [
            ("name", TEXT),
            ("patroni", TEXT),
            ("answered_by", TEXT),
            ("leader", TEXT),
            ("members", INT4),
            ("paused", INT4),
            ("last_poll", TEXT),
            ("last_success", TEXT),
            ("poll_errors", INT8),
            ("consecutive_errors", INT4),
            ("last_error", TEXT),
            ("last_change", TEXT),
            ("leader_changed", TEXT),
            ("leader_changes", INT8),
            ("confirmed_leader", TEXT),
            ("hold", INT4),
            ("hold_since", TEXT),
            ("hold_reason", TEXT),
            ("held_clients", INT4),
            ("holds", INT8),
            ("last_hold_ms", INT8),
            ("routing_changed", TEXT),
            ("confirm_error", TEXT),
        ]
        .map(|(n, t)| (n.to_string(), t))
    );
    assert_eq!(a.get("name", "gone", "leader"), None);
    assert_eq!(a.get("name", "gone", "confirmed_leader"), None);
    assert_eq!(a.get("name", "gone", "last_success"), None);
    assert_eq!(a.num("name", "gone", "members"), 0);
    assert!(a.num("name", "gone", "poll_errors") >= 2);
    let err = a.get("name", "gone", "last_error").expect("an error");
    assert!(err.starts_with(&format!("127.0.0.1:{closed}: ")), "{err}");
    assert!(a
        .get("name", "gone", "last_poll")
        .is_some_and(|t| t.ends_with(" UTC")));
    let m = admin.query("SHOW MEMBERS").await;
    assert!(m.rows.is_empty() && m.columns.len() == 12, "{m:?}");
    // A `cluster=` database is routed by the topology only: with no member known its client
    // waits failover_hold_timeout, then gets that error (never a local or template host).
    let started = Instant::now();
    let Err(err) = pooler.try_connect("olly", "olly_pw", "app").await else {
        panic!("no member, no server: the login must fail");
    };
    let msg = err
        .as_db_error()
        .map(|d| d.message().to_string())
        .unwrap_or_else(|| err.to_string());
    assert_eq!(msg, "failover_hold_timeout");
    assert!(started.elapsed() >= Duration::from_millis(900));
    let (status, body) = http(http_port, "GET", "/readyz").await.expect("readyz");
    assert_eq!(status, 503);
    assert!(
        body.contains("patroni cluster gone has not answered yet"),
        "{body}"
    );
    assert!(pooler.wait_for_log(
        "patroni cluster gone: poll failed (1 in a row, no topology known yet)",
        Duration::from_secs(5)
    ));

    // RELOAD adds a cluster: it is polled at once.
    let up = fake_patroni(ONE_LEADER).await;
    let added = format!("{gone}up = patroni=http://127.0.0.1:{up}\n");
    pooler.rewrite_config(
        "app = cluster=gone dbname=app",
        &format!("{general}{added}"),
        "",
    );
    let r = admin.query("RELOAD").await;
    assert!(r.error.is_none(), "{:?}", r.error);
    wait_for(
        &mut admin,
        "SHOW MEMBERS",
        Duration::from_secs(10),
        "the added cluster's member",
        |a| a.get("name", "a", "role").as_deref() == Some("leader"),
    )
    .await;
    let m = admin.query("SHOW MEMBERS").await;
    assert_eq!(m.get("name", "a", "cluster").as_deref(), Some("up"));
    assert_eq!(m.get("name", "a", "tags").as_deref(), Some("nofailover"));
    assert_eq!(m.num("name", "a", "timeline"), 3);
    let c = admin.query("SHOW CLUSTERS").await;
    assert_eq!(c.get("name", "up", "leader").as_deref(), Some("a"));
    assert_eq!(
        c.get("name", "up", "answered_by"),
        Some(format!("127.0.0.1:{up}"))
    );

    // RELOAD removes one: its row goes, the other keeps its topology.
    let only_up = format!("[clusters]\nup = patroni=http://127.0.0.1:{up}\n");
    pooler.rewrite_config("", &format!("{general}{only_up}"), "");
    let r = admin.query("RELOAD").await;
    assert!(r.error.is_none(), "{:?}", r.error);
    let c = admin.query("SHOW CLUSTERS").await;
    assert_eq!(c.rows.len(), 1, "{:?}", c.rows);
    assert_eq!(c.get("name", "up", "leader").as_deref(), Some("a"));
    assert!(pooler
        .log()
        .contains("patroni cluster gone: removed from the configuration"));
}

/// RELOAD that changes a `cluster=` database's `role=` or `cluster=` routes it anew: a role the
/// cluster cannot serve (sync, with only a leader) holds and fails its logins; `role=primary`
/// then serves new clients; moving it to a cluster with no members takes even the connected
/// client's next transaction there (it waits for a leader and gets the hold's error).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_moves_a_database_to_another_role_or_cluster() {
    let pg = common::Pg::start();
    let body: &'static str = Box::leak(
        format!(
            r#"{{"members":[{{"name":"a","role":"leader","state":"running",
              "host":"127.0.0.1","port":{},"timeline":1,"api_url":"http://127.0.0.1:1/patroni"}}]}}"#,
            pg.port
        )
        .into_boxed_str(),
    );
    let up = fake_patroni(body).await;
    let closed = free_port();
    let general = format!(
        "patroni_poll_interval = 0.1\npatroni_timeout = 0.5\nfailover_hold_timeout = 1\n\
         [clusters]\nup = patroni=http://127.0.0.1:{up}\ngone = patroni=http://127.0.0.1:{closed}\n"
    );
    let entry =
        |cluster: &str, role: &str| format!("app = cluster={cluster} role={role} dbname=testdb");
    let pooler = Pooler::start(&pg, &entry("up", "sync"), &general, "");
    let mut admin = Raw::connect(pooler.port, "olly", "olly_pw", "pgbouncer")
        .await
        .expect("console login");
    let refused = |e: tokio_postgres::Error| {
        e.as_db_error()
            .map(|d| d.message().to_string())
            .unwrap_or_else(|| e.to_string())
    };
    let Err(e) = pooler.try_connect("olly", "olly_pw", "app").await else {
        panic!("no sync standby: the login must fail");
    };
    assert_eq!(refused(e), "failover_hold_timeout");

    pooler.rewrite_config(&entry("up", "primary"), &general, "");
    let r = admin.query("RELOAD").await;
    assert!(r.error.is_none(), "{:?}", r.error);
    let client = match pooler.try_connect("olly", "olly_pw", "app").await {
        Ok(c) => c,
        Err(e) => panic!(
            "role=primary after RELOAD: {}\n{}",
            refused(e),
            pooler.log()
        ),
    };
    let row = client.query_one("SELECT 1", &[]).await.expect("served");
    assert_eq!(row.get::<_, i32>(0), 1);

    pooler.rewrite_config(&entry("gone", "primary"), &general, "");
    let r = admin.query("RELOAD").await;
    assert!(r.error.is_none(), "{:?}", r.error);
    let e = client
        .query_one("SELECT 2", &[])
        .await
        .expect_err("the moved database has no leader");
    assert!(
        refused(e).contains("failover_hold_timeout"),
        "{}",
        pooler.log()
    );
    assert!(
        pooler.log().contains("now routed by cluster gone"),
        "{}",
        pooler.log()
    );
}
