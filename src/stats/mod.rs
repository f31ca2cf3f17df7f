//! Statistics over time: the task that marks a `stats_period` boundary (for the `avg_*` columns of
//! SHOW STATS) and writes PgBouncer's periodic `stats:` log line, and the shared read-only views
//! SHOW and /metrics are both built from.
//!
//! Reads the pools' counters; never writes them.

pub mod clusters;
mod period;
pub mod view;

pub use period::{Averages, StatsPeriod};

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::context::Context;

/// Marks a period boundary every `stats_period` (re-read each time, so SET/RELOAD apply) and
/// logs the averages when `log_stats` is on. Ends at shutdown.
pub async fn run(ctx: Arc<Context>) {
    loop {
        let period = ctx
            .config()
            .general
            .stats_period
            .max(Duration::from_secs(1));
        tokio::select! {
            _ = ctx.shutdown.cancelled() => return,
            _ = tokio::time::sleep(period) => {}
        }
        rotate(&ctx);
        if ctx.config().general.log_stats {
            let (_, avg) = view::stats_overall(&ctx);
            tracing::info!("{}", log_line(&avg));
        }
    }
}

/// Copies every pool's counters aside as the new period's baseline.
pub fn rotate(ctx: &Context) {
    let mut now: HashMap<_, _> = ctx
        .pools
        .all()
        .iter()
        .map(|p| (p.key.clone(), p.stats.snapshot()))
        .collect();
    now.insert(view::console_pool(), ctx.stats.console.snapshot());
    ctx.stats.rotate(now);
}

/// PgBouncer's line, word for word, so log scrapers keep working.
pub fn log_line(avg: &Averages) -> String {
    format!(
        "stats: {} xacts/s, {} queries/s, {} client parses/s, {} server parses/s, {} binds/s, \
         in {} B/s, out {} B/s, xact {} us, query {} us, wait {} us",
        avg.xact_count,
        avg.query_count,
        avg.client_parse_count,
        avg.server_parse_count,
        avg.bind_count,
        avg.bytes_received,
        avg.bytes_sent,
        avg.xact_time_us,
        avg.query_time_us,
        avg.wait_time_us
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_line_matches_pgbouncer() {
        let avg = Averages {
            xact_count: 1,
            query_count: 2,
            bytes_received: 3,
            bytes_sent: 4,
            xact_time_us: 5,
            query_time_us: 6,
            wait_time_us: 7,
            ..Default::default()
        };
        assert_eq!(
            log_line(&avg),
            "stats: 1 xacts/s, 2 queries/s, 0 client parses/s, 0 server parses/s, 0 binds/s, \
             in 3 B/s, out 4 B/s, xact 5 us, query 6 us, wait 7 us"
        );
    }
}
