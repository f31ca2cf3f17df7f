//! One scrape: read the views, record them into a fresh `metrics-exporter-prometheus` recorder,
//! render the text format. A fresh recorder per scrape means a pool or database that went away
//! leaves no stale series, as with pgbouncer_exporter, and no global recorder is installed.
//!
//! Float counters: the `metrics` crate's counters are integers, but the exporter's duration
//! counters are fractional seconds. Those are recorded as gauges and their `# TYPE` line is
//! switched to `counter` after rendering ([`FLOAT_COUNTERS`]).

use metrics::{describe_counter, describe_gauge, Label};
use metrics_exporter_prometheus::PrometheusBuilder;

use super::*;
use crate::admin::PGBOUNCER_VERSION;
use crate::context::{Context, Phase};
use crate::stats::view;

/// Counters whose values are seconds (µs × 1e-6).
const FLOAT_COUNTERS: [&str; 3] = [STATS_QUERIES_DURATION, STATS_CLIENT_WAIT, STATS_IN_XACT];

/// The whole /metrics body.
pub fn render(ctx: &Context) -> String {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::with_local_recorder(&recorder, || {
        describe();
        record(ctx);
    });
    let mut text = handle.render();
    for name in FLOAT_COUNTERS {
        text = text.replace(
            &format!("# TYPE {name} gauge\n"),
            &format!("# TYPE {name} counter\n"),
        );
    }
    text
}

pub(super) fn gauge(name: &'static str, labels: &[Label], value: f64) {
    metrics::gauge!(name, labels.to_vec()).set(value);
}

pub(super) fn counter(name: &'static str, labels: &[Label], value: u64) {
    metrics::counter!(name, labels.to_vec()).absolute(value);
}

pub(super) fn label(k: &'static str, v: impl Into<String>) -> Label {
    Label::new(k, v.into())
}

fn record(ctx: &Context) {
    gauge(UP, &[], 1.0);
    gauge(VERSION_INFO, &[label("version", PGBOUNCER_VERSION)], 1.0);
    gauge(
        OWN_INFO,
        &[label("version", env!("CARGO_PKG_VERSION"))],
        1.0,
    );
    gauge(
        OWN_SHUTTING_DOWN,
        &[],
        f64::from(u8::from(ctx.phase() != Phase::Running)),
    );
    gauge(OWN_PAUSED, &[], f64::from(u8::from(ctx.paused_all())));

    for d in view::stats_per_database(ctx) {
        let l = [label("database", d.database)];
        let t = &d.totals;
        counter(STATS_QUERIES_POOLED, &l, t.query_count);
        gauge(STATS_QUERIES_DURATION, &l, t.query_time_us as f64 / 1e6);
        counter(STATS_RECEIVED_BYTES, &l, t.bytes_received);
        counter(STATS_SENT_BYTES, &l, t.bytes_sent);
        gauge(STATS_CLIENT_WAIT, &l, t.wait_time_us as f64 / 1e6);
        counter(STATS_XACTS_POOLED, &l, t.xact_count);
        gauge(STATS_IN_XACT, &l, t.xact_time_us as f64 / 1e6);
        counter(STATS_CLIENT_PARSES, &l, t.client_parse_count);
        counter(STATS_SERVER_PARSES, &l, t.server_parse_count);
        counter(STATS_BINDS, &l, t.bind_count);
        counter(OWN_SERVER_ASSIGNMENTS, &l, t.server_assignment_count);
        counter(OWN_CLIENT_LOGINS, &l, t.client_login_count);
    }

    for p in view::pools(ctx) {
        let l = [label("database", p.database), label("user", p.user)];
        for (name, v) in [
            (POOLS_CL_ACTIVE, p.cl_active),
            (POOLS_CL_WAITING, p.cl_waiting),
            (POOLS_CL_ACTIVE_CANCEL, 0),
            (POOLS_CL_WAITING_CANCEL, 0),
            (POOLS_SV_ACTIVE, p.sv_active),
            (POOLS_SV_ACTIVE_CANCEL, 0),
            (POOLS_SV_BEING_CANCELED, p.sv_being_canceled),
            (POOLS_SV_IDLE, p.sv_idle),
            (POOLS_SV_USED, p.sv_used),
            (POOLS_SV_TESTED, p.sv_tested),
            (POOLS_SV_LOGIN, p.sv_login),
            (OWN_SV_CLOSE_NEEDED, p.sv_close_needed),
        ] {
            gauge(name, &l, f64::from(v));
        }
        gauge(POOLS_MAXWAIT, &l, p.maxwait_us as f64 / 1e6);
    }

    for d in view::databases(ctx) {
        let l = [
            label("name", d.name),
            label("host", d.host.unwrap_or_default()),
            label("port", d.port.to_string()),
            label("database", d.database),
            label("force_user", d.force_user.unwrap_or_default()),
            label("pool_mode", d.pool_mode.unwrap_or_default()),
        ];
        gauge(DB_POOL_SIZE, &l, f64::from(d.pool_size));
        gauge(DB_RESERVE_POOL, &l, f64::from(d.reserve_pool_size));
        gauge(DB_MAX_CONNECTIONS, &l, f64::from(d.max_connections));
        gauge(DB_CURRENT_CONNECTIONS, &l, f64::from(d.current_connections));
        gauge(DB_PAUSED, &l, f64::from(u8::from(d.paused)));
        gauge(DB_DISABLED, &l, f64::from(u8::from(d.disabled)));
        gauge(
            OWN_DB_CLIENT_CONNECTIONS,
            &l,
            f64::from(d.current_client_connections),
        );
    }

    let lists = view::lists(ctx);
    for (row, name) in LISTS {
        let v = lists.iter().find(|(r, _)| r == row).map_or(0, |(_, n)| *n);
        gauge(name, &[], v as f64);
    }

    let cfg = ctx.config();
    gauge(
        CONFIG_MAX_CLIENT_CONN,
        &[],
        f64::from(cfg.general.max_client_conn),
    );
    gauge(
        CONFIG_MAX_USER_CONN,
        &[],
        f64::from(cfg.general.max_user_connections),
    );
    super::patroni::record(ctx);
}

