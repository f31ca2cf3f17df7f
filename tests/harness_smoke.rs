//! Smoke test of the integration-test harness itself, straight against PostgreSQL (no ollyscale
//! pooler; the real PgBouncer checks the generated config):
//! servers start, the test roles authenticate, the client tools work, and Drop leaves nothing behind.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{
    ini_value, pgbench, pgbench_failed_transactions, pgbench_processed, pid_alive, psql,
    render_ini, render_userlist, Pg, Pooler,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_harness_end_to_end() {
    let started = Instant::now();
    let pg = Pg::start();
    eprintln!("Pg::start took {:?}", started.elapsed());
    let pid = pg.pid();
    assert!(pid_alive(pid));

    // Every test role authenticates over TCP (host md5 in pg_hba) and can use testdb.
    for (user, password) in [
        ("olly", "olly_pw"),
        ("md5user", "md5_pw"),
        ("scramuser", "scram_pw"),
    ] {
        let client = pg.connect(user, password, "testdb").await;
        let row = client
            .query_one("SELECT current_user::text, current_database()::text", &[])
            .await
            .expect("query");
        assert_eq!(row.get::<_, String>(0), user);
        assert_eq!(row.get::<_, String>(1), "testdb");
        let table = format!("t_{user}");
        client
            .batch_execute(&format!(
                "CREATE TABLE {table} (id int); INSERT INTO {table} VALUES (1)"
            ))
            .await
            .unwrap_or_else(|e| panic!("{user} cannot create a table in testdb: {e}"));
    }
    let err = match pg_wrong_password(&pg).await {
        Ok(()) => panic!("wrong password accepted"),
        Err(e) => e,
    };
    assert!(err.contains("password authentication failed"), "{err}");

    // Stored secrets: SCRAM for olly and scramuser, md5 for md5user.
    assert!(pg.scram_secret("olly").starts_with("SCRAM-SHA-256$"));
    assert!(pg.scram_secret("scramuser").starts_with("SCRAM-SHA-256$"));
    assert!(pg
        .psql_db(
            "postgres",
            "SELECT rolpassword FROM pg_authid WHERE rolname = 'md5user'"
        )
        .starts_with("md5"));
    assert_eq!(pg.psql("SELECT current_database()"), "testdb");
    assert_eq!(pg.psql("SHOW max_connections"), "300");
    assert_eq!(pg.psql("SHOW fsync"), "off");

    // psql over TCP with a password in the conn string, success and failure.
    let (code, out, _) = psql(&pg.conn_str("md5user", "md5_pw", "testdb"), "SELECT 40 + 2");
    assert_eq!((code, out.as_str()), (0, "42"));
    let (code, _, err) = psql(&pg.conn_str("md5user", "md5_pw", "testdb"), "SELECT nope");
    assert_ne!(code, 0);
    assert!(err.contains("nope"), "{err}");

    // backend_count sees our clients and terminate_backends ends them.
    let held = pg.connect("scramuser", "scram_pw", "testdb").await;
    let before = pg.backend_count("testdb");
    assert!(before >= 1, "backend_count = {before}");
    pg.terminate_backends("testdb");
    assert_eq!(pg.backend_count("testdb"), 0);
    assert!(
        held.simple_query("SELECT 1").await.is_err(),
        "terminated backend still answers"
    );

    // pgbench straight against PostgreSQL.
    let port = pg.port;
    let (code, _, err) = pgbench(port, "olly", "olly_pw", "testdb", &["-i", "-s", "1", "-q"]);
    assert_eq!(code, 0, "pgbench -i failed: {err}");
    let (code, out, err) = pgbench(
        port,
        "scramuser",
        "scram_pw",
        "testdb",
        &["-S", "-c", "4", "-T", "2", "-M", "extended"],
    );
    assert_eq!(code, 0, "pgbench -S failed: {out}\n{err}");
    assert!(
        pgbench_processed(&out).expect("processed line") > 0,
        "{out}"
    );
    assert_eq!(pgbench_failed_transactions(&out), Some(0), "{out}");

    // Drop stops the postmaster and its backends, and removes the temp dir.
    let backends = pg_children(pid);
    assert!(!backends.is_empty());
    let root = pg
        .data_dir
        .parent()
        .expect("data dir has a parent")
        .to_path_buf();
    drop(held);
    let stop = Instant::now();
    drop(pg);
    eprintln!(
        "Pg drop took {:?}; whole test {:?}",
        stop.elapsed(),
        started.elapsed()
    );
    assert!(!pid_alive(pid), "postmaster {pid} survived drop");
    for b in backends {
        assert!(!pid_alive(b), "backend {b} survived drop");
    }
    assert!(
        !root.exists() || common::keep_dirs(),
        "{} not removed",
        root.display()
    );
}

