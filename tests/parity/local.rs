//! The console over the Unix socket for the pooler's own OS user without a password (PgBouncer's
//! `pgbouncer` own-user rule, via peer credentials), auth_type = peer, and SUSPEND.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use crate::common::Pooler;
use crate::console::Raw;
use crate::{admin, pg};

/// psql over the pooler's Unix socket, as `os_user` (None = this process's user), never
/// prompting for a password. Returns (exit code, stdout, stderr).
fn psql_unix(
    p: &Pooler,
    os_user: Option<&str>,
    user: &str,
    db: &str,
    sql: &str,
) -> (i32, String, String) {
    let conn = format!(
        "host={} port={} user={user} dbname={db}",
        p.dir.display(),
        p.port
    );
    let mut cmd = match os_user {
        Some(u) => {
            let mut c = Command::new("runuser");
            c.args(["-u", u, "--", "psql"]);
            c
        }
        None => Command::new("psql"),
    };
    cmd.env_remove("PGPASSWORD")
        .env("PGCONNECT_TIMEOUT", "10")
        .args(["-X", "-A", "-t", "-w", "-c", sql, &conn]);
    let out = cmd.output().expect("run psql");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Lets another OS user reach the pooler's socket directory.
fn open_dir(p: &Pooler) {
    std::fs::set_permissions(&p.dir, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_for_own_user_over_unix_socket_without_password() {
    let p = Pooler::start(pg(), "", "", "");
    // Same uid as the pooler, user `pgbouncer` (not in auth_file, no password): admin access.
    let (code, out, err) = psql_unix(&p, None, "pgbouncer", "pgbouncer", "SHOW STATE");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("active|yes"), "{out}");
    let (code, out, err) = psql_unix(
        &p,
        None,
        "pgbouncer",
        "pgbouncer",
        "SET default_pool_size = 9",
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.is_empty() || out.contains("SET"), "{out}");
    assert!(p.log().contains("pgbouncer access from unix socket"));
    // Over TCP the same user is a stranger (not in auth_file): refused.
    let e = Raw::connect(p.port, "pgbouncer", "", "pgbouncer")
        .await
        .err()
        .expect("refused over TCP");
    assert_eq!(e.severity, "FATAL");
    // Another OS user on the Unix socket is refused too.
    open_dir(&p);
    let (code, _, err) = psql_unix(&p, Some("postgres"), "pgbouncer", "pgbouncer", "SHOW STATE");
    assert_ne!(code, 0);
    assert!(err.contains("password"), "{err}");
    // Only the console: user `pgbouncer` gets no normal database this way.
    let (code, _, _) = psql_unix(&p, None, "pgbouncer", "testdb", "SELECT 1");
    assert_ne!(code, 0);
}

/// auth_type = peer: a Unix-socket client whose OS user has the name it logs in with, and that
/// auth_file knows, gets in without a password; everyone else gets `unix socket login rejected`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_type_peer_for_unix_socket_clients() {
    let pg_port = pg().port;
    let p = Pooler::start(
        pg(),
        &format!("peerdb = host=127.0.0.1 port={pg_port} dbname=testdb user=olly password=olly_pw"),
        "auth_type = peer\nadmin_users = olly, root",
        "\"root\" \"\"\n\"postgres\" \"\"",
    );
    open_dir(&p);
    let (code, out, err) = psql_unix(&p, None, "root", "peerdb", "SELECT current_user");
    assert_eq!((code, out.as_str()), (0, "olly"), "{err}");
    let (code, out, err) = psql_unix(&p, Some("postgres"), "postgres", "peerdb", "SELECT 2");
    assert_eq!((code, out.as_str()), (0, "2"), "{err}");
    // A name that is not the OS user's.
    let (code, _, err) = psql_unix(&p, None, "olly", "peerdb", "SELECT 1");
    assert_ne!(code, 0);
    assert!(err.contains("unix socket login rejected"), "{err}");
    // Known OS user, but not in auth_file.
    let (code, _, err) = psql_unix(&p, Some("nobody"), "nobody", "peerdb", "SELECT 1");
    assert_ne!(code, 0);
    assert!(err.contains("unix socket login rejected"), "{err}");
    // TCP clients never pass peer authentication.
    let e = Raw::connect(p.port, "root", "", "peerdb")
        .await
        .err()
        .expect("refused");
    assert_eq!(
        (e.severity.as_str(), e.code.as_str(), e.message.as_str()),
        ("FATAL", "08P01", "unix socket login rejected")
    );
    // The console under peer auth.
    let (code, out, err) = psql_unix(&p, None, "root", "pgbouncer", "SHOW STATE");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("paused|no"), "{out}");
}

