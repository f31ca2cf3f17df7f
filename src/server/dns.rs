//! The DNS cache in front of every server connect, with PgBouncer's semantics (dnslookup.c): a
//! host name is looked up once and its addresses are reused for `dns_max_ttl`; a failed lookup is
//! remembered for `dns_nxdomain_ttl`, so a dead name costs no lookup per connect; connects that
//! need a name while its lookup runs wait for that one lookup. The record's own TTL is ignored,
//! as in PgBouncer. Each use hands out the addresses starting one further (round-robin over the
//! A/AAAA records); the caller falls through to the next address when one cannot be reached.
//!
//! Feeds SHOW DNS_HOSTS and the `dns_*` rows of SHOW LISTS. IP literals and Unix sockets never
//! come here. Must not hold its lock across an await.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::time::Instant;

/// What a resolver returns for one name: its addresses, in the resolver's order.
pub type LookupFuture = Pin<Box<dyn Future<Output = io::Result<Vec<IpAddr>>> + Send>>;

/// Looks a name up. The real one is the system resolver (getaddrinfo through tokio), so
/// `/etc/hosts` and nsswitch apply as they do for libpq.
pub type Resolver = Box<dyn Fn(String) -> LookupFuture + Send + Sync>;

/// One row of SHOW DNS_HOSTS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRow {
    /// The name as written in the config.
    pub hostname: String,
    /// Seconds until the name is looked up again (0 once due).
    pub ttl: u64,
    /// The addresses, PgBouncer's `sa2str` style (`127.0.0.1:0`, `[::1]:0`), comma-separated;
    /// empty for a failed lookup.
    pub addrs: String,
}

/// Where a name's lookup stands.
enum State {
    /// A lookup runs; its sender is dropped when it ends, which wakes every waiter.
    Running(watch::Receiver<()>),
    /// The addresses are good until `expires`.
    Resolved,
    /// The lookup failed; the error is repeated until `expires`.
    Failed(io::ErrorKind, String),
}

/// What a `resolve` call does after looking at the entry.
enum Step {
    /// Answered from the cache.
    Done(io::Result<Vec<IpAddr>>),
    /// This call runs the lookup; the sender wakes the waiters when dropped.
    Lookup(watch::Sender<()>),
    /// Another call's lookup runs.
    Wait(watch::Receiver<()>),
}

/// One cached name.
struct Entry {
    state: State,
    /// The last addresses found (kept while a new lookup runs, for SHOW DNS_HOSTS).
    addrs: Arc<[IpAddr]>,
    /// When the name must be looked up again.
    expires: Instant,
    /// Rotates the first address handed out.
    next: usize,
}

/// The cache shared by every pool's connector (see module docs).
pub struct DnsCache {
    /// Every name looked up so far; one short lock, never held across an await.
    names: Mutex<HashMap<String, Entry>>,
    resolver: Resolver,
    /// dns_max_ttl and dns_nxdomain_ttl in ms, set on every config swap.
    max_ttl_ms: AtomicU64,
    nxdomain_ttl_ms: AtomicU64,
    /// Lookups running now (SHOW LISTS dns_queries, PgBouncer's `ctx->active`).
    queries: AtomicU32,
    /// Connects waiting for a lookup another connect started (SHOW LISTS dns_pending).
    pending: AtomicU32,
}

impl Default for DnsCache {
    fn default() -> Self {
        DnsCache::with_resolver(Box::new(|name: String| {
            Box::pin(async move {
                let found = tokio::net::lookup_host((name.as_str(), 0)).await?;
                Ok(found.map(|a| a.ip()).collect())
            })
        }))
    }
}

impl DnsCache {
    /// A cache in front of `resolver`, with PgBouncer's default TTLs (15 s each).
    pub fn with_resolver(resolver: Resolver) -> DnsCache {
        DnsCache {
            names: Mutex::new(HashMap::new()),
            resolver,
            max_ttl_ms: AtomicU64::new(15_000),
            nxdomain_ttl_ms: AtomicU64::new(15_000),
            queries: AtomicU32::new(0),
            pending: AtomicU32::new(0),
        }
    }

    /// Applies dns_max_ttl / dns_nxdomain_ttl to the lookups that finish from now on (entries
    /// already cached keep their expiry, as in PgBouncer).
    pub fn configure(&self, max_ttl: Duration, nxdomain_ttl: Duration) {
        self.max_ttl_ms
            .store(max_ttl.as_millis() as u64, Ordering::Relaxed);
        self.nxdomain_ttl_ms
            .store(nxdomain_ttl.as_millis() as u64, Ordering::Relaxed);
    }

