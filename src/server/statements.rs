//! Protocol-level prepared statements as the servers hold them (PgBouncer 1.21+ semantics):
//! one process-wide cache that gives each distinct (query text, parameter types) an id and the
//! server-side name `OLLY_<id>`, shared by every client, and each server's LRU of the ids it
//! has prepared, capped at `max_prepared_statements`.
//!
//! Memory: the cache holds only weak references, so an entry lives while a client maps a name
//! to it or a server holds it; the cache's own table is swept of dead entries as it grows. So
//! a flood of distinct statements costs what the clients keep plus `servers × cap`.
//! No I/O here: what to send to a server is decided by `session::pipeline`.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, Weak};

use bytes::Bytes;
use parking_lot::Mutex;

/// One shared statement.
#[derive(Debug)]
pub struct Statement {
    /// Process-wide id; the server-side name is `OLLY_<id>`.
    pub id: u64,
    /// The server-side name, `OLLY_<id>`, without the terminating zero.
    pub name: Box<[u8]>,
    /// The Parse body after the name: `query\0`, parameter count and type OIDs.
    pub parse_rest: Bytes,
}

/// The process-wide table of shared statements, keyed by the Parse body after the name.
#[derive(Debug, Default)]
pub struct StatementCache {
    inner: Mutex<CacheInner>,
}

#[derive(Debug, Default)]
struct CacheInner {
    by_text: HashMap<Bytes, Weak<Statement>>,
    next_id: u64,
    /// Table size that triggers the next sweep of dead entries.
    sweep_at: usize,
}

/// Entries below this many are never swept (a sweep walks the whole table).
const SWEEP_MIN: usize = 1024;

impl StatementCache {
    /// The shared statement for this Parse body (`query\0` + types), made on first use.
    pub fn intern(&self, parse_rest: &[u8]) -> Arc<Statement> {
        let mut g = self.inner.lock();
        if let Some(st) = g.by_text.get(parse_rest).and_then(Weak::upgrade) {
            return st;
        }
        g.next_id += 1;
        let id = g.next_id;
        let st = Arc::new(Statement {
            id,
            name: format!("OLLY_{id}").into_bytes().into_boxed_slice(),
            parse_rest: Bytes::copy_from_slice(parse_rest),
        });
        g.by_text.insert(st.parse_rest.clone(), Arc::downgrade(&st));
        if g.by_text.len() >= g.sweep_at.max(SWEEP_MIN) {
            g.by_text.retain(|_, w| w.strong_count() > 0);
            // Amortised: the next sweep waits until the live set has doubled.
            g.sweep_at = g.by_text.len() * 2;
        }
        st
    }

    /// Entries in the table, live or not yet swept (tests).
    pub fn table_len(&self) -> usize {
        self.inner.lock().by_text.len()
    }
}

