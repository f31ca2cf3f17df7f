//! The DNS cache (dns_max_ttl, dns_nxdomain_ttl) through the built pooler: a server host name
//! shows in SHOW DNS_HOSTS with its ttl and addresses and counts in SHOW LISTS; a name that does
//! not resolve is looked up once per dns_nxdomain_ttl however many clients try it; SET
//! dns_max_ttl applies to the next lookup. /etc/hosts is left alone: `localhost` and the
//! reserved `.invalid` domain (RFC 2606) behave the same on every machine.

use std::time::Duration;

use crate::common::Pooler;
use crate::console::Raw;
use crate::{admin, pg};

fn by_name(pg_port: u16) -> String {
    format!(
        "byname = host=localhost port={pg_port} dbname=testdb\n\
         nowhere = host=nonexistent.invalid port={pg_port} dbname=testdb"
    )
}

/// The lookups of `nonexistent.invalid` the pooler made (its warning, PgBouncer's words; the
/// connect failures that quote it are other lines).
fn lookups(p: &Pooler) -> usize {
    p.log()
        .lines()
        .filter(|l| l.contains("WARNING DNS lookup failed: nonexistent.invalid"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resolved_name_shows_in_dns_hosts_with_its_ttl() {
    let p = Pooler::start(pg(), &by_name(pg().port), "", "");
    let mut c = admin(&p).await;
    assert!(c.query("SHOW DNS_HOSTS").await.rows.is_empty());
    let mut client = Raw::connect(p.port, "olly", "olly_pw", "byname")
        .await
        .unwrap();
    assert!(client.query("SELECT 1").await.error.is_none());
    let hosts = c.query("SHOW DNS_HOSTS").await;
    assert_eq!(hosts.names(), vec!["hostname", "ttl", "addrs"]);
    assert_eq!(hosts.columns[1].1, 20, "ttl is int8");
    let ttl = hosts.num("hostname", "localhost", "ttl");
    assert!((1..=15).contains(&ttl), "ttl {ttl} within dns_max_ttl");
    let addrs = hosts.get("hostname", "localhost", "addrs").unwrap();
    assert!(addrs.split(',').any(|a| a == "127.0.0.1:0"), "{addrs}");
    let lists = c.query("SHOW LISTS").await;
    assert_eq!(lists.num("list", "dns_names", "items"), 1);
    assert_eq!(lists.num("list", "dns_queries", "items"), 0);
    assert_eq!(lists.num("list", "dns_pending", "items"), 0);
    // A literal address (testdb's 127.0.0.1) is never looked up.
    let mut lit = Raw::connect(p.port, "olly", "olly_pw", "testdb")
        .await
        .unwrap();
    assert!(lit.query("SELECT 1").await.error.is_none());
    assert_eq!(c.query("SHOW DNS_HOSTS").await.rows.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_that_does_not_resolve_is_looked_up_once_per_nxdomain_ttl() {
    let p = Pooler::start(pg(), &by_name(pg().port), "query_wait_timeout = 2", "");
    for _ in 0..2 {
        let mut c = Raw::connect(p.port, "olly", "olly_pw", "nowhere").await;
        if let Ok(c) = &mut c {
            assert!(c.query("SELECT 1").await.error.is_some());
        }
    }
    // The pool retried the connect many times; the name was looked up once.
    assert!(
        lookups(&p) == 1 && p.log().matches("server connect failed").count() > 1,
        "{}",
        p.log()
    );
    let mut c = admin(&p).await;
    let hosts = c.query("SHOW DNS_HOSTS").await;
    assert_eq!(
        hosts
            .get("hostname", "nonexistent.invalid", "addrs")
            .as_deref(),
        Some("")
    );
    assert!(hosts.num("hostname", "nonexistent.invalid", "ttl") <= 15);
    let lists = c.query("SHOW LISTS").await;
    assert_eq!(lists.num("list", "dns_names", "items"), 1);
    assert_eq!(lists.num("list", "dns_queries", "items"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_dns_max_ttl_applies_to_the_next_lookup() {
    let p = Pooler::start(pg(), &by_name(pg().port), "query_wait_timeout = 1", "");
    let mut c = admin(&p).await;
    for (key, value) in [("dns_max_ttl", "300"), ("dns_nxdomain_ttl", "1")] {
        let a = c.query(&format!("SET {key} = {value}")).await;
        assert_eq!(a.tag, Some(format!("SET {key}={value}")), "{a:?}");
        let cfg = c.query("SHOW CONFIG").await;
        assert_eq!(cfg.get("key", key, "value").as_deref(), Some(value));
        assert_eq!(cfg.get("key", key, "changeable").as_deref(), Some("yes"));
    }
    let mut client = Raw::connect(p.port, "olly", "olly_pw", "byname")
        .await
        .unwrap();
    assert!(client.query("SELECT 1").await.error.is_none());
    let ttl = c
        .query("SHOW DNS_HOSTS")
        .await
        .num("hostname", "localhost", "ttl");
    assert!(
        ttl > 15 && ttl <= 300,
        "ttl {ttl} follows the new dns_max_ttl"
    );
    // dns_nxdomain_ttl = 1: a failure is forgotten after a second, so a later try looks again.
    let _ = Raw::connect(p.port, "olly", "olly_pw", "nowhere").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let _ = Raw::connect(p.port, "olly", "olly_pw", "nowhere").await;
    assert!(lookups(&p) >= 2, "{}", p.log());
}
