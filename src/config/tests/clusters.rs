//! `[clusters]`, the `cluster=`/`role=` database keys and the Patroni `[pgbouncer]` keys.

use std::time::Duration;

use super::{errors, general, general_error, one_error, parse};
use crate::config::{PatroniUrl, Role};

const ISSUE_EXAMPLE: &str = "\
[clusters]
ollyscale-db = patroni=http://10.0.0.1:8008,http://10.0.0.2:8008
; or one DNS name that resolves to every member
other = patroni=http://ollyscale-db-api:8008
[databases]
ollyscale    = cluster=ollyscale-db role=primary dbname=ollyscale
ollyscale_ro = cluster=ollyscale-db role=replica dbname=ollyscale
plain        = cluster=other dbname=app user=app password=secret pool_size=5
";

fn url(host: &str, port: u16) -> PatroniUrl {
    PatroniUrl {
        host: host.into(),
        port,
    }
}

#[test]
fn the_issue_example_parses() {
    let cfg = parse(ISSUE_EXAMPLE);
    let c = &cfg.clusters["ollyscale-db"];
    assert_eq!(c.name, "ollyscale-db");
    assert_eq!(
        c.patroni,
        vec![url("10.0.0.1", 8008), url("10.0.0.2", 8008)]
    );
    assert_eq!(
        cfg.clusters["other"].patroni,
        vec![url("ollyscale-db-api", 8008)]
    );
    let rw = &cfg.databases["ollyscale"];
    assert_eq!(rw.cluster.as_deref(), Some("ollyscale-db"));
    assert_eq!(rw.role, Some(Role::Primary));
    assert_eq!(rw.host, None);
    assert_eq!(rw.dbname.as_deref(), Some("ollyscale"));
    assert_eq!(cfg.databases["ollyscale_ro"].role, Some(Role::Replica));
    // No role: the default (primary) is the pool side's reading of None.
    let plain = &cfg.databases["plain"];
    assert_eq!(plain.role, None);
    assert_eq!(plain.role.unwrap_or_default(), Role::Primary);
    assert_eq!(plain.user.as_deref(), Some("app"));
    assert_eq!(plain.password.as_deref(), Some("secret"));
    assert_eq!(plain.pool_size, Some(5));
}

#[test]
fn clusters_may_come_after_databases_and_roles_parse_in_any_case() {
    let cfg = parse(
        "[databases]\n\
         a = cluster=c role=SYNC\n\
         b = cluster=c role=Any\n\
         * = cluster=c role=replica\n\
         [clusters]\n\
         c = patroni=http://[::1]:28008/patroni\n",
    );
    assert_eq!(cfg.databases["a"].role, Some(Role::Sync));
    assert_eq!(cfg.databases["b"].role, Some(Role::Any));
    let fallback = cfg.fallback_database.expect("* entry");
    assert_eq!(fallback.cluster.as_deref(), Some("c"));
    assert_eq!(cfg.clusters["c"].patroni, vec![url("::1", 28008)]);
    assert_eq!(
        cfg.clusters["c"].patroni[0].to_string(),
        "http://[::1]:28008"
    );
}

#[test]
fn unknown_cluster_names_file_line_and_database() {
    let e = one_error(
        "[clusters]\n\
         known = patroni=http://127.0.0.1:8008\n\
         [databases]\n\
         ok = cluster=known\n\
         bad = cluster=nosuch dbname=x\n",
    );
    assert_eq!(
        e.to_string(),
        "test.ini:5: bad: cluster: no cluster named \"nosuch\" in [clusters]"
    );
    // A later entry of the same name replaces the broken one: no error.
    parse(
        "[clusters]\nk = patroni=http://h:1\n[databases]\n\
         x = cluster=nosuch\nx = cluster=k\n",
    );
}

#[test]
fn a_cluster_database_takes_no_host_or_port() {
    let e = one_error(
        "[clusters]\nc = patroni=http://h:8008\n[databases]\n\
         db = cluster=c host=10.0.0.9 dbname=x\n",
    );
    assert_eq!(e.line, 4);
    assert_eq!(e.key, "db");
    assert!(e.message.starts_with("host: a cluster= database"), "{e}");
    let e =
        one_error("[clusters]\nc = patroni=http://h:8008\n[databases]\ndb = cluster=c port=5433\n");
    assert!(e.message.starts_with("port: a cluster= database"), "{e}");
    let e = one_error("[databases]\ndb = host=h role=replica\n");
    assert_eq!(
        e.message,
        "role: only a cluster= database has a role; add cluster=<name>"
    );
}

