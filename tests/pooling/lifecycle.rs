//! Lifecycle: a server dying mid-transaction, reload, SIGTERM's transaction-end drain (ours,
//! `shutdown_drain = transaction`; PgBouncer's wait for clients is in `lifecycle_sigterm.rs`).

use std::time::Duration;

use crate::common::{Pg, Pooler};
use crate::eventually;

/// Our Kubernetes drain, bounded as the tests below need.
const TRANSACTION_DRAIN_20: &str = "shutdown_drain = transaction\nshutdown_timeout = 20";
const TRANSACTION_DRAIN_120: &str = "shutdown_drain = transaction\nshutdown_timeout = 120";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_terminated_mid_transaction_then_pool_recovers() {
    let pg = Pg::start();
    let pooler = Pooler::start(&pg, "", "default_pool_size = 2", "");
    let c = pooler.connect("olly", "olly_pw", "testdb").await;
    c.batch_execute("BEGIN; SELECT 1").await.unwrap();
    pg.terminate_backends("testdb");
    let e = c
        .simple_query("SELECT 2")
        .await
        .expect_err("server is gone");
    assert!(e.as_db_error().is_some() || e.is_closed(), "{e:?}");
    // New clients get fresh servers; idle servers that died are noticed and replaced.
    for _ in 0..5 {
        let c2 = pooler.connect("olly", "olly_pw", "testdb").await;
        assert!(c2.simple_query("SELECT 1").await.is_ok());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_changes_pool_size() {
    let pg = Pg::start();
    let pooler = Pooler::start(&pg, "", "default_pool_size = 2", "");
    let run_burst = |n: usize| {
        let conn = pooler.conn_str("olly", "olly_pw", "testdb");
        async move {
            let mut tasks = Vec::new();
            for _ in 0..n {
                let c = crate::common::connect_to(&conn).await;
                tasks.push(tokio::spawn(async move {
                    c.simple_query("SELECT pg_sleep(0.6)").await.unwrap();
                }));
            }
            tasks
        }
    };
    let tasks = run_burst(6).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(pg.backend_count("testdb") <= 2);
    for t in tasks {
        t.await.unwrap();
    }
    pooler.rewrite_config("", "default_pool_size = 5", "");
    pooler.signal(libc::SIGHUP);
    assert!(pooler.wait_for_log("configuration reloaded", Duration::from_secs(5)));
    // PgBouncer's layout: `<date> <time>.mmm UTC [pid] LOG message`.
    let log = pooler.log();
    let line = log
        .lines()
        .find(|l| l.ends_with("configuration reloaded"))
        .unwrap_or_else(|| panic!("{log}"));
    assert_eq!(
        &line[23..],
        format!(" UTC [{}] LOG configuration reloaded", pooler.pid())
    );
    assert_eq!(
        line[..23].replace(|c: char| c.is_ascii_digit(), "0"),
        "0000-00-00 00:00:00.000",
        "{line}"
    );
    let tasks = run_burst(6).await;
    let grew = eventually(Duration::from_secs(2), || pg.backend_count("testdb") >= 4).await;
    for t in tasks {
        t.await.unwrap();
    }
    assert!(grew, "pool did not grow after reload");
    assert!(pg.backend_count("testdb") <= 5);
    // A bad file on reload keeps the running config.
    pooler.rewrite_config("", "default_pool_size = lots", "");
    pooler.signal(libc::SIGHUP);
    // PgBouncer's words: the refused value, then the warning; our reason follows the first.
    assert!(pooler.wait_for_log("WARNING config file loading failed", Duration::from_secs(5)));
    let ini = pooler.ini_path.display().to_string();
    assert!(pooler.log().contains(&format!(
        "ERROR invalid value \"lots\" for parameter default_pool_size in configuration ({ini}:"
    )));
    let c = pooler.connect("olly", "olly_pw", "testdb").await;
    assert!(c.simple_query("SELECT 1").await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_config_refuses_to_start() {
    let (_dir, ini, out) = run_with_ini("[pgbouncer]\nlisten_port = 6432\npool_mode = sometimes\n");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    // As PgBouncer: the refused value as an ERROR line, then FATAL, both in its layout.
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 2, "{err}");
    let pid = format!("[{}]", out_pid(lines[0]));
    assert!(
        lines[0].contains(&format!(
            " UTC {pid} ERROR invalid value \"sometimes\" for parameter pool_mode in \
             configuration ({}:3): ",
            ini.display()
        )),
        "{err}"
    );
    assert!(
        lines[1].ends_with(&format!(" UTC {pid} FATAL cannot load config file")),
        "{err}"
    );
}

/// Runs the pooler binary on `ini` (written to a fresh directory, kept alive by the first
/// value) until it exits; for configurations it refuses to serve.
fn run_with_ini(ini: &str) -> (tempfile::TempDir, std::path::PathBuf, std::process::Output) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pgbouncer.ini");
    std::fs::write(&path, ini).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ollyscale-pooler"))
        .arg(&path)
        .output()
        .unwrap();
    (dir, path, out)
}

/// The pid between the brackets of a log line.
fn out_pid(line: &str) -> &str {
    let from = line.find('[').map_or(0, |i| i + 1);
    let to = line.find(']').unwrap_or(from);
    &line[from..to]
}

/// A start-up failure once logging is set up is a FATAL line before the exit, as PgBouncer's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_in_use_is_fatal() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let (_dir, _ini, out) = run_with_ini(&format!(
        "[databases]\nx = host=127.0.0.1 port=1\n[pgbouncer]\nlisten_addr = 127.0.0.1\n\
         listen_port = {port}\nunix_socket_dir =\nauth_type = trust\n"
    ));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let last = err.lines().last().unwrap_or_default();
    assert!(last.contains(" FATAL cannot listen on 127.0.0.1:"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_open_transaction_finish_then_closes() {
    let pg = Pg::start();
    pg.psql("CREATE TABLE d (v int)");
    let mut pooler = Pooler::start(&pg, "", TRANSACTION_DRAIN_20, "");
    let busy = pooler.connect("olly", "olly_pw", "testdb").await;
    let idle = pooler.connect("olly", "olly_pw", "testdb").await;
    busy.batch_execute("BEGIN; INSERT INTO d VALUES (1)")
        .await
        .unwrap();
    pooler.signal(libc::SIGTERM);
    assert!(pooler.wait_for_log("got SIGTERM, shutting down", Duration::from_secs(5)));
    // PgBouncer ignores SIGUSR2 (resume) during a shutdown, and says so.
    pooler.signal(libc::SIGUSR2);
    assert!(pooler.wait_for_log(
        "got SIGUSR2 while shutting down, ignoring",
        Duration::from_secs(5)
    ));
    // No new clients.
    assert!(pooler
        .try_connect("olly", "olly_pw", "testdb")
        .await
        .is_err());
    // The idle client is closed once it stayed quiet for the drain's 100 ms (a request sent
    // sooner is still served), without an ErrorResponse: the connection just ends.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let err = idle.simple_query("SELECT 1").await.unwrap_err();
    assert!(
        err.as_db_error().is_none(),
        "closed without a message: {err}"
    );
    // The open transaction can finish...
    busy.batch_execute("INSERT INTO d VALUES (2); COMMIT")
        .await
        .unwrap();
    // ...and then the client is closed and the process exits.
    let status = tokio::task::spawn_blocking(move || {
        let s = pooler.wait_exit(Duration::from_secs(10));
        (s, pooler)
    })
    .await
    .unwrap();
    assert!(status.0.is_some(), "pooler did not exit after the drain");
    assert!(busy.simple_query("SELECT 1").await.is_err());
    assert_eq!(pg.psql("SELECT count(*) FROM d"), "2");
}

/// SQLAlchemy's asyncpg pre-ping is BEGIN, `;`, ROLLBACK, each its own query, and the unit's
/// BEGIN follows at once: a draining pooler serves it, and ends the client after its COMMIT.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_serves_the_transaction_after_a_rolled_back_one() {
    let pg = Pg::start();
    pg.psql("CREATE TABLE d (v int)");
    let mut pooler = Pooler::start(&pg, "", TRANSACTION_DRAIN_120, "");
    let busy = pooler.connect("olly", "olly_pw", "testdb").await;
    // Open at SIGTERM, so the drain's quiet period for idle clients does not apply.
    busy.batch_execute("BEGIN; INSERT INTO d VALUES (1)")
        .await
        .unwrap();
    pooler.signal(libc::SIGTERM);
    assert!(pooler.wait_for_log("got SIGTERM, shutting down", Duration::from_secs(5)));
    for q in [
        "SELECT 1",
        "ROLLBACK",
        "BEGIN",
        "INSERT INTO d VALUES (2)",
        "COMMIT",
    ] {
        busy.simple_query(q)
            .await
            .unwrap_or_else(|e| panic!("{q} during the drain: {e}"));
    }
    let err = busy.simple_query("SELECT 1").await.unwrap_err();
    assert!(
        err.as_db_error().is_none(),
        "closed without a message: {err}"
    );
    let status = tokio::task::spawn_blocking(move || pooler.wait_exit(Duration::from_secs(30)))
        .await
        .unwrap();
    assert!(
        status.is_some_and(|s| s.success()),
        "exit after the drain: {status:?}"
    );
    assert_eq!(pg.psql("SELECT string_agg(v::text, ',') FROM d"), "2");
}

/// A pooled connection that is never quiet (the next unit's checkout follows each COMMIT at
/// once) still leaves a draining pooler at a transaction boundary: right after its block ends,
/// before its next request, instead of being served until shutdown_timeout cuts it off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_a_busy_client_right_after_its_commit() {
    let pg = Pg::start();
    pg.psql("CREATE TABLE d (v int)");
    let mut pooler = Pooler::start(&pg, "", TRANSACTION_DRAIN_120, "");
    let busy = pooler.connect("olly", "olly_pw", "testdb").await;
    busy.batch_execute("BEGIN; INSERT INTO d VALUES (1)")
        .await
        .unwrap();
    pooler.signal(libc::SIGTERM);
    assert!(pooler.wait_for_log("got SIGTERM, shutting down", Duration::from_secs(5)));
    busy.batch_execute("INSERT INTO d VALUES (2); COMMIT")
        .await
        .unwrap();
    // Sent as soon as the COMMIT is answered, far within the drain's 100 ms of quiet: the
    // connection is already closed, without an ErrorResponse (a pre-ping sees a dead connection).
    let err = busy.simple_query("SELECT 1").await.unwrap_err();
    assert!(
        err.as_db_error().is_none(),
        "closed without a message: {err}"
    );
    let status = tokio::task::spawn_blocking(move || pooler.wait_exit(Duration::from_secs(30)))
        .await
        .unwrap();
    assert!(
        status.is_some_and(|s| s.success()),
        "exit after the drain: {status:?}"
    );
    assert_eq!(pg.psql("SELECT count(*) FROM d"), "2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reopens_the_logfile_after_rotation() {
    let pg = Pg::start();
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("pooler.log");
    let pooler = Pooler::start(&pg, "", &format!("logfile = {}", log.display()), "");
    let c = pooler.connect("olly", "olly_pw", "testdb").await;
    drop(c);
    let rotated = logs.path().join("pooler.log.1");
    assert!(
        eventually(Duration::from_secs(5), || std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("login attempt"))
        .await
    );
    std::fs::rename(&log, &rotated).unwrap();
    pooler.signal(libc::SIGHUP);
    assert!(
        eventually(Duration::from_secs(5), || log.exists()).await,
        "SIGHUP did not reopen the logfile"
    );
    let c = pooler.connect("md5user", "md5_pw", "testdb").await;
    drop(c);
    assert!(
        eventually(Duration::from_secs(5), || std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("user=md5user"))
        .await
    );
    assert!(!std::fs::read_to_string(&rotated)
        .unwrap()
        .contains("user=md5user"));
}

/// The log lines operators grep for read as PgBouncer's: a new server connection, a new
/// auto-database, and a refused server login (severity + the server's message; the client's
/// closing line carries the server's message alone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_lines_use_pgbouncer_texts() {
    let pg = Pg::start();
    let dbs = format!(
        "baddb = host=127.0.0.1 port={p} dbname=testdb user=md5user password=wrong\n\
         * = host=127.0.0.1 port={p} dbname=testdb",
        p = pg.port
    );
    let pooler = Pooler::start(&pg, &dbs, "", "");
    let c = pooler.connect("olly", "olly_pw", "testdb").await;
    c.simple_query("SELECT 1").await.unwrap();
    let auto = pooler.connect("olly", "olly_pw", "elsewhere").await;
    auto.simple_query("SELECT 1").await.unwrap();
    let refused = pooler.try_connect("olly", "olly_pw", "baddb").await;
    assert!(refused.is_err());
    let wanted = [
        "new connection to server (from 127.0.0.1:",
        "registered new auto-database: elsewhere",
        "server login failed: FATAL password authentication failed for user \"md5user\"",
        "closing because: password authentication failed for user \"md5user\"",
    ];
    for line in wanted {
        assert!(
            eventually(Duration::from_secs(5), || pooler.log().contains(line)).await,
            "log lacks {line:?}:\n{}",
            pooler.log()
        );
    }
    assert!(!pooler
        .log()
        .contains("closing because: server login failed"));
}

