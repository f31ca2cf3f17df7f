//! SHOW: columns and types of every subcommand, values that move with traffic, privileges and
//! errors, the drivers' fake parameters, psql and pgbouncer_exporter-style use.

use crate::common::{self, psql, Pooler};
use crate::console::Raw;
use crate::{admin, expect_error, pg, pooler, stats_user, INT4, INT8, NUMERIC, TEXT};

fn cols(spec: &[(&str, u32)]) -> Vec<(String, u32)> {
    spec.iter().map(|(n, t)| (n.to_string(), *t)).collect()
}

/// SHOW CLIENTS / SERVERS columns (PgBouncer 1.25).
const SOCKET_COLS: [(&str, u32); 21] = [
    ("type", TEXT),
    ("user", TEXT),
    ("database", TEXT),
    ("replication", TEXT),
    ("state", TEXT),
    ("addr", TEXT),
    ("port", INT4),
    ("local_addr", TEXT),
    ("local_port", INT4),
    ("connect_time", TEXT),
    ("request_time", TEXT),
    ("wait", INT4),
    ("wait_us", INT4),
    ("close_needed", INT4),
    ("ptr", TEXT),
    ("link", TEXT),
    ("remote_pid", INT4),
    ("tls", TEXT),
    ("application_name", TEXT),
    ("prepared_statements", INT4),
    ("id", INT4),
];

fn expected_columns(what: &str) -> Vec<(String, u32)> {
    let n = |names: &[&str]| -> Vec<(String, u32)> {
        let mut v = vec![("database".to_string(), TEXT)];
        v.extend(names.iter().map(|s| (s.to_string(), NUMERIC)));
        v
    };
    let counters = [
        "server_assignment_count",
        "xact_count",
        "query_count",
        "bytes_received",
        "bytes_sent",
        "xact_time",
        "query_time",
        "wait_time",
    ];
    match what {
        "pools" => cols(&[
            ("database", TEXT),
            ("user", TEXT),
            ("cl_active", INT4),
            ("cl_waiting", INT4),
            ("cl_active_cancel_req", INT4),
            ("cl_waiting_cancel_req", INT4),
            ("sv_active", INT4),
            ("sv_active_cancel", INT4),
            ("sv_being_canceled", INT4),
            ("sv_idle", INT4),
            ("sv_used", INT4),
            ("sv_tested", INT4),
            ("sv_login", INT4),
            ("maxwait", INT4),
            ("maxwait_us", INT4),
            ("pool_mode", TEXT),
            ("load_balance_hosts", TEXT),
        ]),
        "stats" => n(&[
            "total_server_assignment_count",
            "total_xact_count",
            "total_query_count",
            "total_received",
            "total_sent",
            "total_xact_time",
            "total_query_time",
            "total_wait_time",
            "total_client_parse_count",
            "total_server_parse_count",
            "total_bind_count",
            "total_client_login_count",
            "avg_server_assignment_count",
            "avg_xact_count",
            "avg_query_count",
            "avg_recv",
            "avg_sent",
            "avg_xact_time",
            "avg_query_time",
            "avg_wait_time",
            "avg_client_parse_count",
            "avg_server_parse_count",
            "avg_bind_count",
            "avg_client_login_count",
        ]),
        "stats_totals" => {
            let mut v = counters.to_vec();
            v.extend([
                "client_parse_count",
                "server_parse_count",
                "bind_count",
                "client_login_count",
            ]);
            n(&v)
        }
        "stats_averages" => {
            let mut v = counters.to_vec();
            v.extend([
                "avg_client_parse_count",
                "avg_server_parse_count",
                "avg_bind_count",
                "client_login_count",
            ]);
            n(&v)
        }
        "totals" => cols(&[("name", TEXT), ("value", NUMERIC)]),
        "clients" | "servers" => cols(&SOCKET_COLS),
        "sockets" | "active_sockets" => {
            let mut v = cols(&SOCKET_COLS);
            for d in [
                "recv_pos",
                "pkt_pos",
                "pkt_remain",
                "send_pos",
                "send_remain",
                "pkt_avail",
                "send_avail",
            ] {
                v.push((d.to_string(), INT4));
            }
            v
        }
        "lists" => cols(&[("list", TEXT), ("items", INT4)]),
        "users" => cols(&[
            ("name", TEXT),
            ("pool_size", TEXT),
            ("reserve_pool_size", TEXT),
            ("pool_mode", TEXT),
            ("max_user_connections", INT4),
            ("current_connections", INT4),
            ("max_user_client_connections", INT4),
            ("current_client_connections", INT4),
        ]),
        "databases" => cols(&[
            ("name", TEXT),
            ("host", TEXT),
            ("port", INT4),
            ("database", TEXT),
            ("force_user", TEXT),
            ("pool_size", INT4),
            ("min_pool_size", INT4),
            ("reserve_pool_size", INT4),
            ("server_lifetime", INT4),
            ("pool_mode", TEXT),
            ("load_balance_hosts", TEXT),
            ("max_connections", INT4),
            ("current_connections", INT4),
            ("max_client_connections", INT4),
            ("current_client_connections", INT4),
            ("paused", INT4),
            ("disabled", INT4),
        ]),
        "config" => cols(&[
            ("key", TEXT),
            ("value", TEXT),
            ("default", TEXT),
            ("changeable", TEXT),
        ]),
        "mem" => cols(&[
            ("name", TEXT),
            ("size", INT4),
            ("used", INT4),
            ("free", INT4),
            ("memtotal", INT4),
        ]),
        "dns_hosts" => cols(&[("hostname", TEXT), ("ttl", INT8), ("addrs", TEXT)]),
        "dns_zones" => cols(&[("zonename", TEXT), ("serial", INT8), ("count", INT4)]),
        "version" => cols(&[("version", TEXT)]),
        "state" => cols(&[("key", TEXT), ("value", TEXT)]),
        "peers" => cols(&[
            ("peer_id", INT4),
            ("host", TEXT),
            ("port", INT4),
            ("pool_size", INT4),
        ]),
        "peer_pools" => cols(&[
            ("peer_id", INT4),
            ("cl_active_cancel_req", INT4),
            ("cl_waiting_cancel_req", INT4),
            ("sv_active_cancel", INT4),
            ("sv_login", INT4),
        ]),
        other => panic!("no expectation for {other}"),
    }
}