    /// The addresses of `name`, the cached ones while they are fresh, rotated by one per call.
    /// A failed lookup's error is returned again until dns_nxdomain_ttl passes.
    pub async fn resolve(&self, name: &str) -> io::Result<Vec<IpAddr>> {
        loop {
            match self.step(name) {
                Step::Done(r) => return r,
                Step::Lookup(tx) => return self.lookup(name, tx).await,
                Step::Wait(mut rx) => {
                    // Another connect's lookup runs: wait for it to end (its sender drops),
                    // then read what it left.
                    self.pending.fetch_add(1, Ordering::Relaxed);
                    let _ = rx.changed().await;
                    self.pending.fetch_sub(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// What `resolve` does next, decided under the lock.
    fn step(&self, name: &str) -> Step {
        let mut names = self.names.lock();
        let now = Instant::now();
        let Some(e) = names.get_mut(name) else {
            let (tx, rx) = watch::channel(());
            names.insert(
                name.to_string(),
                Entry {
                    state: State::Running(rx),
                    addrs: Arc::from(Vec::new()),
                    expires: now,
                    next: 0,
                },
            );
            return Step::Lookup(tx);
        };
        match &e.state {
            State::Running(rx) => return Step::Wait(rx.clone()),
            State::Resolved if e.expires > now => {
                let mut out = e.addrs.to_vec();
                let n = out.len();
                if n > 0 {
                    out.rotate_left(e.next % n);
                }
                e.next = e.next.wrapping_add(1);
                return Step::Done(Ok(out));
            }
            State::Failed(kind, msg) if e.expires > now => {
                return Step::Done(Err(io::Error::new(*kind, msg.clone())));
            }
            _ => {}
        }
        let (tx, rx) = watch::channel(());
        e.state = State::Running(rx);
        Step::Lookup(tx)
    }

    /// Runs the lookup of `name` (whose entry is Running) and stores the outcome. `done` is
    /// dropped on every path, the waiters then re-read the entry.
    async fn lookup(&self, name: &str, done: watch::Sender<()>) -> io::Result<Vec<IpAddr>> {
        self.queries.fetch_add(1, Ordering::Relaxed);
        let mut unfinished = Unfinished {
            cache: self,
            name,
            armed: true,
        };
        let found = (self.resolver)(name.to_string()).await.and_then(|mut v| {
            let mut seen = std::collections::HashSet::new();
            v.retain(|ip| seen.insert(*ip));
            if v.is_empty() {
                Err(io::Error::new(io::ErrorKind::NotFound, "no addresses"))
            } else {
                Ok(v)
            }
        });
        unfinished.armed = false;
        drop(unfinished);
        let now = Instant::now();
        let mut names = self.names.lock();
        let e = names.entry(name.to_string()).or_insert_with(|| Entry {
            state: State::Resolved,
            addrs: Arc::from(Vec::new()),
            expires: now,
            next: 0,
        });
        let result = match found {
            Ok(addrs) => {
                let ttl = self.max_ttl_ms.load(Ordering::Relaxed);
                tracing::debug!("DNS: {name} = {}", addrs_text(&addrs));
                e.state = State::Resolved;
                e.addrs = Arc::from(addrs.clone());
                e.expires = now + Duration::from_millis(ttl);
                e.next = 1;
                Ok(addrs)
            }
            Err(err) => {
                let ttl = self.nxdomain_ttl_ms.load(Ordering::Relaxed);
                // PgBouncer's words, which operators grep for.
                tracing::warn!("DNS lookup failed: {name}: {err}");
                let msg = format!("DNS lookup failed: {name}: {err}");
                e.state = State::Failed(err.kind(), msg.clone());
                e.addrs = Arc::from(Vec::new());
                e.expires = now + Duration::from_millis(ttl);
                Err(io::Error::new(err.kind(), msg))
            }
        };
        drop(names);
        drop(done);
        result
    }

    /// SHOW DNS_HOSTS: every name looked up so far, sorted.
    pub fn hosts(&self) -> Vec<HostRow> {
        let now = Instant::now();
        let mut rows: Vec<HostRow> = self
            .names
            .lock()
            .iter()
            .map(|(name, e)| HostRow {
                hostname: name.clone(),
                ttl: e.expires.saturating_duration_since(now).as_secs(),
                addrs: addrs_text(&e.addrs),
            })
            .collect();
        rows.sort_by(|a, b| a.hostname.cmp(&b.hostname));
        rows
    }

    /// SHOW LISTS: (dns_names, dns_queries, dns_pending).
    pub fn counts(&self) -> (u64, u64, u64) {
        (
            self.names.lock().len() as u64,
            u64::from(self.queries.load(Ordering::Relaxed)),
            u64::from(self.pending.load(Ordering::Relaxed)),
        )
    }
}

/// Undoes a lookup whose connect was dropped (connect timeout, client gone) before it ended:
/// the entry must not stay Running, or every later connect would wait for nothing.
struct Unfinished<'a> {
    cache: &'a DnsCache,
    name: &'a str,
    armed: bool,
}

impl Drop for Unfinished<'_> {
    fn drop(&mut self) {
        self.cache.queries.fetch_sub(1, Ordering::Relaxed);
        if !self.armed {
            return;
        }
        let mut names = self.cache.names.lock();
        if let Some(e) = names.get_mut(self.name) {
            if matches!(e.state, State::Running(_)) {
                if e.addrs.is_empty() {
                    names.remove(self.name);
                } else {
                    // Due again: the next connect looks it up.
                    e.state = State::Resolved;
                    e.expires = Instant::now();
                }
            }
        }
    }
}

/// PgBouncer's `sa2str` of the looked-up addresses (port 0: the lookup is by name only).
fn addrs_text(addrs: &[IpAddr]) -> String {
    addrs
        .iter()
        .map(|ip| match ip {
            IpAddr::V4(v4) => format!("{v4}:0"),
            IpAddr::V6(v6) => format!("[{v6}]:0"),
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests;
