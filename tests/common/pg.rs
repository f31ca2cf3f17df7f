//! `Pg`: a throwaway PostgreSQL server for one test (initdb in a temp dir, 127.0.0.1 on a free port,
//! Unix socket in its own dir), with the roles and database the integration tests expect.
//!
//! Must not: touch any system cluster, listen anywhere but 127.0.0.1 and its own socket dir, or
//! outlive its owner (Drop stops it by PID and removes the dir, also on panic).

use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use super::process::{
    clear_pg_env, is_root, lock, make_temp_dir, register, remove_dir, run_bounded, stop_child,
    tail, unregister,
};
use super::{conn_string, free_port, sql_literal};

/// How long PostgreSQL may take to accept connections after it is spawned.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a fast (SIGINT) or immediate (SIGQUIT) shutdown may take before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// Bound on one `psql` run against the server.
const PSQL_TIMEOUT: Duration = Duration::from_secs(120);

/// A running PostgreSQL server owned by one test. Superuser `olly`/`olly_pw`; `md5user`/`md5_pw`
/// (stored md5); `scramuser`/`scram_pw` (stored SCRAM); database `testdb` owned by olly, usable by all.
pub struct Pg {
    /// TCP port on 127.0.0.1.
    pub port: u16,
    /// Directory holding the server's Unix socket `.s.PGSQL.<port>`.
    pub socket_dir: PathBuf,
    /// The data directory (`postgresql.conf`, `postgres.log` live here).
    pub data_dir: PathBuf,
    /// The server log (stdout + stderr of the postmaster).
    pub log_path: PathBuf,
    /// Temp dir holding everything above; removed on drop unless KEEP_TEST_DIRS is set.
    root: PathBuf,
    /// Directory with initdb/postgres of the newest installed major version.
    bin_dir: PathBuf,
    /// (uid, gid) of the `postgres` system user when we are root; None: run as ourselves.
    owner: Option<(u32, u32)>,
    /// The postmaster; None while stopped. Kept unreaped while running, so its PID is never recycled.
    child: Mutex<Option<Child>>,
}

/// A `Pg` not yet initialised, in a fresh temp dir: dropping it removes the dir.
fn unstarted_pg(prefix: &str, owner: Option<(u32, u32)>) -> Pg {
    let root = make_temp_dir(prefix);
    Pg {
        port: 0,
        socket_dir: root.join("sock"),
        data_dir: root.join("data"),
        log_path: root.join("data").join("postgres.log"),
        bin_dir: pg_bin_dir(),
        owner,
        child: Mutex::new(None),
        root,
    }
}

impl Pg {
    /// Start a server with the default settings (see module docs) and the test roles and database.
    pub fn start() -> Pg {
        Pg::start_with_conf("")
    }

    /// Like `start`, with extra `postgresql.conf` lines appended (later lines win), e.g.
    /// `"max_connections = 20"`.
    pub fn start_with_conf(extra_conf: &str) -> Pg {
        let owner = if is_root() {
            Some(postgres_user())
        } else {
            None
        };
        let mut pg = unstarted_pg("olly-pg-", owner);
        // From here on a panic drops `pg`, which stops whatever was started and removes the dir.
        fs::create_dir(&pg.socket_dir).expect("create socket dir");
        pg.give_to_owner(&pg.root);
        pg.give_to_owner(&pg.socket_dir);
        pg.initdb();
        pg.write_conf(extra_conf);
        let mut last_log = String::new();
        for _ in 0..5 {
            pg.port = free_port();
            match pg.launch() {
                Ok(()) => {
                    pg.bootstrap();
                    return pg;
                }
                Err(log) => last_log = log,
            }
        }
        panic!("PostgreSQL could not bind a port in 5 attempts; last log:\n{last_log}");
    }