const SHOWS: [&str; 20] = [
    "pools",
    "stats",
    "stats_totals",
    "stats_averages",
    "totals",
    "servers",
    "clients",
    "sockets",
    "active_sockets",
    "lists",
    "users",
    "databases",
    "config",
    "mem",
    "dns_hosts",
    "dns_zones",
    "version",
    "state",
    "peers",
    "peer_pools",
];

/// Every SHOW: names, order and type OIDs of the latest PgBouncer, tag SHOW, and every cell of
/// an int/numeric column parses as a number; `SELECT x` is the same as `SHOW x`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_show_has_pgbouncer_columns_and_types() {
    let p = pooler();
    // Traffic first, so the row sets are not empty.
    let client = p.connect("md5user", "md5_pw", "testdb").await;
    client.simple_query("SELECT 1").await.expect("query");
    let mut c = admin(&p).await;
    assert_eq!(c.key.map(|_| ()), Some(()), "BackendKeyData in the welcome");
    let param = |k: &str| {
        c.params
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(param("server_version").as_deref(), Some("1.25.2/bouncer"));
    assert_eq!(param("client_encoding").as_deref(), Some("UTF8"));
    for what in SHOWS {
        for verb in ["SHOW", "select", "show"] {
            let sql = format!("{verb} {}", what.to_uppercase());
            let a = c.query(&sql).await;
            a.expect_show();
            assert_eq!(a.columns, expected_columns(what), "{sql}");
            for row in &a.rows {
                assert_eq!(row.len(), a.columns.len(), "{sql}");
                for ((name, oid), cell) in a.columns.iter().zip(row) {
                    if [INT4, INT8, NUMERIC].contains(oid) {
                        let v = cell
                            .as_deref()
                            .unwrap_or_else(|| panic!("{sql}: {name} NULL"));
                        v.trim()
                            .parse::<i64>()
                            .unwrap_or_else(|_| panic!("{sql}: {name}={v:?}"));
                    }
                }
            }
        }
    }
    // Trailing semicolon and odd spacing are accepted.
    c.query("  show   pools ;  ").await.expect_show();
    let help = c.query("SHOW HELP").await;
    assert_eq!(help.tag.as_deref(), Some("SHOW"));
    assert!(help.columns.is_empty());
    assert_eq!(help.notices.len(), 1);
    assert_eq!(help.notices[0].message, "Console usage");
    assert!(help.notices[0]
        .detail
        .as_deref()
        .is_some_and(|d| d.contains("SHOW HELP|CONFIG|DATABASES")));
    let v = c.query("SHOW VERSION").await;
    assert_eq!(v.rows, vec![vec![Some("PgBouncer 1.25.2".to_string())]]);
}