/// SUSPEND waits for transactions to end, then holds new connections and new transactions until
/// RESUME; SHOW STATE says so; a transaction that outlives suspend_timeout is cut.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspend_holds_everything_until_resume() {
    let p = Pooler::start(pg(), "", "suspend_timeout = 2", "");
    let mut c = admin(&p).await;
    let mut idle = Raw::connect(p.port, "olly", "olly_pw", "testdb")
        .await
        .unwrap();
    let mut busy = Raw::connect(p.port, "olly", "olly_pw", "testdb")
        .await
        .unwrap();
    assert!(busy.query("BEGIN").await.error.is_none());
    let started = std::time::Instant::now();
    let a = c.query("SUSPEND").await;
    assert_eq!(a.tag.as_deref(), Some("SUSPEND"), "{a:?}");
    // It waited for `busy` until suspend_timeout, then cut it.
    assert!(started.elapsed() >= Duration::from_millis(1900));
    let gone = busy.query("SELECT 1").await;
    assert_eq!(
        gone.error.map(|e| e.message).as_deref(),
        Some("suspend_timeout")
    );
    let state = c.query("SHOW STATE").await;
    assert_eq!(
        state.get("key", "suspended", "value").as_deref(),
        Some("yes")
    );
    assert_eq!(state.get("key", "active", "value").as_deref(), Some("no"));
    assert_eq!(
        c.query("SUSPEND").await.error.map(|e| e.message).as_deref(),
        Some("already suspended/paused")
    );
    // Held: the idle client's next query and a new connection both wait.
    let query = tokio::spawn(async move {
        let a = idle.query("SELECT 41 + 1").await;
        (idle, a)
    });
    let port = p.port;
    let login = tokio::spawn(async move {
        Raw::connect(port, "olly", "olly_pw", "testdb")
            .await
            .is_ok()
    });
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        !query.is_finished() && !login.is_finished(),
        "held while suspended"
    );
    let a = c.query("RESUME").await;
    assert_eq!(a.tag.as_deref(), Some("RESUME"), "{a:?}");
    let (_, a) = tokio::time::timeout(Duration::from_secs(10), query)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(a.rows, vec![vec![Some("42".into())]]);
    assert!(tokio::time::timeout(Duration::from_secs(10), login)
        .await
        .unwrap()
        .unwrap());
    // SUSPEND is refused while a database is paused.
    assert!(c.query("PAUSE testdb").await.error.is_none());
    assert_eq!(
        c.query("SUSPEND").await.error.map(|e| e.message).as_deref(),
        Some("cannot suspend with paused databases")
    );
}

/// HBA `peer` with `map=` (auth_ident_file, PgBouncer 1.23+): the OS user may log in as the
/// names the map gives it (exact and `all` lines), nothing else; RELOAD re-reads the map.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hba_peer_with_an_ident_map() {
    let files = tempfile::tempdir().unwrap();
    let hba = files.path().join("hba.conf");
    let ident = files.path().join("ident.conf");
    std::fs::write(
        &hba,
        "local all md5user,root peer\n\
         local all all      peer map=ops\n",
    )
    .unwrap();
    std::fs::write(
        &ident,
        "# MAP  SYSTEM    DATABASE\n\
         ops    root      olly\n\
         ops    postgres  all\n",
    )
    .unwrap();
    let p = Pooler::start(
        pg(),
        "",
        &format!(
            "auth_type = hba\nauth_hba_file = {}\nauth_ident_file = {}",
            hba.display(),
            ident.display()
        ),
        "\"root\" \"\"\n\"postgres\" \"\"",
    );
    open_dir(&p);
    // root -> olly through the map, without a password.
    let (code, out, err) = psql_unix(&p, None, "olly", "testdb", "SELECT current_user");
    assert_eq!((code, out.as_str()), (0, "olly"), "{err}");
    // The map gives root nothing else; md5user's line has no map, so only the OS user md5user
    // passes it.
    for user in ["scramuser", "md5user"] {
        let (code, _, err) = psql_unix(&p, None, user, "testdb", "SELECT 1");
        assert_ne!(code, 0, "{user}");
        assert!(err.contains("unix socket login rejected"), "{user}: {err}");
    }
    // `all`: the OS user postgres may be any known user.
    let (code, out, err) = psql_unix(&p, Some("postgres"), "scramuser", "testdb", "SELECT 1");
    assert_eq!((code, out.as_str()), (0, "1"), "{err}");
    // A map line does not stand in for the same name: `nobody` is in no map.
    let (code, _, err) = psql_unix(&p, Some("nobody"), "olly", "testdb", "SELECT 1");
    assert_ne!(code, 0);
    assert!(err.contains("unix socket login rejected"), "{err}");
    // RELOAD re-reads the ident file: root loses olly and gets scramuser.
    std::fs::write(&ident, "ops root scramuser\n").unwrap();
    let (code, _, err) = psql_unix(&p, None, "pgbouncer", "pgbouncer", "RELOAD");
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = psql_unix(&p, None, "olly", "testdb", "SELECT 1");
    assert_ne!(code, 0);
    assert!(err.contains("unix socket login rejected"), "{err}");
    let (code, out, err) = psql_unix(&p, None, "scramuser", "testdb", "SELECT current_user");
    assert_eq!((code, out.as_str()), (0, "scramuser"), "{err}");
}