/// HELP lines (pgbouncer_exporter's wording where it has one).
fn describe() {
    describe_gauge!(UP, "The pgbouncer scrape was successful");
    describe_gauge!(VERSION_INFO, "The pgbouncer version info");
    describe_gauge!(OWN_INFO, "ollyscale-pooler build info");
    describe_gauge!(OWN_SHUTTING_DOWN, "1 while the pooler drains or stops");
    describe_gauge!(OWN_PAUSED, "1 while PAUSE (all databases) is in force");
    describe_counter!(STATS_QUERIES_POOLED, "Total number of SQL queries pooled");
    describe_gauge!(
        STATS_QUERIES_DURATION,
        "Total number of seconds spent by pgbouncer when actively connected to PostgreSQL, executing queries"
    );
    describe_counter!(
        STATS_RECEIVED_BYTES,
        "Total volume in bytes of network traffic received by pgbouncer, shown as bytes"
    );
    describe_counter!(
        STATS_SENT_BYTES,
        "Total volume in bytes of network traffic sent by pgbouncer, shown as bytes"
    );
    describe_gauge!(
        STATS_CLIENT_WAIT,
        "Time spent by clients waiting for a server in seconds"
    );
    describe_counter!(
        STATS_XACTS_POOLED,
        "Total number of SQL transactions pooled"
    );
    describe_gauge!(
        STATS_IN_XACT,
        "Total number of seconds spent by pgbouncer when connected to PostgreSQL in a transaction, either idle in transaction or executing queries"
    );
    describe_counter!(
        STATS_CLIENT_PARSES,
        "Total number of prepared statements created by clients"
    );
    describe_counter!(
        STATS_SERVER_PARSES,
        "Total number of prepared statements created on a server"
    );
    describe_counter!(
        STATS_BINDS,
        "Total number of prepared statements readied for execution by clients"
    );
    describe_counter!(
        OWN_SERVER_ASSIGNMENTS,
        "Total number of times a server was assigned to a client"
    );
    describe_counter!(
        OWN_CLIENT_LOGINS,
        "Total number of clients that logged in (passed authentication)"
    );
    describe_gauge!(POOLS_CL_ACTIVE, "Client connections linked to server connection and able to process queries, shown as connection");
    describe_gauge!(
        POOLS_CL_WAITING,
        "Client connections waiting on a server connection, shown as connection"
    );
    describe_gauge!(
        POOLS_CL_ACTIVE_CANCEL,
        "Client connections that have forwarded query cancellations to the server"
    );
    describe_gauge!(
        POOLS_CL_WAITING_CANCEL,
        "Client connections that have not forwarded query cancellations to the server yet"
    );
    describe_gauge!(
        POOLS_SV_ACTIVE,
        "Server connections linked to a client connection, shown as connection"
    );
    describe_gauge!(
        POOLS_SV_ACTIVE_CANCEL,
        "Server connections currently forwarding a cancel request"
    );
    describe_gauge!(POOLS_SV_BEING_CANCELED, "Servers that normally could become idle but are waiting to do so until all in-flight cancel requests have completed");
    describe_gauge!(
        POOLS_SV_IDLE,
        "Server connections idle and ready for a client query, shown as connection"
    );
    describe_gauge!(POOLS_SV_USED, "Server connections idle more than server_check_delay, needing server_check_query, shown as connection");
    describe_gauge!(POOLS_SV_TESTED, "Server connections currently running either server_reset_query or server_check_query, shown as connection");
    describe_gauge!(
        POOLS_SV_LOGIN,
        "Server connections currently in the process of logging in, shown as connection"
    );
    describe_gauge!(
        POOLS_MAXWAIT,
        "Age of oldest unserved client connection, shown as second"
    );
    describe_gauge!(
        OWN_SV_CLOSE_NEEDED,
        "Server connections that will close when released (RECONNECT, config change)"
    );
    describe_gauge!(DB_POOL_SIZE, "Maximum number of server connections");
    describe_gauge!(
        DB_RESERVE_POOL,
        "Maximum number of additional connections for this database"
    );
    describe_gauge!(
        DB_MAX_CONNECTIONS,
        "Maximum number of allowed connections for this database"
    );
    describe_gauge!(
        DB_CURRENT_CONNECTIONS,
        "Current number of connections for this database"
    );
    describe_gauge!(DB_PAUSED, "1 if this database is currently paused, else 0");
    describe_gauge!(
        DB_DISABLED,
        "1 if this database is currently disabled, else 0"
    );
    describe_gauge!(
        OWN_DB_CLIENT_CONNECTIONS,
        "Current number of client connections for this database"
    );
    for (row, name) in LISTS {
        describe_gauge!(*name, format!("Count of {row} (SHOW LISTS)"));
    }
    describe_gauge!(
        CONFIG_MAX_CLIENT_CONN,
        "Config maximum number of client connections"
    );
    describe_gauge!(
        CONFIG_MAX_USER_CONN,
        "Config maximum number of server connections per user"
    );
    super::patroni::describe();
}
