//! A place in the pool for a replication connection (PgBouncer 1.23+: replication clients count
//! against pool_size and may evict an idle server to get in). The replication server itself is
//! never pooled: the session opens and closes it; the pool only books its place, so pool_size,
//! max_db_connections and max_user_connections see it. A child of `pool` for its private state.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::Pool;
use crate::error::{Error, Result};

/// How often a replication client looks again for a free place while the pool is full.
const RETRY: Duration = Duration::from_millis(50);

/// A booked place; given back on drop.
pub struct ReplicationSlot(Arc<Pool>);

impl Drop for ReplicationSlot {
    fn drop(&mut self) {
        let pool = &self.0;
        let mut st = pool.state.lock();
        st.total -= 1;
        pool.release_counts(1);
        // A client queued for an ordinary server may fit now.
        pool.maybe_launch(&mut st, false);
    }
}

impl Pool {
    /// Books a place for a replication connection: a free one under the limits, else the place
    /// of an idle server, which is closed (`evicted for pool_size`). When every place is in use
    /// it waits for one, up to query_wait_timeout.
    pub async fn replication_slot(self: &Arc<Self>) -> Result<ReplicationSlot> {
        let started = Instant::now();
        loop {
            let limit = {
                let mut st = self.state.lock();
                let s = st.settings.clone();
                let pool_full = s.pool_size != 0 && st.total >= s.pool_size;
                let db_full = s.max_db_connections != 0
                    && self.db_conns.load(Ordering::Relaxed) >= s.max_db_connections;
                let user_full = s.max_user_connections != 0
                    && self.user_conns.load(Ordering::Relaxed) >= s.max_user_connections;
                if !pool_full && !db_full && !user_full {
                    st.total += 1;
                    self.db_conns.fetch_add(1, Ordering::Relaxed);
                    self.user_conns.fetch_add(1, Ordering::Relaxed);
                    return Ok(ReplicationSlot(self.clone()));
                }
                if !st.idle.is_empty() {
                    // Idle servers make room, as many as it takes to get under pool_size (a
                    // pool over it through the reserve loses more than one, as in PgBouncer);
                    // the last freed place becomes ours.
                    let mut evicted = Vec::new();
                    while let Some(conn) = st.idle.pop_front() {
                        st.total -= 1;
                        self.release_counts(1);
                        evicted.push(conn);
                        if s.pool_size == 0 || st.total < s.pool_size {
                            break;
                        }
                    }
                    st.total += 1;
                    self.db_conns.fetch_add(1, Ordering::Relaxed);
                    self.user_conns.fetch_add(1, Ordering::Relaxed);
                    drop(st);
                    for conn in evicted {
                        if s.log_disconnections {
                            self.log_close(&conn, "evicted for pool_size");
                        }
                    }
                    return Ok(ReplicationSlot(self.clone()));
                }
                s.query_wait_timeout
            };
            if !limit.is_zero() && started.elapsed() >= limit {
                return Err(Error::QueryWaitTimeout);
            }
            tokio::time::sleep(RETRY).await;
        }
    }
}