/// The drivers' connect-time SHOW/SET of session parameters get PgBouncer's fixed answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fake_parameters_for_drivers() {
    let p = pooler();
    for who in ["olly", "stats"] {
        let mut c = if who == "olly" {
            admin(&p).await
        } else {
            stats_user(&p).await
        };
        for (name, value) in [
            ("client_encoding", "UTF-8"),
            ("DateStyle", "ISO"),
            ("TimeZone", "GMT"),
            ("standard_conforming_strings", "on"),
            ("default_transaction_isolation", "read committed"),
        ] {
            let a = c.query(&format!("SHOW {name}")).await;
            a.expect_show();
            assert_eq!(a.columns, vec![(name.to_ascii_lowercase(), TEXT)]);
            assert_eq!(a.rows, vec![vec![Some(value.to_string())]]);
        }
        for set in [
            "SET client_encoding = 'UTF8'",
            "SET DateStyle TO ISO",
            "SET TimeZone='UTC'",
            "SET standard_conforming_strings = on",
            "SET extra_float_digits = 3",
        ] {
            let a = c.query(set).await;
            assert!(a.error.is_none(), "{set}: {a:?}");
            assert_eq!(a.tag.as_deref(), Some("SET"), "{set}");
            assert_eq!(a.notices.len(), 1, "{set}");
            assert_eq!(a.notices[0].message, "SET ignored");
        }
    }
}

/// Unknown commands, bad arguments, the extended protocol, and who may do what.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_and_privileges() {
    let p = pooler();
    let mut c = admin(&p).await;
    for bad in [
        "SHOW NOTHING",
        "select 1",
        "show pools; show stats",
        "SHOW FDS",
        "SUSPEND now",
        "frobnicate",
        "show pools extra",
    ] {
        let msg = format!("invalid command '{bad}', use SHOW HELP;");
        expect_error(&mut c, bad, "08P01", &msg).await;
    }
    expect_error(
        &mut c,
        &format!("PAUSE {}", "x".repeat(80)),
        "08P01",
        "bad arguments",
    )
    .await;
    expect_error(
        &mut c,
        "SHUTDOWN NOW",
        "08P01",
        "invalid command 'SHUTDOWN NOW', use SHOW HELP;",
    )
    .await;
    expect_error(
        &mut c,
        "RELOAD x",
        "08P01",
        "invalid command 'RELOAD x', use SHOW HELP;",
    )
    .await;

    // stats_users may SHOW, nothing else.
    let mut s = stats_user(&p).await;
    for what in SHOWS {
        s.query(&format!("SHOW {what}")).await.expect_show();
    }
    for cmd in [
        "PAUSE",
        "PAUSE testdb",
        "RESUME",
        "DISABLE testdb",
        "ENABLE testdb",
        "RECONNECT",
        "KILL testdb",
        "KILL_CLIENT 1",
        "WAIT_CLOSE",
        "RELOAD",
        "SHUTDOWN",
        "SHUTDOWN WAIT_FOR_CLIENTS",
        "SET default_pool_size = 5",
    ] {
        expect_error(&mut s, cmd, "08P01", "admin access needed").await;
    }

    // Anyone else: FATAL not allowed, after authenticating.
    let e = Raw::connect(p.port, "md5user", "md5_pw", "pgbouncer")
        .await
        .err()
        .expect("md5user refused on the console");
    assert_eq!(
        (e.severity.as_str(), e.code.as_str(), e.message.as_str()),
        ("FATAL", "08P01", "not allowed")
    );

    // Extended protocol: ERROR, then the connection is closed.
    let a = c.parse("SHOW POOLS").await;
    let e = a.error.expect("error for Parse");
    assert_eq!(e.code, "08P01");
    assert_eq!(
        e.message,
        "extended query protocol not supported by admin console"
    );
    assert!(
        a.closed,
        "connection closed after the extended-protocol error"
    );
    // tokio-postgres' query() uses it too: a clean error, not a hang.
    let tp = p.connect("olly", "olly_pw", "pgbouncer").await;
    let err = tp
        .query("SHOW POOLS", &[])
        .await
        .expect_err("extended refused");
    assert!(
        format!("{err:?}").contains("extended query protocol not supported"),
        "{err:?}"
    );
}

