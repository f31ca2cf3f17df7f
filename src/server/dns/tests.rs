//! The cache's state machine with a scripted resolver and tokio's paused clock: reuse within
//! dns_max_ttl, a new lookup after it, failures remembered for dns_nxdomain_ttl, one lookup for
//! concurrent connects, round-robin, and a dropped lookup that does not wedge the name.

use std::io;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::{DnsCache, HostRow};

/// A resolver that counts its lookups and answers `a.test` with two addresses (after `delay`),
/// anything else with NotFound.
fn counting(delay: Duration) -> (DnsCache, Arc<AtomicU32>) {
    let calls = Arc::new(AtomicU32::new(0));
    let seen = calls.clone();
    let cache = DnsCache::with_resolver(Box::new(move |name: String| {
        seen.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            if name == "a.test" {
                Ok(vec![
                    "10.0.0.1".parse::<IpAddr>().expect("invariant: literal"),
                    "10.0.0.2".parse().expect("invariant: literal"),
                    "10.0.0.1".parse().expect("invariant: literal"),
                ])
            } else {
                Err(io::Error::new(io::ErrorKind::NotFound, "no such host"))
            }
        })
    }));
    (cache, calls)
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("invariant: literal")
}

#[tokio::test(start_paused = true)]
async fn addresses_are_reused_until_dns_max_ttl_then_looked_up_again() {
    let (cache, calls) = counting(Duration::ZERO);
    cache.configure(Duration::from_secs(15), Duration::from_secs(15));
    let first = cache.resolve("a.test").await.expect("resolves");
    // Duplicates dropped, resolver order kept.
    assert_eq!(first, vec![ip("10.0.0.1"), ip("10.0.0.2")]);
    tokio::time::advance(Duration::from_secs(14)).await;
    // Round-robin: the next use starts at the next address.
    assert_eq!(
        cache.resolve("a.test").await.expect("cached"),
        vec![ip("10.0.0.2"), ip("10.0.0.1")]
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(
        cache.hosts(),
        vec![HostRow {
            hostname: "a.test".into(),
            ttl: 1,
            addrs: "10.0.0.1:0,10.0.0.2:0".into()
        }]
    );
    tokio::time::advance(Duration::from_secs(2)).await;
    cache.resolve("a.test").await.expect("resolves again");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(cache.hosts()[0].ttl, 15);
    assert_eq!(cache.counts(), (1, 0, 0));
}

#[tokio::test(start_paused = true)]
async fn a_failed_lookup_is_remembered_for_dns_nxdomain_ttl() {
    let (cache, calls) = counting(Duration::ZERO);
    cache.configure(Duration::from_secs(15), Duration::from_secs(5));
    let e = cache.resolve("nonexistent.invalid").await.unwrap_err();
    assert!(e.to_string().contains("DNS lookup failed"), "{e}");
    tokio::time::advance(Duration::from_secs(4)).await;
    let again = cache.resolve("nonexistent.invalid").await.unwrap_err();
    assert_eq!(again.kind(), io::ErrorKind::NotFound);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(cache.hosts()[0].addrs, "");
    tokio::time::advance(Duration::from_secs(2)).await;
    cache.resolve("nonexistent.invalid").await.unwrap_err();
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn concurrent_connects_share_one_lookup() {
    let (cache, calls) = counting(Duration::from_secs(1));
    let cache = Arc::new(cache);
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let c = cache.clone();
        tasks.push(tokio::spawn(async move { c.resolve("a.test").await }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    // One lookup in flight, two connects waiting for it.
    assert_eq!(cache.counts(), (1, 1, 2));
    for t in tasks {
        assert_eq!(t.await.expect("task").expect("resolves").len(), 2);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(cache.counts(), (1, 0, 0));
}

#[tokio::test(start_paused = true)]
async fn a_lookup_dropped_midway_does_not_wedge_the_name() {
    let (cache, calls) = counting(Duration::from_secs(10));
    let dropped = tokio::time::timeout(Duration::from_secs(1), cache.resolve("a.test")).await;
    assert!(dropped.is_err());
    assert_eq!(cache.counts(), (0, 0, 0));
    cache.resolve("a.test").await.expect("resolves");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn a_new_ttl_applies_to_the_next_lookup() {
    let (cache, _) = counting(Duration::ZERO);
    cache.configure(Duration::from_secs(300), Duration::from_secs(15));
    cache.resolve("a.test").await.expect("resolves");
    assert_eq!(cache.hosts()[0].ttl, 300);
}
