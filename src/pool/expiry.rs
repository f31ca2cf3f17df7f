//! Freeing what nobody uses (PgBouncer's janitor): a pool set with no client and no server for
//! `pool_idle_timeout` (PgBouncer 1.26) is dropped from the registry, and a database made from
//! the `*` entry whose pools are all like that for `autodb_idle_timeout` loses every pool, so it
//! is gone from SHOW DATABASES / SHOW POOLS until a client names it again. A paused database
//! and a forced-user pool that keeps `min_pool_size` are kept, as PgBouncer keeps them.
//!
//! "No client" is read from the set's reference count: every logged-in client holds its set
//! through its route, and a login takes it from the map under the shard lock that `remove_if`
//! checks under, so a set is never dropped under a client that is logging in.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::time::Instant;

use super::{PoolKey, PoolSet, Pools};
use crate::config::Config;

/// When each unused set and auto-database was first seen unused.
#[derive(Default)]
pub(super) struct IdleSince {
    sets: Mutex<HashMap<PoolKey, Instant>>,
    autodbs: Mutex<HashMap<String, Instant>>,
}

/// No client holds the set (only the registry does), and none of its pools has a server, a
/// connect in flight or a queued client, and nothing pauses it.
fn unused(set: &Arc<PoolSet>) -> bool {
    Arc::strong_count(set) == 1
        && set.pools().iter().all(|p| {
            let s = p.snapshot();
            p.total() == 0 && s.waiting == 0 && !s.paused
        })
}

impl Pools {
    /// One pass: note what became unused, forget what is used again, drop what stayed unused
    /// past its timeout. Called by the janitor about once a second.
    pub fn expire_unused(&self, cfg: &Config, now: Instant) {
        let g = &cfg.general;
        // Read without cloning the sets (a clone would count as a user).
        let mut state: Vec<(PoolKey, bool, bool)> = self
            .map
            .iter()
            .map(|e| {
                let set = e.value();
                let keeps_min = set.settings().forced_user && set.settings().min_pool_size > 0;
                (e.key().clone(), unused(set), keeps_min)
            })
            .collect();
        state.sort();
        let auto = |db: &str| !cfg.databases.contains_key(db) && cfg.fallback_database.is_some();
        let mut db_unused: HashMap<&str, bool> = HashMap::new();
        for (key, idle, _) in &state {
            if auto(&key.db) {
                *db_unused.entry(key.db.as_str()).or_insert(true) &= *idle;
            }
        }
        {
            let mut since = self.idle.autodbs.lock();
            since.retain(|db, _| db_unused.get(db.as_str()) == Some(&true));
            for (db, idle) in &db_unused {
                if *idle {
                    since.entry(db.to_string()).or_insert(now);
                }
            }
        }
        let timeout = g.autodb_idle_timeout;
        let due: Vec<String> = self
            .idle
            .autodbs
            .lock()
            .iter()
            .filter(|(_, t)| !timeout.is_zero() && now.duration_since(**t) >= timeout)
            .map(|(db, _)| db.clone())
            .collect();
        for db in due {
            let keys: Vec<PoolKey> = state
                .iter()
                .filter(|(k, _, _)| k.db == db)
                .map(|(k, _, _)| k.clone())
                .collect();
            if keys
                .iter()
                .all(|k| self.map.remove_if(k, |_, s| unused(s)).is_some())
            {
                tracing::info!(
                    "database {}: auto-database unused for {timeout:?}, dropped",
                    crate::logsafe::Clean(&db)
                );
            }
            self.idle.autodbs.lock().remove(&db);
        }
        let timeout = g.pool_idle_timeout;
        let mut since = self.idle.sets.lock();
        since.retain(|k, _| state.iter().any(|(k2, idle, _)| k2 == k && *idle));
        if timeout.is_zero() {
            since.clear();
            return;
        }
        for (key, idle, keeps_min) in &state {
            if !*idle || *keeps_min {
                continue;
            }
            let t = *since.entry(key.clone()).or_insert(now);
            if now.duration_since(t) >= timeout
                && self.map.remove_if(key, |_, s| unused(s)).is_some()
            {
                tracing::info!("{key}: pool unused for {timeout:?}, freed");
                since.remove(key);
            }
        }
    }
}
