//! The `stats_period` bookkeeping behind the `avg_*` columns: every period the live counters of
//! each pool are copied aside, and an average is (live − copy from the period before) divided by
//! the time since that copy, exactly as PgBouncer's `stats.c` does it. So SHOW STATS shows
//! non-zero averages right after traffic, and they cover between one and two periods.
//!
//! Owns only the copies and the arithmetic; it never touches a pool's counters (they stay
//! lock-free relaxed atomics on the hot path).

use std::collections::HashMap;
use std::time::Instant;

use parking_lot::Mutex;

use crate::pool::stats::{PoolStats, StatsSnapshot};
use crate::pool::PoolKey;

/// Averages over the last period. Counts and bytes are per second; the three `*_time_us`
/// fields are mean durations in µs (per transaction, per query, per server assignment).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Averages {
    pub server_assignment_count: u64,
    pub xact_count: u64,
    pub query_count: u64,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub xact_time_us: u64,
    pub query_time_us: u64,
    pub wait_time_us: u64,
    pub client_parse_count: u64,
    pub server_parse_count: u64,
    pub bind_count: u64,
    /// Logins per second.
    pub client_login_count: u64,
}

impl Averages {
    /// PgBouncer's `calc_average`: `cur` and `old` are counters `dur_us` apart.
    pub fn between(cur: &StatsSnapshot, old: &StatsSnapshot, dur_us: u64) -> Averages {
        if dur_us == 0 {
            return Averages::default();
        }
        let d = |c: u64, o: u64| c.saturating_sub(o);
        let per_sec = |n: u64| ((n as u128) * 1_000_000 / dur_us as u128) as u64;
        let mean = |total: u64, n: u64| total.checked_div(n).unwrap_or(0);
        let queries = d(cur.query_count, old.query_count);
        let xacts = d(cur.xact_count, old.xact_count);
        let assignments = d(cur.server_assignment_count, old.server_assignment_count);
        Averages {
            server_assignment_count: per_sec(assignments),
            xact_count: per_sec(xacts),
            query_count: per_sec(queries),
            bytes_received: per_sec(d(cur.bytes_received, old.bytes_received)),
            bytes_sent: per_sec(d(cur.bytes_sent, old.bytes_sent)),
            xact_time_us: mean(d(cur.xact_time_us, old.xact_time_us), xacts),
            query_time_us: mean(d(cur.query_time_us, old.query_time_us), queries),
            wait_time_us: mean(d(cur.wait_time_us, old.wait_time_us), assignments),
            client_parse_count: per_sec(d(cur.client_parse_count, old.client_parse_count)),
            server_parse_count: per_sec(d(cur.server_parse_count, old.server_parse_count)),
            bind_count: per_sec(d(cur.bind_count, old.bind_count)),
            client_login_count: per_sec(d(cur.client_login_count, old.client_login_count)),
        }
    }
}

/// The copies taken at the last two period boundaries.
struct Inner {
    /// When `older` was taken (the previous boundary).
    old_stamp: Instant,
    /// When `newer` was taken (the last boundary).
    new_stamp: Instant,
    /// Counters per pool at `old_stamp`; a pool missing here counts from zero.
    older: HashMap<PoolKey, StatsSnapshot>,
    /// Counters per pool at `new_stamp`.
    newer: HashMap<PoolKey, StatsSnapshot>,
}

/// Shared by the stats task (writes once per period) and SHOW / scrapes (read).
pub struct StatsPeriod {
    /// Short critical sections only: a map swap or a few lookups, never held across `.await`.
    inner: Mutex<Inner>,
    /// Counters of the console's own (virtual) pool: each console statement is one query and
    /// one transaction, as PgBouncer counts them on database `pgbouncer`. Relaxed atomics.
    pub console: PoolStats,
}

impl Default for StatsPeriod {
    fn default() -> Self {
        let now = Instant::now();
        StatsPeriod {
            inner: Mutex::new(Inner {
                // As PgBouncer: the first average divides by at least one second.
                old_stamp: now
                    .checked_sub(std::time::Duration::from_secs(1))
                    .unwrap_or(now),
                new_stamp: now,
                older: HashMap::new(),
                newer: HashMap::new(),
            }),
            console: PoolStats::default(),
        }
    }
}

impl StatsPeriod {
    /// A period boundary: `now` holds every pool's counters at this moment.
    pub fn rotate(&self, now: HashMap<PoolKey, StatsSnapshot>) {
        let mut st = self.inner.lock();
        st.old_stamp = st.new_stamp;
        st.new_stamp = Instant::now();
        st.older = std::mem::replace(&mut st.newer, now);
    }

    /// Counters of `pool` at the previous boundary, and µs since then.
    pub fn baseline(&self, pool: &PoolKey) -> (StatsSnapshot, u64) {
        let st = self.inner.lock();
        let old = st.older.get(pool).copied().unwrap_or_default();
        (old, st.old_stamp.elapsed().as_micros() as u64)
    }

    /// µs since the previous boundary (the divisor of every average right now).
    pub fn elapsed_us(&self) -> u64 {
        self.inner.lock().old_stamp.elapsed().as_micros() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(xacts: u64, queries: u64, xact_time: u64, query_time: u64) -> StatsSnapshot {
        StatsSnapshot {
            xact_count: xacts,
            query_count: queries,
            xact_time_us: xact_time,
            query_time_us: query_time,
            ..Default::default()
        }
    }

    #[test]
    fn counts_are_per_second_and_times_are_means() {
        let old = snap(10, 20, 1_000, 2_000);
        let mut cur = snap(30, 60, 5_000, 6_000);
        cur.bytes_received = 4_000;
        cur.server_assignment_count = 4;
        cur.wait_time_us = 400;
        let avg = Averages::between(&cur, &old, 2_000_000);
        assert_eq!(avg.xact_count, 10);
        assert_eq!(avg.query_count, 20);
        assert_eq!(avg.bytes_received, 2_000);
        assert_eq!(avg.server_assignment_count, 2);
        assert_eq!(avg.xact_time_us, 200);
        assert_eq!(avg.query_time_us, 100);
        assert_eq!(avg.wait_time_us, 100);
        assert_eq!(avg.client_login_count, 0);
        cur.client_login_count = 6;
        assert_eq!(
            Averages::between(&cur, &old, 2_000_000).client_login_count,
            3
        );
    }

    #[test]
    fn nothing_happened_gives_zeros() {
        let s = snap(5, 5, 5, 5);
        assert_eq!(Averages::between(&s, &s, 1_000_000), Averages::default());
        assert_eq!(Averages::between(&s, &s, 0), Averages::default());
    }

    #[test]
    fn rotation_moves_the_baseline() {
        let p = StatsPeriod::default();
        let key = PoolKey {
            db: "d".into(),
            user: "u".into(),
        };
        assert_eq!(p.baseline(&key).0, StatsSnapshot::default());
        p.rotate(HashMap::from([(key.clone(), snap(1, 1, 1, 1))]));
        assert_eq!(p.baseline(&key).0, StatsSnapshot::default());
        p.rotate(HashMap::from([(key.clone(), snap(2, 2, 2, 2))]));
        assert_eq!(p.baseline(&key).0, snap(1, 1, 1, 1));
    }
}