/// Counters and gauges that must follow what clients do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_move_with_traffic() {
    let p = pooler();
    let mut c = admin(&p).await;
    let before = c.query("SHOW STATS").await;
    let xacts_before = before
        .get("database", "testdb", "total_xact_count")
        .map_or(0, |v| v.parse::<i64>().expect("number"));

    let named_conn = format!(
        "{} application_name=probe_a",
        p.conn_str("md5user", "md5_pw", "testdb")
    );
    let a = common::connect_to(&named_conn).await;
    let b = p.connect("md5user", "md5_pw", "testdb").await;
    for _ in 0..5 {
        a.simple_query("SELECT 1").await.expect("select");
    }
    b.simple_query("SELECT 2").await.expect("select");

    let pools = c.query("SHOW POOLS").await;
    let row = pools.rows_where("database", "testdb");
    assert_eq!(row.len(), 1, "{:?}", pools.rows);
    assert_eq!(pools.num("database", "testdb", "cl_active"), 2);
    assert_eq!(pools.num("database", "testdb", "cl_waiting"), 0);
    assert_eq!(pools.num("database", "testdb", "sv_active"), 0);
    let idle = pools.num("database", "testdb", "sv_idle");
    assert!((1..=2).contains(&idle), "sv_idle={idle}");
    assert_eq!(
        pools.get("database", "testdb", "pool_mode").as_deref(),
        Some("transaction")
    );
    // The console's own pool counts this admin session.
    assert_eq!(pools.num("database", "pgbouncer", "cl_active"), 1);
    assert_eq!(
        pools.get("database", "pgbouncer", "pool_mode").as_deref(),
        Some("statement")
    );

    let stats = c.query("SHOW STATS").await;
    let xacts = stats.num("database", "testdb", "total_xact_count");
    assert!(
        xacts >= xacts_before + 6,
        "total_xact_count {xacts_before} -> {xacts}"
    );
    assert!(stats.num("database", "testdb", "total_query_count") >= 6);
    assert!(stats.num("database", "testdb", "total_received") > 0);
    assert!(stats.num("database", "testdb", "total_sent") > 0);
    assert!(stats.num("database", "testdb", "total_server_assignment_count") >= 6);
    // Averages are per second over the running period: traffic just happened.
    assert!(stats.num("database", "testdb", "avg_xact_count") > 0);
    let totals = c.query("SHOW STATS_TOTALS").await;
    assert!(totals.num("database", "testdb", "xact_count") >= xacts);
    let t = c.query("SHOW TOTALS").await;
    assert!(t.num("name", "total_xact_count", "value") >= xacts);
    assert!(t.get("name", "avg_client_bytes", "value").is_some());

    // Clients: two of testdb, one of them named, plus this console (shown idle).
    let clients = c.query("SHOW CLIENTS").await;
    let ours = clients.rows_where("database", "testdb");
    assert_eq!(ours.len(), 2, "{:?}", clients.rows);
    let app = clients.col("application_name");
    let named: Vec<_> = ours
        .iter()
        .filter(|r| r[app].as_deref() == Some("probe_a"))
        .collect();
    assert_eq!(named.len(), 1, "{:?}", clients.rows);
    let st = clients.col("state");
    assert!(ours.iter().all(|r| r[st].as_deref() == Some("idle")));
    assert_eq!(
        clients.get("database", "pgbouncer", "state").as_deref(),
        Some("idle")
    );
    let ctime = clients.col("connect_time");
    assert!(ours[0][ctime]
        .as_deref()
        .is_some_and(|t| t.ends_with(" UTC") && t.len() == 23));

    // Servers: their remote_pid is a real backend of testdb.
    let servers = c.query("SHOW SERVERS").await;
    let sv = servers.rows_where("database", "testdb");
    assert_eq!(sv.len() as i64, idle);
    let pid: i32 = sv[0][servers.col("remote_pid")]
        .as_deref()
        .expect("pid")
        .parse()
        .expect("number");
    let backends = pg().psql_db(
        "postgres",
        &format!("SELECT count(*) FROM pg_stat_activity WHERE pid = {pid} AND datname = 'testdb'"),
    );
    assert_eq!(backends, "1", "remote_pid {pid} is a testdb backend");
    assert_eq!(sv[0][servers.col("state")].as_deref(), Some("idle"));
    assert_eq!(sv[0][servers.col("type")].as_deref(), Some("S"));

    // Inside a transaction the client is active and linked to an active server.
    a.simple_query("BEGIN").await.expect("begin");
    let pools = c.query("SHOW POOLS").await;
    assert_eq!(pools.num("database", "testdb", "sv_active"), 1);
    let clients = c.query("SHOW CLIENTS").await;
    let active: Vec<_> = clients
        .rows_where("state", "active")
        .into_iter()
        .cloned()
        .collect();
    assert_eq!(active.len(), 1, "{:?}", clients.rows);
    let link = active[0][clients.col("link")].clone().expect("link");
    let servers = c.query("SHOW SERVERS").await;
    let linked = servers.rows_where("ptr", &link);
    assert_eq!(
        linked.len(),
        1,
        "client link {link} names a server: {:?}",
        servers.rows
    );
    assert_eq!(linked[0][servers.col("state")].as_deref(), Some("active"));
    assert_eq!(
        linked[0][servers.col("link")],
        active[0][clients.col("ptr")],
        "server links back"
    );
    a.simple_query("COMMIT").await.expect("commit");

    let dbs = c.query("SHOW DATABASES").await;
    assert_eq!(dbs.num("name", "testdb", "current_client_connections"), 2);
    assert_eq!(dbs.num("name", "testdb", "current_connections"), idle);
    assert_eq!(dbs.num("name", "testdb", "port") as u16, pg().port);
    assert_eq!(
        dbs.get("name", "testdb", "host").as_deref(),
        Some("127.0.0.1")
    );
    assert_eq!(
        dbs.get("name", "testdb", "pool_mode"),
        None,
        "inherited pool_mode is NULL"
    );
    assert_eq!(
        dbs.get("name", "pgbouncer", "force_user").as_deref(),
        Some("pgbouncer")
    );
    let lists = c.query("SHOW LISTS").await;
    assert_eq!(lists.num("list", "used_clients", "items"), 3);
    assert_eq!(lists.num("list", "pools", "items"), 2);
    assert_eq!(lists.num("list", "used_servers", "items"), idle);
    let users = c.query("SHOW USERS").await;
    assert_eq!(
        users.num("name", "md5user", "current_client_connections"),
        2
    );
    assert_eq!(users.num("name", "md5user", "current_connections"), idle);

    // KILL_CLIENT by id: the client gets FATAL admin forced disconnect, the others go on.
    drop(a);
    let mut raw = Raw::connect(p.port, "md5user", "md5_pw", "testdb")
        .await
        .expect("raw login");
    raw.query("SELECT 1").await;
    let clients = c.query("SHOW CLIENTS").await;
    let known: Vec<String> = ours
        .iter()
        .map(|r| r[clients.col("id")].clone().expect("id"))
        .collect();
    let raw_id = clients
        .rows_where("database", "testdb")
        .iter()
        .map(|r| r[clients.col("id")].clone().expect("id"))
        .find(|i| !known.contains(i))
        .expect("the raw client is listed");
    let k = c.query(&format!("KILL_CLIENT {raw_id}")).await;
    assert_eq!(k.tag.as_deref(), Some("KILL_CLIENT"), "{k:?}");
    let gone = raw.answer().await;
    let e = gone.error.expect("FATAL for the killed client");
    assert_eq!(
        (e.severity.as_str(), e.message.as_str()),
        ("FATAL", "admin forced disconnect")
    );
    assert!(gone.closed);
    let id = raw_id;
    expect_error(
        &mut c,
        &format!("KILL_CLIENT {id}"),
        "08P01",
        "client not found",
    )
    .await;
    expect_error(
        &mut c,
        "KILL_CLIENT abc",
        "08P01",
        "invalid client pointer supplied",
    )
    .await;
    b.simple_query("SELECT 1")
        .await
        .expect("the other client is untouched");
}