    /// A hot standby streaming from `primary` (pg_basebackup -R of it, on a port of its own):
    /// same roles and databases, read-only, `in_hot_standby = on`.
    pub fn start_standby_of(primary: &Pg) -> Pg {
        let mut pg = unstarted_pg("olly-pg-standby-", primary.owner);
        fs::create_dir(&pg.socket_dir).expect("create socket dir");
        pg.give_to_owner(&pg.root);
        pg.give_to_owner(&pg.socket_dir);
        let mut cmd = pg.server_command("pg_basebackup");
        cmd.arg("-D")
            .arg(&pg.data_dir)
            .arg("-h")
            .arg(&primary.socket_dir)
            .args(["-p", &primary.port.to_string(), "-U", "olly"])
            .args(["-R", "--checkpoint=fast", "--no-sync"]);
        let (code, out, err) = run_bounded(
            &mut cmd,
            Duration::from_secs(120),
            "pg_basebackup (standby)",
        );
        assert!(
            code == 0,
            "pg_basebackup failed (exit {code}):\n{err}\n{out}"
        );
        // The primary's harness lines came along; these later ones win (own socket dir).
        pg.write_conf("hot_standby = on\ndefault_transaction_read_only = on");
        let mut last_log = String::new();
        for _ in 0..5 {
            pg.port = free_port();
            match pg.launch() {
                Ok(()) => return pg,
                Err(log) => last_log = log,
            }
        }
        panic!("standby could not bind a port in 5 attempts; last log:\n{last_log}");
    }

    /// PID of the running postmaster (panics if stopped).
    pub fn pid(&self) -> u32 {
        lock(&self.child)
            .as_ref()
            .map(Child::id)
            .expect("Pg::pid: server is stopped")
    }

    /// Connection string over TCP: `host=127.0.0.1 port=N user=U password=P dbname=D`.
    pub fn conn_str(&self, user: &str, password: &str, db: &str) -> String {
        conn_string(self.port, user, password, db)
    }

    /// tokio-postgres connection straight to PostgreSQL (no pooler); panics on failure.
    pub async fn connect(&self, user: &str, password: &str, db: &str) -> tokio_postgres::Client {
        super::connect_to(&self.conn_str(user, password, db)).await
    }

    /// SCRAM secret of `role` as stored in pg_authid (`SCRAM-SHA-256$4096:...`), for userlist.txt.
    pub fn scram_secret(&self, role: &str) -> String {
        let secret = self.psql_db(
            "postgres",
            &format!(
                "SELECT rolpassword FROM pg_authid WHERE rolname = {}",
                sql_literal(role)
            ),
        );
        assert!(!secret.is_empty(), "role {role} has no password");
        secret
    }

    /// Run SQL as superuser `olly` over the Unix socket, in database `testdb`
    /// (`psql -X -A -t -q -v ON_ERROR_STOP=1 -c <sql>`); stdout trimmed. Panics with stderr on failure.
    pub fn psql(&self, sql: &str) -> String {
        self.psql_db("testdb", sql)
    }

    /// `psql` in another database (e.g. "postgres").
    pub fn psql_db(&self, db: &str, sql: &str) -> String {
        self.psql_many(db, &[sql])
    }

    /// Each string is a separate `-c`, run in order in one session (so `CREATE DATABASE` works and a
    /// `SET` carries over).
    fn psql_many(&self, db: &str, sqls: &[&str]) -> String {
        let mut cmd = Command::new(pg_tool("psql"));
        clear_pg_env(&mut cmd)
            .args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(&self.socket_dir)
            .args(["-p", &self.port.to_string(), "-U", "olly", "-d", db]);
        for sql in sqls {
            cmd.args(["-c", sql]);
        }
        let (code, out, err) = run_bounded(&mut cmd, PSQL_TIMEOUT, "psql (superuser)");
        assert!(
            code == 0,
            "psql as superuser failed (exit {code}) running {sqls:?}\n--- stderr ---\n{err}\n--- stdout ---\n{out}"
        );
        out.trim().to_string()
    }

    /// Client backends connected to `db` right now, excluding the query's own session.
    pub fn backend_count(&self, db: &str) -> i64 {
        let sql = format!(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = {} \
             AND backend_type = 'client backend' AND pid <> pg_backend_pid()",
            sql_literal(db)
        );
        let out = self.psql_db("postgres", &sql);
        out.parse()
            .unwrap_or_else(|_| panic!("backend_count: unexpected psql output {out:?}"))
    }

    /// pg_terminate_backend every client backend on `db` except our own session, waiting (up to 5 s
    /// each) until they are gone.
    pub fn terminate_backends(&self, db: &str) {
        let sql = format!(
            "SELECT count(pg_terminate_backend(pid, 5000)) FROM pg_stat_activity WHERE datname = {} \
             AND backend_type = 'client backend' AND pid <> pg_backend_pid()",
            sql_literal(db)
        );
        self.psql_db("postgres", &sql);
    }