/// `verbose` set on the console or by RELOAD changes the log level at once: with
/// log_disconnections off, the disconnect line is a debug line, so it shows only at verbose ≥ 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_verbose_and_reload_change_the_log_level() {
    let pg = Pg::start();
    let pooler = Pooler::start(&pg, "", "log_disconnections = 0", "");
    let line = "closing because: client close request";
    let admin = pooler.connect("olly", "olly_pw", "pgbouncer").await;
    let visit = || async {
        let c = pooler.connect("md5user", "md5_pw", "testdb").await;
        c.simple_query("SELECT 1").await.unwrap();
        drop(c);
        // Let the session finish its exit (and its log line) before looking.
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    visit().await;
    assert!(!pooler.log().contains(line), "verbose 0 logs no debug line");
    admin.simple_query("SET verbose = 1").await.unwrap();
    visit().await;
    assert!(
        eventually(Duration::from_secs(5), || pooler.log().contains(line)).await,
        "SET verbose = 1 shows debug lines:\n{}",
        pooler.log()
    );
    pooler.rewrite_config("", "log_disconnections = 0\nverbose = 0", "");
    admin.simple_query("RELOAD").await.unwrap();
    let seen = pooler.log().matches(line).count();
    visit().await;
    assert_eq!(pooler.log().matches(line).count(), seen, "RELOAD back to 0");
}