/// psql habits: `psql -d pgbouncer -c 'SHOW ...'` and the pgbouncer_exporter queries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_and_exporter_queries() {
    let p = pooler();
    let conn = p.conn_str("olly", "olly_pw", "pgbouncer");
    let out = tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        for sql in [
            "SHOW VERSION",
            "SHOW POOLS",
            "SHOW STATS_TOTALS;",
            "SHOW DATABASES",
            "SHOW LISTS",
            "SHOW CONFIG",
            "SHOW HELP",
        ] {
            out.push((sql, psql(&conn, sql)));
        }
        out
    })
    .await
    .expect("psql");
    for (sql, (code, stdout, stderr)) in &out {
        assert_eq!(*code, 0, "{sql}: {stderr}");
        if *sql == "SHOW VERSION" {
            assert_eq!(stdout, "PgBouncer 1.25.2");
        }
        if *sql == "SHOW HELP" {
            assert!(stderr.contains("Console usage"), "{stderr}");
        }
    }
    // tokio-postgres simple_query (lib/pq-like): column names and numeric values parse.
    let client = p.connect("stats", "stats_pw", "pgbouncer").await;
    for (sql, want) in [
        ("SHOW STATS_TOTALS", "query_count"),
        ("SHOW POOLS", "cl_active"),
        ("SHOW DATABASES", "current_connections"),
        ("SHOW LISTS", "items"),
    ] {
        let msgs = client.simple_query(sql).await.expect(sql);
        let rows: Vec<_> = msgs
            .iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => Some(r),
                _ => None,
            })
            .collect();
        assert!(!rows.is_empty(), "{sql}");
        for r in rows {
            let v = r.get(want).unwrap_or_else(|| panic!("{sql}: {want} NULL"));
            v.trim().parse::<f64>().expect("a number");
        }
    }
}