#[test]
fn bad_roles_and_cluster_entries() {
    let cases: &[(&str, &str)] = &[
        (
            "[clusters]\nc = patroni=http://h:8008\n[databases]\nd = cluster=c role=master\n",
            "role: expected primary, replica, sync or any, got \"master\"",
        ),
        (
            "[clusters]\nc = patroni=https://h:8008\n",
            "patroni: https is not supported for the Patroni API (no TLS client); use http://host:port",
        ),
        (
            "[clusters]\nc = patroni=h:8008\n",
            "patroni: expected http://host:port, got \"h:8008\"",
        ),
        (
            "[clusters]\nc = patroni=http://h\n",
            "patroni: the Patroni URL needs a port (usually 8008): \"http://h\"",
        ),
        (
            "[clusters]\nc = patroni=http://h:0\n",
            "patroni: expected a port number from 1 to 65535 in \"http://h:0\"",
        ),
        (
            "[clusters]\nc = patroni=http://h:99999\n",
            "patroni: expected a port number from 1 to 65535 in \"http://h:99999\"",
        ),
        (
            "[clusters]\nc = patroni=http://user:pw@h:8008\n",
            "patroni: user names or passwords in the Patroni URL are not supported",
        ),
        (
            "[clusters]\nc = patroni=http://a:b:8008\n",
            "patroni: expected http://host:port, got \"http://a:b:8008\"",
        ),
        (
            "[clusters]\nc = patroni=http://[::1:8008\n",
            "patroni: unterminated [IPv6 address] in the Patroni URL",
        ),
        (
            "[clusters]\nc = patroni=http://:8008\n",
            "patroni: expected http://host:port, got \"http://:8008\"",
        ),
        (
            "[clusters]\nc = patroni=,\n",
            "patroni: expected patroni=http://host:port[,http://host:port...]",
        ),
        (
            "[clusters]\nc = dbname=x\n",
            "unrecognized cluster parameter: dbname (expected patroni=http://host:port,...)",
        ),
        (
            "[clusters]\n* = patroni=http://h:1\n",
            "a cluster needs a name (\"*\" is not one)",
        ),
    ];
    for (text, want) in cases {
        let e = one_error(text);
        assert_eq!(e.message, *want, "{text}");
        assert_eq!(e.file, "test.ini");
    }
    // Every problem is reported at once, each with its line.
    let errs = errors(
        "[clusters]\na = patroni=ftp://x:1\nb = patroni=http://y\n[databases]\nd = cluster=a\n",
    );
    let lines: Vec<usize> = errs.iter().map(|e| e.line).collect();
    // d refers to `a`, which failed to parse: reported as unknown too.
    assert_eq!(lines, vec![2, 3, 5], "{errs:#?}");
}

#[test]
fn urls_keep_order_drop_duplicates_and_ignore_paths() {
    let cfg = parse(
        "[clusters]\nc = patroni='http://b:1/patroni, http://a:2,http://b:1/,HTTP://c:3?x'\n",
    );
    assert_eq!(
        cfg.clusters["c"].patroni,
        vec![url("b", 1), url("a", 2), url("c", 3)]
    );
}

#[test]
fn patroni_general_keys() {
    let g = general("");
    assert_eq!(g.patroni_poll_interval, Duration::from_secs(1));
    assert_eq!(g.patroni_timeout, Duration::from_secs(2));
    assert_eq!(g.max_replica_lag, 1024 * 1024);
    assert_eq!(g.failover_hold_timeout, Duration::from_secs(30));
    let g = general(
        "patroni_poll_interval = 0.25\npatroni_timeout = 5\nmax_replica_lag = 0\n\
         failover_hold_timeout = 0",
    );
    assert_eq!(g.patroni_poll_interval, Duration::from_millis(250));
    assert_eq!(g.patroni_timeout, Duration::from_secs(5));
    assert_eq!(g.max_replica_lag, 0);
    assert_eq!(g.failover_hold_timeout, Duration::ZERO);
    // In effect since the pools follow Patroni: no longer reported as unimplemented.
    let cfg = parse(
        "[pgbouncer]\nmax_replica_lag = 5\npatroni_timeout = 3\nfailover_hold_timeout = 9\n\
         replica_fallback = none\n",
    );
    assert!(cfg.unimplemented_keys.is_empty());
    assert_eq!(cfg.general.max_replica_lag, 5);
    assert_eq!(
        cfg.general.replica_fallback,
        crate::config::ReplicaFallback::None
    );
    assert_eq!(
        general("").replica_fallback,
        crate::config::ReplicaFallback::Primary
    );
    assert_eq!(
        general_error("replica_fallback = sometimes"),
        "expected primary or none, got \"sometimes\""
    );
    assert_eq!(
        general_error("patroni_poll_interval = 0"),
        "must be at least 0.01 seconds, got \"0\""
    );
    assert_eq!(
        general_error("max_replica_lag = 1MB"),
        "expected a non-negative integer, got \"1MB\""
    );
}