/// `sv_used` of the testdb pool in SHOW POOLS.
async fn sv_used(pooler: &Pooler) -> String {
    let admin = pooler.connect("olly", "olly_pw", "pgbouncer").await;
    let msgs = admin.simple_query("SHOW POOLS").await.expect("SHOW POOLS");
    msgs.iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) if r.get("database") == Some("testdb") => {
                r.get("sv_used").map(str::to_string)
            }
            _ => None,
        })
        .expect("a testdb row")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_server_check_query_tests_idle_servers() {
    let pg = Pg::start();
    // The default server_check_query (`<empty>`) sends an empty query to a server idle longer
    // than server_check_delay; with a delay of 0 every idle server is due (sv_used).
    let pooler = Pooler::start(&pg, "", "server_check_delay = 0", "");
    let c = pooler.connect("olly", "olly_pw", "testdb").await;
    c.simple_query("SELECT 1").await.expect("query");
    assert_eq!(sv_used(&pooler).await, "1");
    for _ in 0..3 {
        // Each checkout runs the empty query on the real server first.
        c.simple_query("SELECT 1")
            .await
            .expect("query after the check");
    }
    // An empty value turns the check off.
    let off = Pooler::start(&pg, "", "server_check_delay = 0\nserver_check_query =", "");
    let c = off.connect("olly", "olly_pw", "testdb").await;
    c.simple_query("SELECT 1").await.expect("query");
    assert_eq!(sv_used(&off).await, "0");
}