/// SHOW CLIENTS / SHOW SERVERS `id`: one sequence for both kinds of socket, as PgBouncer numbers
/// them, so an id (the KILL_CLIENT argument) never names a client and a server at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_and_server_ids_come_from_one_sequence() {
    let p = pooler();
    let a = p.connect("md5user", "md5_pw", "testdb").await;
    let b = p.connect("olly", "olly_pw", "testdb").await;
    a.simple_query("SELECT 1").await.expect("select");
    b.simple_query("SELECT 1").await.expect("select");
    let mut c = admin(&p).await;
    let ids = |t: &crate::console::Answer| -> Vec<i64> {
        let i = t.col("id");
        t.rows
            .iter()
            .map(|r| r[i].as_deref().expect("id").parse().expect("number"))
            .collect()
    };
    let clients = ids(&c.query("SHOW CLIENTS").await);
    let servers = ids(&c.query("SHOW SERVERS").await);
    assert!(
        clients.len() >= 3 && !servers.is_empty(),
        "{clients:?} {servers:?}"
    );
    assert!(
        clients.iter().all(|id| *id > 0 && !servers.contains(id)),
        "client ids {clients:?} and server ids {servers:?} overlap"
    );
}

/// `total_client_login_count` (PgBouncer 1.26): one per client that passed authentication, per
/// database; failed logins do not count. The console's own login counts under `pgbouncer`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_logins_are_counted() {
    let p = pooler();
    let a = p.connect("md5user", "md5_pw", "testdb").await;
    let b = p.connect("olly", "olly_pw", "testdb").await;
    assert!(p.try_connect("olly", "wrong", "testdb").await.is_err());
    drop(b);
    let c2 = p.connect("olly", "olly_pw", "testdb").await;
    a.simple_query("SELECT 1").await.expect("select");
    c2.simple_query("SELECT 1").await.expect("select");
    let mut c = admin(&p).await;
    let stats = c.query("SHOW STATS").await;
    assert_eq!(
        stats.num("database", "testdb", "total_client_login_count"),
        3
    );
    assert!(stats.num("database", "testdb", "avg_client_login_count") > 0);
    assert!(stats.num("database", "pgbouncer", "total_client_login_count") >= 1);
    let totals = c.query("SHOW STATS_TOTALS").await;
    assert_eq!(totals.num("database", "testdb", "client_login_count"), 3);
    let t = c.query("SHOW TOTALS").await;
    assert!(t.num("name", "total_client_login_count", "value") >= 4);
    assert!(t.get("name", "avg_client_login_count", "value").is_some());
}