/// Hashes the pooler's own statement ids (a counter, never a client's bytes) with one
/// multiplication: every Bind of a tracked statement looks its id up on the server, and
/// SipHash's flood resistance buys nothing for keys no client chooses.
#[derive(Debug, Default, Clone, Copy)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Not used by u64 keys; any other input still hashes, byte by byte.
        for b in bytes {
            self.write_u64(u64::from(*b) ^ self.0.rotate_left(8));
        }
    }

    fn write_u64(&mut self, n: u64) {
        // Fibonacci hashing: the high bits (which the table's control bytes use) mix every
        // bit of a sequential id.
        self.0 = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// The statements one server has prepared, least recently used first out.
#[derive(Debug, Default)]
pub struct ServerStatements {
    /// id → (statement, last use tick).
    by_id: HashMap<u64, (Arc<Statement>, u64), BuildHasherDefault<IdHasher>>,
    tick: u64,
    /// Statements the server still holds under their name but that must not be used again
    /// (0A000 `cached plan must not change result type`): closed before the next Parse.
    stale: Vec<Arc<Statement>>,
}

impl ServerStatements {
    /// True when the server holds `id`; marks it used.
    pub fn touch(&mut self, id: u64) -> bool {
        self.tick += 1;
        let tick = self.tick;
        match self.by_id.get_mut(&id) {
            Some(e) => {
                e.1 = tick;
                true
            }
            None => false,
        }
    }

    /// True when the server holds `id`.
    pub fn contains(&self, id: u64) -> bool {
        self.by_id.contains_key(&id)
    }

    /// Records `st` as prepared; returns the statements evicted to stay within `cap`, which the
    /// caller must close on the server. More than one when the cap was lowered (SET or RELOAD)
    /// since the server filled up: PgBouncer shrinks the LRU to the new cap on the next insert.
    pub fn insert(&mut self, st: &Arc<Statement>, cap: usize) -> Vec<Arc<Statement>> {
        self.tick += 1;
        let mut evicted = Vec::new();
        if !self.by_id.contains_key(&st.id) && cap > 0 {
            while self.by_id.len() >= cap {
                // A linear walk: the cap is small (200 by default) and this runs once per eviction.
                let oldest = self
                    .by_id
                    .iter()
                    .min_by_key(|(_, (_, t))| *t)
                    .map(|(id, _)| *id);
                match oldest.and_then(|id| self.by_id.remove(&id)) {
                    Some((s, _)) => evicted.push(s),
                    None => break,
                }
            }
        }
        self.by_id.insert(st.id, (st.clone(), self.tick));
        evicted
    }

    /// The server does not hold `id` (its Parse failed or was skipped).
    pub fn remove(&mut self, id: u64) {
        self.by_id.remove(&id);
    }

    /// The server holds `id` but it must be re-prepared before its next use.
    pub fn mark_stale(&mut self, id: u64) {
        if let Some((st, _)) = self.by_id.remove(&id) {
            self.stale.push(st);
        }
    }

    /// `st` is still on the server under its name though not tracked (an eviction Close the
    /// server skipped): closed before the next Parse.
    pub fn push_stale(&mut self, st: Arc<Statement>) {
        if !self.by_id.contains_key(&st.id) {
            self.stale.push(st);
        }
    }

    /// The stale statements to close now.
    pub fn take_stale(&mut self) -> Vec<Arc<Statement>> {
        std::mem::take(&mut self.stale)
    }

    /// True when stale statements wait to be closed.
    pub fn has_stale(&self) -> bool {
        !self.stale.is_empty()
    }

    /// DEALLOCATE ALL / DISCARD ALL ran on the server.
    pub fn clear(&mut self) {
        self.by_id.clear();
        self.stale.clear();
    }

    /// Number of statements held (SHOW SERVERS prepared_statements).
    pub fn len(&self) -> usize {
        self.by_id.len() + self.stale.len()
    }

    /// True when none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_shares_by_text_and_forgets_unused() {
        let c = StatementCache::default();
        let a = c.intern(b"select 1\0\0\0");
        let b = c.intern(b"select 1\0\0\0");
        assert_eq!(a.id, b.id);
        assert_eq!(&*a.name, format!("OLLY_{}", a.id).as_bytes());
        let other = c.intern(b"select 1\0\0\x01\0\0\0\x17");
        assert_ne!(other.id, a.id, "parameter types are part of the key");
        drop((a, b, other));
        for i in 0..10_000 {
            let _ = c.intern(format!("select {i}\0\0\0").as_bytes());
        }
        assert!(c.table_len() < 2 * SWEEP_MIN + 2, "{}", c.table_len());
    }

    /// Sequential ids spread over the top bits the table probes by (hashbrown's control
    /// bytes): the first 128 ids get 128 distinct top-7-bit groups' worth of spread.
    #[test]
    fn id_hasher_spreads_sequential_ids() {
        let top = |id: u64| {
            let mut h = IdHasher::default();
            h.write_u64(id);
            h.finish() >> 57
        };
        let groups: std::collections::HashSet<u64> = (1..=128).map(top).collect();
        assert!(groups.len() > 100, "{} groups", groups.len());
        let mut sv = ServerStatements::default();
        let c = StatementCache::default();
        for i in 0..300 {
            let st = c.intern(format!("q{i}\0\0\0").as_bytes());
            sv.insert(&st, 1000);
            assert!(sv.touch(st.id));
        }
        assert_eq!(sv.len(), 300);
    }

    #[test]
    fn server_lru_evicts_least_recently_used() {
        let c = StatementCache::default();
        let s: Vec<_> = (0..3)
            .map(|i| c.intern(format!("q{i}\0\0\0").as_bytes()))
            .collect();
        let mut sv = ServerStatements::default();
        assert!(sv.insert(&s[0], 2).is_empty());
        assert!(sv.insert(&s[1], 2).is_empty());
        assert!(sv.touch(s[0].id));
        let ev = sv.insert(&s[2], 2);
        assert_eq!(ev.iter().map(|e| e.id).collect::<Vec<_>>(), [s[1].id]);
        assert!(sv.contains(s[0].id) && sv.contains(s[2].id) && sv.len() == 2);
        sv.mark_stale(s[0].id);
        assert!(!sv.contains(s[0].id) && sv.has_stale());
        assert_eq!(sv.take_stale().len(), 1);
        sv.clear();
        assert!(sv.is_empty());
    }
}