/// server_check_query tests only a server a client has used, as PgBouncer tests only its
/// SV_USED servers: one fresh from its login (the first client's, or the one that replaces a
/// server the check found dead) is handed out untested. The check query here bumps a
/// sequence, so the count of checks is read off PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_check_query_skips_a_server_fresh_from_its_login() {
    let pg = Pg::start();
    pg.psql("CREATE SEQUENCE checks");
    let checks = || pg.psql("SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM checks");
    let pooler = Pooler::start(
        &pg,
        "",
        "server_check_delay = 0\nserver_check_query = SELECT nextval('checks')",
        "",
    );
    let c = pooler.connect("olly", "olly_pw", "testdb").await;
    c.simple_query("SELECT 1").await.expect("query");
    assert_eq!(checks(), "0", "a fresh server was tested");
    c.simple_query("SELECT 1").await.expect("query");
    assert_eq!(
        checks(),
        "1",
        "a used server idle past the delay was not tested"
    );
}

/// The disconnect line, with PgBouncer's `(age=Ns)`, is in the log by the time the client has the
/// error: PgBouncer logs before it sends, so a reader of the log right after the error finds the
/// line. Repeated, because sending first lost that race only some of the time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_line_is_logged_before_the_client_gets_the_error() {
    let pg = Pg::start();
    let pooler = Pooler::start(&pg, "", "", "");
    for round in 1..=50 {
        let refused = crate::console::Raw::connect(pooler.port, "olly", "wrong", "testdb").await;
        assert!(refused.is_err());
        let line = "closing because: password authentication failed (age=0s)";
        let seen = pooler.log().matches(line).count();
        assert_eq!(seen, round, "{}", pooler.log());
    }
}

