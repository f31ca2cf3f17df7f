//! Host lists (`host=a,b` with `port=p1,p2`) and load_balance_hosts over two PostgreSQL
//! clusters on two ports: round-robin spreads clients over both, `disable` sticks to the first,
//! and with one cluster stopped new clients fall through to the other.

use crate::admin;
use crate::common::{Pg, Pooler};
use crate::console::Raw;

/// The port of the PostgreSQL server a client's transaction ran on.
async fn served_by(c: &mut Raw) -> String {
    let a = c.query("SELECT current_setting('port')").await;
    assert!(a.error.is_none(), "{a:?}");
    a.rows[0][0].clone().expect("port")
}

fn list_entry(a: &Pg, b: &Pg, extra: &str) -> String {
    format!(
        "listdb = host=127.0.0.1,127.0.0.1 port={},{} dbname=testdb {extra}",
        a.port, b.port
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_spreads_clients_and_falls_through_when_a_host_stops() {
    let a = Pg::start();
    let b = Pg::start();
    let p = Pooler::start(&a, &list_entry(&a, &b, ""), "", "");
    let mut clients = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..6 {
        let mut c = Raw::connect(p.port, "olly", "olly_pw", "listdb")
            .await
            .unwrap();
        seen.insert(served_by(&mut c).await);
        clients.push(c);
    }
    let both: std::collections::BTreeSet<String> = [a.port.to_string(), b.port.to_string()]
        .into_iter()
        .collect();
    assert_eq!(seen, both, "clients spread over both hosts");

    let mut c = admin(&p).await;
    let pools = c.query("SHOW POOLS").await;
    assert_eq!(
        pools
            .get("database", "listdb", "load_balance_hosts")
            .as_deref(),
        Some("round-robin")
    );
    assert_eq!(
        pools.get("database", "testdb", "load_balance_hosts"),
        None,
        "NULL without a host list"
    );
    let dbs = c.query("SHOW DATABASES").await;
    assert_eq!(
        dbs.get("name", "listdb", "host").as_deref(),
        Some("127.0.0.1,127.0.0.1")
    );
    assert_eq!(
        dbs.get("name", "listdb", "load_balance_hosts").as_deref(),
        Some("round-robin")
    );

    // One cluster stops: every new client is served by the other one.
    drop(clients);
    b.stop();
    for _ in 0..6 {
        let mut c = Raw::connect(p.port, "olly", "olly_pw", "listdb")
            .await
            .unwrap();
        assert_eq!(served_by(&mut c).await, a.port.to_string());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disable_uses_the_first_host_until_it_fails() {
    let a = Pg::start();
    let b = Pg::start();
    let p = Pooler::start(
        &a,
        &list_entry(&a, &b, "load_balance_hosts=disable"),
        "",
        "",
    );
    for _ in 0..4 {
        let mut c = Raw::connect(p.port, "olly", "olly_pw", "listdb")
            .await
            .unwrap();
        assert_eq!(served_by(&mut c).await, a.port.to_string());
    }
    let mut console = admin(&p).await;
    let pools = console.query("SHOW POOLS").await;
    assert_eq!(
        pools
            .get("database", "listdb", "load_balance_hosts")
            .as_deref(),
        Some("disable")
    );
    a.stop();
    for _ in 0..4 {
        let mut c = Raw::connect(p.port, "olly", "olly_pw", "listdb")
            .await
            .unwrap();
        assert_eq!(served_by(&mut c).await, b.port.to_string());
    }
    assert!(p.log().contains("is unreachable, trying the other hosts"));
}

/// PgBouncer's test_multi_port: in session mode three clients in a row get the first, second,
/// then first port again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_takes_the_hosts_in_turn() {
    let a = Pg::start();
    let b = Pg::start();
    let p = Pooler::start(&a, &list_entry(&a, &b, ""), "pool_mode = session", "");
    let mut ports = Vec::new();
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut c = Raw::connect(p.port, "olly", "olly_pw", "listdb")
            .await
            .unwrap();
        ports.push(served_by(&mut c).await);
        held.push(c);
    }
    assert_eq!(
        ports,
        vec![a.port.to_string(), b.port.to_string(), a.port.to_string()]
    );
}

/// PgBouncer's test_load_balance_hosts_disable_bad_first: a first host whose name does not
/// resolve is skipped, with PgBouncer's log line; RELOAD changes load_balance_hosts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_that_does_not_resolve_is_skipped_and_reload_changes_the_mode() {
    let a = Pg::start();
    let entry = |mode: &str| {
        format!(
            "listdb = host=no-such-host.invalid,127.0.0.1 port={0},{0} dbname=testdb \
             load_balance_hosts={mode}",
            a.port
        )
    };
    let p = Pooler::start(&a, &entry("disable"), "server_login_retry = 1", "");
    for _ in 0..2 {
        let mut c = Raw::connect(p.port, "olly", "olly_pw", "listdb")
            .await
            .unwrap();
        assert_eq!(served_by(&mut c).await, a.port.to_string());
    }
    assert!(p
        .log()
        .contains("closing because: server DNS lookup failed"));
    let mut console = admin(&p).await;
    let dbs = console.query("SHOW DATABASES").await;
    assert_eq!(
        dbs.get("name", "listdb", "load_balance_hosts").as_deref(),
        Some("disable")
    );
    p.rewrite_config(&entry("round-robin"), "server_login_retry = 1", "");
    assert!(console.query("RELOAD").await.error.is_none());
    let dbs = console.query("SHOW DATABASES").await;
    assert_eq!(
        dbs.get("name", "listdb", "load_balance_hosts").as_deref(),
        Some("round-robin")
    );
    let pools = console.query("SHOW POOLS").await;
    assert_eq!(
        pools
            .get("database", "listdb", "load_balance_hosts")
            .as_deref(),
        Some("round-robin")
    );
}

/// PgBouncer launches one server connect per pool at a time: clients arriving together at a
/// host list whose first host does not resolve wait for the first attempt's outcome, so the dead
/// host is tried, and its DNS failure logged, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_clients_try_a_dead_first_host_once() {
    let a = Pg::start();
    let entry = format!(
        "listdb = host=no-such-host.invalid,127.0.0.1 port={0},{0} dbname=testdb \
         load_balance_hosts=disable",
        a.port
    );
    let p = Pooler::start(&a, &entry, "server_login_retry = 1", "");
    let clients = (0..4).map(|_| async {
        let mut c = Raw::connect(p.port, "olly", "olly_pw", "listdb")
            .await
            .unwrap();
        served_by(&mut c).await
    });
    for port in futures_util::future::join_all(clients).await {
        assert_eq!(port, a.port.to_string());
    }
    let log = p.log();
    assert_eq!(
        log.matches("closing because: server DNS lookup failed")
            .count(),
        1,
        "{log}"
    );
}