/// total_server_assignment_count counts the times a client was given a server, as PgBouncer's
/// own suite checks (session mode: one per client): the login that fetches a new pool's welcome
/// parameters is not one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_assignments_count_clients_not_the_welcome_fetch() {
    let p = Pooler::start(pg(), "", "pool_mode = session", "");
    for _ in 0..3 {
        let c = p.connect("md5user", "md5_pw", "testdb").await;
        c.simple_query("SELECT 1").await.expect("select");
    }
    let mut a = admin(&p).await;
    let stats = a.query("SHOW STATS").await;
    assert_eq!(
        stats.num("database", "testdb", "total_server_assignment_count"),
        3
    );
}

/// The `id` column of every row of a SHOW answer.
fn socket_ids(t: &crate::console::Answer) -> Vec<i64> {
    let i = t.col("id");
    let mut v: Vec<i64> = t
        .rows
        .iter()
        .map(|r| r[i].as_deref().expect("id").parse().expect("number"))
        .collect();
    v.sort_unstable();
    v
}

/// Polls SHOW SERVERS until it lists no server, for at most 10 s; the rows it last saw if not.
async fn servers_gone(a: &mut crate::console::Raw) -> Result<(), Vec<i64>> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let ids = socket_ids(&a.query("SHOW SERVERS").await);
        if ids.is_empty() {
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            return Err(ids);
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// `server_lifetime = 0` is PgBouncer's "the connection is used only once, then closed": a
/// session-mode client's server is closed when the client leaves (`server lifetime over`), so
/// every client logs in a server of its own and the socket ids advance by two per client (its
/// own and its server's), which PgBouncer's test_socket_id / test_server_id count on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_lifetime_zero_uses_a_server_once() {
    let p = Pooler::start(pg(), "", "pool_mode = session\nserver_lifetime = 0", "");
    let mut a = admin(&p).await;
    let first = *socket_ids(&a.query("SHOW SOCKETS").await)
        .last()
        .expect("the console itself");
    for i in 1..=3i64 {
        let c = p.connect("md5user", "md5_pw", "testdb").await;
        c.simple_query("SELECT 1").await.expect("select");
        assert_eq!(
            socket_ids(&a.query("SHOW SOCKETS").await),
            vec![first, first + 2 * i - 1, first + 2 * i],
            "round {i}: the console, the client and its own new server"
        );
        assert_eq!(
            socket_ids(&a.query("SHOW SERVERS").await),
            vec![first + 2 * i]
        );
        drop(c);
        if let Err(left) = servers_gone(&mut a).await {
            panic!("round {i}: server {left:?} kept after its one use");
        }
    }
    assert!(
        p.log()
            .contains("closing because: server lifetime over (age="),
        "{}",
        p.log()
    );
}