async fn pg_wrong_password(pg: &Pg) -> Result<(), String> {
    common::try_connect_to(&pg.conn_str("md5user", "wrong", "testdb"))
        .await
        .map(drop)
        .map_err(|e| format!("{e:?}"))
}

fn pg_children(pid: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|s| {
                    s[s.rfind(')')? + 1..]
                        .split_whitespace()
                        .nth(1)?
                        .parse::<u32>()
                        .ok()
                })
                == Some(pid)
        })
        .collect()
}

/// The generated pgbouncer.ini/userlist.txt work with the reference implementation (real
/// PgBouncer): md5 and SCRAM users, the admin console for admin_users, SIGHUP reload, shutdown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn harness_config_works_with_real_pgbouncer() {
    let pg = Pg::start();
    let scram = pg.scram_secret("scramuser");
    let mut bouncer = Pooler::start_pgbouncer(
        &pg,
        "",
        "default_pool_size = 2",
        &format!("\"scram_copy\" \"{scram}\""),
    );
    for (user, password) in [
        ("olly", "olly_pw"),
        ("md5user", "md5_pw"),
        ("scramuser", "scram_pw"),
    ] {
        let client = bouncer.connect(user, password, "testdb").await;
        let row = client
            .query_one("SELECT current_user::text", &[])
            .await
            .expect("query");
        assert_eq!(row.get::<_, String>(0), user);
    }
    assert!(bouncer
        .try_connect("md5user", "wrong", "testdb")
        .await
        .is_err());
    let admin = bouncer.conn_str("olly", "olly_pw", "pgbouncer");
    let (code, out, err) = psql(&admin, "SHOW POOLS");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("testdb|md5user"), "{out}");

    bouncer.rewrite_config("", "default_pool_size = 3", "");
    bouncer.signal(libc::SIGHUP);
    assert!(
        bouncer.wait_for_log("re-reading config", Duration::from_secs(10)),
        "{}",
        bouncer.log()
    );
    let (_, out, _) = psql(&admin, "SHOW CONFIG");
    assert!(
        out.lines().any(|l| l.starts_with("default_pool_size|3")),
        "{out}"
    );

    let pid = bouncer.pid();
    bouncer.signal(libc::SIGTERM);
    assert!(
        bouncer.wait_exit(Duration::from_secs(10)).is_some(),
        "pgbouncer ignored SIGTERM"
    );
    drop(bouncer);
    assert!(!pid_alive(pid));
}

#[test]
fn pg_restart_keeps_port_and_data() {
    let pg = Pg::start_with_conf("max_connections = 50");
    assert_eq!(pg.psql("SHOW max_connections"), "50");
    pg.psql("CREATE TABLE kept (v int); INSERT INTO kept VALUES (7)");
    let (port, old_pid) = (pg.port, pg.pid());
    pg.stop();
    assert!(!pg.is_running());
    assert!(!pid_alive(old_pid));
    pg.restart();
    assert_eq!(pg.port, port);
    assert_ne!(pg.pid(), old_pid);
    assert_eq!(pg.psql("SELECT v FROM kept"), "7");
    let pid = pg.pid();
    pg.crash();
    assert!(!pid_alive(pid));
    pg.restart();
    assert_eq!(pg.psql("SELECT 1"), "1");
}