/// A user name is the client's to choose: an escape sequence or a newline in it must reach the
/// log escaped, not raw (the subscriber's own sanitization is off; the pooler escapes at the
/// source), or reading the log could drive a terminal or show a forged line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_characters_in_a_user_name_do_not_reach_the_log_raw() {
    let pg = Pg::start();
    let dbs = format!(
        "forced = host=127.0.0.1 port={} dbname=testdb user=olly",
        pg.port
    );
    let evil = "\x1b[31mred\x07\nC-9 login attempt: db=x user=forged";
    // auth_type any: no userlist line can hold the newline; the server sees the forced user.
    let pooler = Pooler::start(&pg, &dbs, "auth_type = any", "");
    let c = pooler.connect(evil, "any", "forced").await;
    c.simple_query("SELECT 1").await.unwrap();
    drop(c);
    let escaped = "user=\\u{1b}[31mred\\u{7}\\nC-9 login attempt: db=x user=forged";
    assert!(
        eventually(Duration::from_secs(5), || pooler.log().contains(escaped)).await,
        "log lacks {escaped:?}:\n{}",
        pooler.log()
    );
    assert!(
        eventually(Duration::from_secs(5), || pooler
            .log()
            .contains("closing because: client close request"))
        .await
    );
    let log = pooler.log();
    assert!(!log.contains('\x1b') && !log.contains('\x07'), "{log:?}");
    assert!(!log.contains("\nC-9 login attempt"), "{log:?}");
}