    /// True while the postmaster runs.
    pub fn is_running(&self) -> bool {
        lock(&self.child)
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Clean stop (fast shutdown: SIGINT, sessions terminated, checkpoint; SIGKILL after a bound).
    /// Data dir and port are kept, so `restart` brings the same server back. No-op when stopped.
    pub fn stop(&self) {
        self.stop_with(libc::SIGINT);
    }

    /// Crash-like stop (immediate shutdown: SIGQUIT; SIGKILL after a bound); `restart` then runs
    /// crash recovery. With synchronous_commit=off the last few hundred ms of commits may be lost.
    pub fn crash(&self) {
        self.stop_with(libc::SIGQUIT);
    }

    fn stop_with(&self, signal: i32) {
        let child = lock(&self.child).take();
        if let Some(mut child) = child {
            stop_child(&mut child, signal, STOP_GRACE);
            unregister(child.id());
        }
    }

    /// `stop` (if running) and start again on the same port and data (after `crash`, PostgreSQL
    /// runs crash recovery first); panics with the log if it does not come back.
    pub fn restart(&self) {
        self.stop();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match self.launch() {
                Ok(()) => return,
                // Port briefly taken (e.g. by a reconnecting client's socket): try again.
                Err(log) if Instant::now() >= deadline => {
                    panic!("PostgreSQL restart on port {} failed:\n{log}", self.port)
                }
                Err(_) => thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    fn initdb(&self) {
        let log_path = self.root.join("initdb.log");
        let log = fs::File::create(&log_path).expect("create initdb.log");
        let mut cmd = self.server_command("initdb");
        cmd.arg("-D")
            .arg(&self.data_dir)
            .args(["-U", "olly", "--auth-local=trust", "--auth-host=md5"])
            .args([
                "-E",
                "UTF8",
                "--no-locale",
                "--no-sync",
                "--no-instructions",
            ])
            .stdout(log.try_clone().expect("dup initdb.log"))
            .stderr(log);
        let out = cmd
            .status()
            .unwrap_or_else(|e| panic!("cannot run {}/initdb: {e}", self.bin_dir.display()));
        assert!(
            out.success(),
            "initdb failed ({out}):\n{}",
            fs::read_to_string(&log_path).unwrap_or_default()
        );
    }

    fn write_conf(&self, extra_conf: &str) {
        let hba = "local all all trust\n\
                   local replication all trust\n\
                   host all all 127.0.0.1/32 md5\n\
                   host replication all 127.0.0.1/32 md5\n";
        fs::write(self.data_dir.join("pg_hba.conf"), hba).expect("write pg_hba.conf");
        let conf = format!(
            "\n# ollyscale-pooler test harness\n\
             listen_addresses = '127.0.0.1'\n\
             unix_socket_directories = '{}'\n\
             max_connections = 300\n\
             fsync = off\n\
             synchronous_commit = off\n\
             full_page_writes = off\n\
             lc_messages = 'C'\n\
             log_line_prefix = '%m [%p] %q%u@%d '\n\
             {extra_conf}\n",
            self.socket_dir.display()
        );
        let mut f = OpenOptions::new()
            .append(true)
            .open(self.data_dir.join("postgresql.conf"))
            .expect("open postgresql.conf");
        std::io::Write::write_all(&mut f, conf.as_bytes()).expect("append postgresql.conf");
    }

    /// Spawn the postmaster on `self.port` and wait until it is ready. Err(log) when it exited
    /// because the port was taken (caller retries); panics with the log on any other failure.
    fn launch(&self) -> Result<(), String> {
        let log_start = fs::metadata(&self.log_path).map(|m| m.len()).unwrap_or(0);
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("open postgres.log");
        let mut cmd = self.server_command("postgres");
        cmd.arg("-D")
            .arg(&self.data_dir)
            .args(["-p", &self.port.to_string()])
            .stdout(log.try_clone().expect("dup postgres.log"))
            .stderr(log);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}/postgres: {e}", self.bin_dir.display()));
        let pid = child.id();
        register(pid, Some(&self.root));
        *lock(&self.child) = Some(child);

        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let exited = lock(&self.child)
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                lock(&self.child).take();
                unregister(pid);
                let log = self.log_since(log_start);
                if log.contains("Address already in use") || log.contains("could not bind") {
                    return Err(log);
                }
                panic!("PostgreSQL exited during startup ({status}); log:\n{log}");
            }
            if self.is_ready(pid) {
                return Ok(());
            }
            assert!(
                Instant::now() < deadline,
                "PostgreSQL not ready after {START_TIMEOUT:?}; log:\n{}",
                self.log_since(log_start)
            );
            thread::sleep(Duration::from_millis(25));
        }
    }

