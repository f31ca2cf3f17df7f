//! Per-pool counters: what SHOW STATS and /metrics read. Relaxed atomics, so the hot path pays no
//! lock and no allocation to update them.

use std::sync::atomic::{AtomicU64, Ordering};

/// Cumulative counters of one pool (times in microseconds).
#[derive(Debug, Default)]
pub struct PoolStats {
    pub server_assignment_count: AtomicU64,
    pub xact_count: AtomicU64,
    pub query_count: AtomicU64,
    pub bytes_received: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub xact_time_us: AtomicU64,
    pub query_time_us: AtomicU64,
    pub wait_time_us: AtomicU64,
    pub client_parse_count: AtomicU64,
    pub server_parse_count: AtomicU64,
    pub bind_count: AtomicU64,
    /// Clients that passed authentication for this pool (PgBouncer 1.26 `client_login_count`).
    pub client_login_count: AtomicU64,
}

/// A plain copy of the counters at one moment.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StatsSnapshot {
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
    pub client_login_count: u64,
}

impl PoolStats {
    /// Adds `n` to a counter.
    #[inline]
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Reads every counter.
    pub fn snapshot(&self) -> StatsSnapshot {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            server_assignment_count: r(&self.server_assignment_count),
            xact_count: r(&self.xact_count),
            query_count: r(&self.query_count),
            bytes_received: r(&self.bytes_received),
            bytes_sent: r(&self.bytes_sent),
            xact_time_us: r(&self.xact_time_us),
            query_time_us: r(&self.query_time_us),
            wait_time_us: r(&self.wait_time_us),
            client_parse_count: r(&self.client_parse_count),
            server_parse_count: r(&self.server_parse_count),
            bind_count: r(&self.bind_count),
            client_login_count: r(&self.client_login_count),
        }
    }
}

impl StatsSnapshot {
    /// Element-wise sum (per-database rows of SHOW STATS).
    pub fn add(&mut self, o: &StatsSnapshot) {
        self.server_assignment_count += o.server_assignment_count;
        self.xact_count += o.xact_count;
        self.query_count += o.query_count;
        self.bytes_received += o.bytes_received;
        self.bytes_sent += o.bytes_sent;
        self.xact_time_us += o.xact_time_us;
        self.query_time_us += o.query_time_us;
        self.wait_time_us += o.wait_time_us;
        self.client_parse_count += o.client_parse_count;
        self.server_parse_count += o.server_parse_count;
        self.bind_count += o.bind_count;
        self.client_login_count += o.client_login_count;
    }
}

/// What one transaction did, as the session counted it; booked on the pool in one call
/// ([`crate::pool::Lease::record`]).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct XactTally {
    /// Bytes read from the client.
    pub bytes_from_client: u64,
    /// Bytes written to the client.
    pub bytes_to_client: u64,
    /// Queries (simple Query or extended Sync) answered.
    pub queries: u64,
    /// Time spent in those queries, µs.
    pub query_time_us: u64,
    /// SQL transactions completed (ReadyForQuery back to idle), autocommit statements included.
    pub xacts: u64,
    /// Time those transactions took, µs.
    pub xact_time_us: u64,
    /// Parse messages the client sent.
    pub client_parses: u64,
    /// Parse messages sent to servers (the client's and injected ones).
    pub server_parses: u64,
    /// Bind messages.
    pub binds: u64,
}

impl PoolStats {
    /// Adds one transaction's tally.
    pub fn record_xact(&self, t: &XactTally) {
        Self::add(&self.bytes_received, t.bytes_from_client);
        Self::add(&self.bytes_sent, t.bytes_to_client);
        Self::add(&self.query_count, t.queries);
        Self::add(&self.query_time_us, t.query_time_us);
        Self::add(&self.xact_count, t.xacts);
        Self::add(&self.xact_time_us, t.xact_time_us);
        Self::add(&self.client_parse_count, t.client_parses);
        Self::add(&self.server_parse_count, t.server_parses);
        Self::add(&self.bind_count, t.binds);
    }
}