#[test]
fn parallel_servers_are_isolated() {
    let a = Pg::start();
    let b = Pg::start();
    assert_ne!(a.port, b.port);
    assert_ne!(a.socket_dir, b.socket_dir);
    a.psql("CREATE TABLE only_in_a (v int)");
    assert_eq!(
        b.psql("SELECT count(*) FROM pg_class WHERE relname = 'only_in_a'"),
        "0"
    );
}

#[test]
fn panic_in_a_test_still_stops_the_server() {
    let pid = std::sync::Arc::new(std::sync::Mutex::new(0u32));
    let seen = pid.clone();
    let result = std::thread::spawn(move || {
        let pg = Pg::start();
        *seen.lock().unwrap() = pg.pid();
        panic!("deliberate panic while a Pg is alive");
    })
    .join();
    assert!(result.is_err());
    let pid = *pid.lock().unwrap();
    assert!(
        pid != 0 && !pid_alive(pid),
        "postmaster {pid} survived a panic"
    );
}

#[test]
fn ini_and_userlist_rendering() {
    let ini = render_ini(
        5432,
        6432,
        Path::new("/tmp/x"),
        "  other = host=127.0.0.1 dbname=postgres\n",
        "\n    pool_mode = session\n    listen_port = 7000\n",
    );
    let expected = "[databases]\n\
                    testdb = host=127.0.0.1 port=5432 dbname=testdb\n\
                    other = host=127.0.0.1 dbname=postgres\n\
                    \n\
                    [pgbouncer]\n\
                    listen_addr = 127.0.0.1\n\
                    listen_port = 6432\n\
                    unix_socket_dir = /tmp/x\n\
                    auth_type = md5\n\
                    auth_file = /tmp/x/userlist.txt\n\
                    pool_mode = transaction\n\
                    admin_users = olly\n\
                    stats_users = stats\n\
                    pool_mode = session\n\
                    listen_port = 7000\n";
    assert_eq!(ini, expected);
    // Overrides come after the defaults, so the last value wins.
    assert_eq!(
        ini_value(&ini, "pgbouncer", "pool_mode").as_deref(),
        Some("session")
    );
    assert_eq!(
        ini_value(&ini, "pgbouncer", "listen_port").as_deref(),
        Some("7000")
    );
    assert_eq!(
        ini_value(&ini, "databases", "testdb").as_deref(),
        Some("host=127.0.0.1 port=5432 dbname=testdb")
    );

    let users = render_userlist("\"extra\" \"md5abc\"");
    assert_eq!(users.lines().count(), 5);
    assert!(users.starts_with("\"olly\" \"olly_pw\"\n\"md5user\" \"md5_pw\"\n\"scramuser\" \"scram_pw\"\n\"stats\" \"stats_pw\"\n"));
    assert!(users.ends_with("\"extra\" \"md5abc\"\n"));
}

#[test]
fn pgbench_output_parsing() {
    let out = "transaction type: <builtin: select only>\n\
               number of transactions actually processed: 12345\n\
               number of failed transactions: 0 (0.000%)\n";
    assert_eq!(pgbench_processed(out), Some(12345));
    assert_eq!(pgbench_failed_transactions(out), Some(0));
    assert_eq!(
        pgbench_processed("number of transactions actually processed: 80/100\n"),
        Some(80)
    );
    assert_eq!(pgbench_failed_transactions("nothing here"), None);
}

#[test]
fn conn_strings_quote_awkward_values() {
    assert_eq!(
        common::conn_string(1, "olly", "olly_pw", "testdb"),
        "host=127.0.0.1 port=1 user=olly password=olly_pw dbname=testdb"
    );
    assert_eq!(
        common::conn_string(1, "u", "a b'c", ""),
        "host=127.0.0.1 port=1 user=u password='a b\\'c' dbname=''"
    );
}