    /// postmaster.pid names our PID and says "ready" (line 8), and the TCP port accepts.
    fn is_ready(&self, pid: u32) -> bool {
        let Ok(pidfile) = fs::read_to_string(self.data_dir.join("postmaster.pid")) else {
            return false;
        };
        let lines: Vec<&str> = pidfile.lines().map(str::trim).collect();
        lines.first() == Some(&pid.to_string().as_str())
            && lines.get(7) == Some(&"ready")
            && std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
    }

    fn bootstrap(&self) {
        self.psql_many(
            "postgres",
            &[
                "SET password_encryption = 'scram-sha-256'",
                "ALTER ROLE olly PASSWORD 'olly_pw'",
                "CREATE ROLE scramuser LOGIN PASSWORD 'scram_pw'",
                "SET password_encryption = 'md5'",
                "CREATE ROLE md5user LOGIN PASSWORD 'md5_pw'",
                "CREATE DATABASE testdb OWNER olly",
                "GRANT ALL ON DATABASE testdb TO md5user, scramuser",
            ],
        );
        self.psql_many(
            "testdb",
            &[
                "GRANT ALL ON SCHEMA public TO md5user, scramuser",
                "ALTER DEFAULT PRIVILEGES FOR ROLE olly IN SCHEMA public \
                 GRANT ALL ON TABLES TO md5user, scramuser",
                "ALTER DEFAULT PRIVILEGES FOR ROLE olly IN SCHEMA public \
                 GRANT ALL ON SEQUENCES TO md5user, scramuser",
            ],
        );
    }

    /// A PostgreSQL server program, run as the `postgres` user when we are root.
    fn server_command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bin_dir.join(program));
        clear_pg_env(&mut cmd)
            .env("LC_ALL", "C")
            .current_dir(&self.root)
            .stdin(Stdio::null());
        if let Some((uid, gid)) = self.owner {
            // std drops supplementary groups, then setgid + setuid, in the child before exec.
            std::os::unix::process::CommandExt::uid(&mut cmd, uid);
            std::os::unix::process::CommandExt::gid(&mut cmd, gid);
        }
        cmd
    }

    fn give_to_owner(&self, path: &Path) {
        if let Some((uid, gid)) = self.owner {
            std::os::unix::fs::chown(path, Some(uid), Some(gid))
                .unwrap_or_else(|e| panic!("chown {} to postgres: {e}", path.display()));
        }
    }

    fn log_since(&self, offset: u64) -> String {
        let bytes = fs::read(&self.log_path).unwrap_or_default();
        let start = usize::try_from(offset).unwrap_or(0).min(bytes.len());
        String::from_utf8_lossy(&bytes[start..]).into_owned()
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        self.crash();
        if thread::panicking() {
            eprintln!(
                "--- PostgreSQL log (port {}, {}), last 40 lines ---\n{}",
                self.port,
                self.log_path.display(),
                tail(&self.log_path, 40)
            );
        }
        remove_dir(&self.root);
    }
}

/// A PostgreSQL client tool (psql, pgbench) from the same bin dir as the server: avoids the
/// Debian pg_wrapper (~40 ms a call) and version mismatches. Falls back to `$PATH`.
pub(crate) fn pg_tool(name: &str) -> PathBuf {
    let path = pg_bin_dir().join(name);
    if path.exists() {
        path
    } else {
        PathBuf::from(name)
    }
}

/// `bin/` of the newest PostgreSQL under /usr/lib/postgresql (env PG_BIN_DIR overrides), cached.
fn pg_bin_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(find_pg_bin_dir).clone()
}

fn find_pg_bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("PG_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let base = Path::new("/usr/lib/postgresql");
    let newest = fs::read_dir(base)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .max_by_key(|(v, _)| *v);
    match newest {
        Some((_, bin)) => bin,
        None => panic!(
            "no PostgreSQL server under {}/<version>/bin (install postgresql, or set PG_BIN_DIR)",
            base.display()
        ),
    }
}

/// (uid, gid) of the `postgres` system user; PostgreSQL refuses to run as root.
pub(crate) fn postgres_user() -> (u32, u32) {
    let id = |flag: &str| -> u32 {
        let out = Command::new("id")
            .args([flag, "postgres"])
            .output()
            .expect("run id(1)");
        assert!(
            out.status.success(),
            "running as root but there is no `postgres` user (install the postgresql package): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("numeric id")
    };
    (id("-u"), id("-g"))
}