/// The console and every client are told what PgBouncer 1.26 tells them at login:
/// `pgbouncer.version`, `pgbouncer.max_prepared_statements` (the global setting; 0 for the
/// console's own pool) and the pool's `pgbouncer.pool_mode`; `--version` prints first what SHOW
/// VERSION says (PgBouncer's suite compares the two).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_parameters_and_version_line() {
    let pg_port = pg().port;
    let p = Pooler::start(
        pg(),
        &format!("sessdb = host=127.0.0.1 port={pg_port} dbname=testdb pool_mode=session"),
        "",
        "",
    );
    for (db, mode) in [("testdb", "transaction"), ("sessdb", "session")] {
        let c = crate::console::Raw::connect(p.port, "md5user", "md5_pw", db)
            .await
            .unwrap_or_else(|e| panic!("{db}: {e:?}"));
        let got = |name: &str| {
            c.params
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(got("pgbouncer.version"), Some("1.25.2"), "{db}");
        assert_eq!(
            got("pgbouncer.max_prepared_statements"),
            Some("200"),
            "{db}"
        );
        assert_eq!(got("pgbouncer.pool_mode"), Some(mode), "{db}");
    }
    let mut c = admin(&p).await;
    let param = |name: &str| {
        c.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let version = param("pgbouncer.version").expect("pgbouncer.version");
    assert_eq!(
        param("pgbouncer.max_prepared_statements").as_deref(),
        Some("0")
    );
    assert_eq!(param("pgbouncer.pool_mode").as_deref(), Some("statement"));
    let shown = c.query("SHOW VERSION").await.rows[0][0]
        .clone()
        .expect("version");
    assert_eq!(shown, format!("PgBouncer {version}"));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ollyscale-pooler"))
        .arg("--version")
        .output()
        .expect("run --version");
    let out = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.lines().next(), Some(shown.as_str()), "{out}");
}

/// A login copies the ParameterStatus messages the previous login of its pool made for the same
/// parameter set (a dozen messages encoded once, not per login): a console SET of what they
/// announce (max_prepared_statements, pool_mode) reaches the next client all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_welcome_follows_a_set_of_what_it_announces() {
    let p = pooler();
    let announced = |c: &Raw| {
        let got = |name: &str| {
            c.params
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        (
            got("pgbouncer.max_prepared_statements"),
            got("pgbouncer.pool_mode"),
            got("TimeZone"),
        )
    };
    let port = p.port;
    let login = move || async move {
        Raw::connect(port, "md5user", "md5_pw", "testdb")
            .await
            .unwrap_or_else(|e| panic!("login: {e:?}"))
    };
    let first = announced(&login().await);
    assert_eq!(first.0.as_deref(), Some("200"));
    assert_eq!(first.1.as_deref(), Some("transaction"));
    assert!(first.2.is_some(), "the server's parameters are announced");
    assert_eq!(announced(&login().await), first, "the same welcome again");
    let mut c = admin(&p).await;
    for set in [
        "SET max_prepared_statements = 50",
        "SET pool_mode = session",
    ] {
        let a = c.query(set).await;
        assert!(a.error.is_none(), "{set}: {a:?}");
    }
    let after = announced(&login().await);
    assert_eq!(after.0.as_deref(), Some("50"));
    assert_eq!(after.1.as_deref(), Some("session"));
    assert_eq!(after.2, first.2);
}
