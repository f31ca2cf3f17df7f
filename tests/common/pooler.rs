//! `Pooler`: the built `ollyscale-pooler` binary run as a child process in front of a `Pg`, with a
//! generated pgbouncer.ini + userlist.txt in its own temp dir.
//!
//! Must not: share a dir or port with another test, signal anything but its own unreaped child, or
//! outlive its owner (Drop: SIGKILL, reap, remove the dir unless KEEP_TEST_DIRS is set).

use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use super::pg::{postgres_user, Pg};
use super::process::{
    is_root, lock, make_temp_dir, register, remove_dir, signal_child, stop_child, tail, unregister,
    wait_timeout,
};
use super::{conn_string, free_port};

/// How long the pooler may take to listen after it is spawned.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(20);

/// A running pooler owned by one test.
pub struct Pooler {
    /// Port the pooler listens on (127.0.0.1), as finally configured (a `listen_port` override in
    /// `pgbouncer_extra` wins).
    pub port: u16,
    /// The pooler's temp dir: pgbouncer.ini, userlist.txt, pooler.log, Unix socket.
    pub dir: PathBuf,
    /// Port we picked and write as the default `listen_port` (reused by `rewrite_config`).
    base_port: u16,
    /// Port of the PostgreSQL server `testdb` points at.
    pg_port: u16,
    /// `<dir>/pgbouncer.ini`
    pub ini_path: PathBuf,
    /// `<dir>/pooler.log` (stdout + stderr of the pooler)
    pub log_path: PathBuf,
    /// The pooler process; None only before the first spawn. Kept unreaped until we observe its exit,
    /// so its PID is never recycled while we may signal it.
    child: Mutex<Option<Child>>,
}

impl Pooler {
    /// Start the built `ollyscale-pooler` with the default config plus the given extra lines.
    pub fn start(
        pg: &Pg,
        databases_extra: &str,
        pgbouncer_extra: &str,
        userlist_extra: &str,
    ) -> Pooler {
        let bin = Path::new(env!("CARGO_BIN_EXE_ollyscale-pooler"));
        Pooler::start_program(bin, pg, databases_extra, pgbouncer_extra, userlist_extra)
    }

    /// `start` with all extras empty.
    pub fn start_default(pg: &Pg) -> Pooler {
        Pooler::start(pg, "", "", "")
    }

    /// Like `start`, with another program that takes the ini path as its only argument.
    pub fn start_program(
        program: &Path,
        pg: &Pg,
        databases_extra: &str,
        pgbouncer_extra: &str,
        userlist_extra: &str,
    ) -> Pooler {
        let extras = [databases_extra, pgbouncer_extra, userlist_extra];
        Pooler::launch(program, &[], false, pg.port, extras)
    }

    /// Like `start`, with `testdb` pointing at `pg_port` instead of a `Pg` (e.g. a Patroni
    /// node of a `PatroniLab`).
    pub fn start_for_port(
        pg_port: u16,
        databases_extra: &str,
        pgbouncer_extra: &str,
        userlist_extra: &str,
    ) -> Pooler {
        let bin = Path::new(env!("CARGO_BIN_EXE_ollyscale-pooler"));
        let extras = [databases_extra, pgbouncer_extra, userlist_extra];
        Pooler::launch(bin, &[], false, pg_port, extras)
    }

    /// The reference implementation: the system's real PgBouncer (Debian package) on the same
    /// generated config, for side-by-side checks. As root it runs as `postgres` (`-u postgres`,
    /// which then owns the dir), since PgBouncer refuses to run as root.
    pub fn start_pgbouncer(
        pg: &Pg,
        databases_extra: &str,
        pgbouncer_extra: &str,
        userlist_extra: &str,
    ) -> Pooler {
        let system = Path::new("/usr/sbin/pgbouncer");
        let program = if system.exists() {
            system
        } else {
            Path::new("pgbouncer")
        };
        let root = is_root();
        let pre_args: &[&str] = if root { &["-u", "postgres"] } else { &[] };
        let extras = [databases_extra, pgbouncer_extra, userlist_extra];
        Pooler::launch(program, pre_args, root, pg.port, extras)
    }

    /// The built pooler started with arguments and environment of the test's choosing (no
    /// generated config): `setup` gets the fresh temp dir (also the cwd), may write files there,
    /// and returns the arguments and extra environment. Waits until 127.0.0.1:`port` listens.
    /// For modes that build their own config, such as operator mode (`--operator`).
    pub fn start_custom(
        pg: &Pg,
        port: u16,
        setup: impl FnOnce(&Path) -> (Vec<String>, Vec<(String, String)>),
    ) -> Pooler {
        let dir = make_temp_dir("olly-pooler-");
        let pooler = Pooler {
            port,
            base_port: port,
            pg_port: pg.port,
            ini_path: dir.join("pgbouncer.ini"),
            log_path: dir.join("pooler.log"),
            dir,
            child: Mutex::new(None),
        };
        let (args, env) = setup(&pooler.dir);
        let bin = Path::new(env!("CARGO_BIN_EXE_ollyscale-pooler"));
        pooler.spawn_with(bin, &args, &env);
        if let Err(log) = pooler.wait_listening("[pgbouncer]\nlisten_addr = 127.0.0.1\n") {
            panic!("pooler did not start listening on 127.0.0.1:{port}:\n{log}");
        }
        pooler
    }

    fn launch(
        program: &Path,
        pre_args: &[&str],
        chown_to_postgres: bool,
        pg_port: u16,
        [databases_extra, pgbouncer_extra, userlist_extra]: [&str; 3],
    ) -> Pooler {
        let dir = make_temp_dir("olly-pooler-");
        let mut pooler = Pooler {
            port: 0,
            base_port: 0,
            pg_port,
            ini_path: dir.join("pgbouncer.ini"),
            log_path: dir.join("pooler.log"),
            dir,
            child: Mutex::new(None),
        };
        // From here on a panic drops `pooler`: child killed, dir removed.
        if chown_to_postgres {
            let (uid, gid) = postgres_user();
            std::os::unix::fs::chown(&pooler.dir, Some(uid), Some(gid)).expect("chown pooler dir");
        }
        for _ in 0..5 {
            pooler.base_port = free_port();
            pooler.rewrite_config(databases_extra, pgbouncer_extra, userlist_extra);
            let ini = fs::read_to_string(&pooler.ini_path).expect("read back pgbouncer.ini");
            pooler.port = ini_value(&ini, "pgbouncer", "listen_port")
                .and_then(|p| p.parse().ok())
                .unwrap_or(pooler.base_port);
            pooler.spawn(program, pre_args);
            match pooler.wait_listening(&ini) {
                Ok(()) => return pooler,
                Err(log) if port_in_use(&log) && pooler.port == pooler.base_port => continue,
                Err(log) => panic!(
                    "{} did not start listening on 127.0.0.1:{}:\n--- pooler.log ---\n{log}\n--- pgbouncer.ini ---\n{ini}",
                    program.display(),
                    pooler.port
                ),
            }
        }
        panic!(
            "pooler could not bind a port in 5 attempts:\n{}",
            pooler.log()
        );
    }

    /// Rewrite pgbouncer.ini and userlist.txt (same port and dir) with new extras, atomically; the
    /// running pooler sees them after the test sends SIGHUP (or RELOAD).
    pub fn rewrite_config(
        &self,
        databases_extra: &str,
        pgbouncer_extra: &str,
        userlist_extra: &str,
    ) {
        let ini = render_ini(
            self.pg_port,
            self.base_port,
            &self.dir,
            databases_extra,
            pgbouncer_extra,
        );
        write_atomic(&self.ini_path, &ini);
        write_atomic(
            &self.dir.join("userlist.txt"),
            &render_userlist(userlist_extra),
        );
    }

    /// Start the built pooler again on the same ini, port and dir after it exited (a rolling
    /// restart), and wait until it listens. The log file starts over. Panics if the previous
    /// process is still running or the new one does not listen.
    pub fn respawn(&self) {
        {
            let mut guard = lock(&self.child);
            let child = guard.as_mut().expect("invariant: pooler was spawned");
            let exited = child.try_wait().ok().flatten();
            assert!(
                exited.is_some(),
                "respawn: pooler {} still running",
                child.id()
            );
            unregister(child.id());
        }
        let bin = Path::new(env!("CARGO_BIN_EXE_ollyscale-pooler"));
        self.spawn(bin, &[]);
        let ini = fs::read_to_string(&self.ini_path).expect("read pgbouncer.ini");
        if let Err(log) = self.wait_listening(&ini) {
            panic!(
                "respawned pooler did not listen on 127.0.0.1:{}:\n{log}",
                self.port
            );
        }
    }

    /// Send `sig` (libc::SIGHUP, SIGTERM, SIGINT, ...) to the pooler; no-op if it already exited.
    pub fn signal(&self, sig: i32) {
        if let Some(child) = lock(&self.child).as_mut() {
            signal_child(child, sig);
        }
    }

    /// PID of the pooler process.
    pub fn pid(&self) -> u32 {
        lock(&self.child)
            .as_ref()
            .map(Child::id)
            .expect("invariant: pooler was spawned")
    }

    /// Everything the pooler wrote to stdout/stderr so far.
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&fs::read(&self.log_path).unwrap_or_default()).into_owned()
    }

    /// Poll the log until it contains `needle`; false after `timeout`. Blocking (use it from
    /// `spawn_blocking` if the test's runtime must keep polling clients meanwhile).
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.log().contains(needle) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Wait up to `timeout` for the pooler to exit (after SIGTERM/SIGINT/SHUTDOWN); None if still up.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let mut guard = lock(&self.child);
        let child = guard.as_mut().expect("invariant: pooler was spawned");
        let status = wait_timeout(child, timeout);
        if status.is_some() {
            unregister(child.id());
        }
        status
    }

    /// Connection string to the pooler: `host=127.0.0.1 port=<pooler port> user=U password=P dbname=D`.
    pub fn conn_str(&self, user: &str, password: &str, db: &str) -> String {
        conn_string(self.port, user, password, db)
    }

    /// tokio-postgres connection through the pooler (connection task spawned); panics on failure.
    pub async fn connect(&self, user: &str, password: &str, db: &str) -> tokio_postgres::Client {
        super::connect_to(&self.conn_str(user, password, db)).await
    }

    /// Like `connect`, returning the error (auth failures, refused connections...).
    pub async fn try_connect(
        &self,
        user: &str,
        password: &str,
        db: &str,
    ) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        super::try_connect_to(&self.conn_str(user, password, db)).await
    }

    fn spawn(&self, program: &Path, pre_args: &[&str]) {
        let mut args: Vec<String> = pre_args.iter().map(|a| a.to_string()).collect();
        args.push(self.ini_path.display().to_string());
        self.spawn_with(program, &args, &[]);
    }

    fn spawn_with(&self, program: &Path, args: &[String], env: &[(String, String)]) {
        let log = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&self.log_path)
            .expect("create pooler.log");
        let mut cmd = Command::new(program);
        cmd.args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup pooler.log"))
            .stderr(log);
        if std::env::var_os("RUST_BACKTRACE").is_none() {
            cmd.env("RUST_BACKTRACE", "1");
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
        register(child.id(), Some(&self.dir));
        *lock(&self.child) = Some(child);
    }

    /// Wait until our child listens (TCP 127.0.0.1:port, or only the Unix socket when listen_addr
    /// is empty). Err(log) if it exits first or never listens.
    fn wait_listening(&self, ini: &str) -> Result<(), String> {
        let tcp = ini_value(ini, "pgbouncer", "listen_addr").is_none_or(|a| !a.is_empty());
        let socket_dir = ini_value(ini, "pgbouncer", "unix_socket_dir")
            .map(PathBuf::from)
            .unwrap_or_else(|| self.dir.clone());
        let socket = socket_dir.join(format!(".s.PGSQL.{}", self.port));
        let deadline = Instant::now() + LISTEN_TIMEOUT;
        loop {
            let (pid, exited) = {
                let mut guard = lock(&self.child);
                let child = guard.as_mut().expect("invariant: pooler was spawned");
                (child.id(), child.try_wait().ok().flatten())
            };
            if let Some(status) = exited {
                unregister(pid);
                return Err(format!("[exited early: {status}]\n{}", self.log()));
            }
            let up = if tcp {
                listens_on(pid, self.port)
            } else {
                std::os::unix::net::UnixStream::connect(&socket).is_ok()
            };
            if up {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "[not listening after {LISTEN_TIMEOUT:?}]\n{}",
                    self.log()
                ));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Pooler {
    fn drop(&mut self) {
        let child = lock(&self.child).take();
        if let Some(mut child) = child {
            stop_child(&mut child, libc::SIGKILL, Duration::from_secs(5));
            unregister(child.id());
        }
        if thread::panicking() {
            eprintln!(
                "--- pooler log (port {}, {}), last 100 lines ---\n{}",
                self.port,
                self.log_path.display(),
                tail(&self.log_path, 100)
            );
        }
        remove_dir(&self.dir);
    }
}

/// The pgbouncer.ini the harness writes: defaults first, then the extras, so an extra key overrides
/// a default (last one wins). Extra lines are trimmed, so tests may indent them. A `[users]`
/// section may follow at the end of `pgbouncer_extra`.
pub fn render_ini(
    pg_port: u16,
    listen_port: u16,
    dir: &Path,
    databases_extra: &str,
    pgbouncer_extra: &str,
) -> String {
    let dir = dir.display();
    format!(
        "[databases]\n\
         testdb = host=127.0.0.1 port={pg_port} dbname=testdb\n\
         {}\n\
         [pgbouncer]\n\
         listen_addr = 127.0.0.1\n\
         listen_port = {listen_port}\n\
         unix_socket_dir = {dir}\n\
         auth_type = md5\n\
         auth_file = {dir}/userlist.txt\n\
         pool_mode = transaction\n\
         admin_users = olly\n\
         stats_users = stats\n\
         {}",
        trim_lines(databases_extra),
        trim_lines(pgbouncer_extra),
    )
}

/// userlist.txt: the four default users (plain-text passwords), then `extra` lines.
pub fn render_userlist(extra: &str) -> String {
    format!(
        "\"olly\" \"olly_pw\"\n\
         \"md5user\" \"md5_pw\"\n\
         \"scramuser\" \"scram_pw\"\n\
         \"stats\" \"stats_pw\"\n\
         {}",
        trim_lines(extra)
    )
}

/// Each non-empty line trimmed, newline-terminated.
fn trim_lines(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| format!("{l}\n"))
        .collect()
}

/// Last value of `key` in `[section]` of an ini text (keys and sections case-insensitive).
pub fn ini_value(ini: &str, section: &str, key: &str) -> Option<String> {
    let mut current = String::new();
    let mut found = None;
    for line in ini.lines().map(str::trim) {
        if line.starts_with(';') || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = name.trim().to_ascii_lowercase();
        } else if let Some((k, v)) = line.split_once('=') {
            if current.eq_ignore_ascii_case(section) && k.trim().eq_ignore_ascii_case(key) {
                found = Some(v.trim().to_string());
            }
        }
    }
    found
}

fn port_in_use(log: &str) -> bool {
    let log = log.to_ascii_lowercase();
    log.contains("address already in use")
        || log.contains("os error 98")
        || log.contains("eaddrinuse")
}

fn write_atomic(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, text).unwrap_or_else(|e| panic!("write {}: {e}", tmp.display()));
    // Readable by a pooler that dropped privileges (pgbouncer -u postgres), whatever the umask.
    let mode = std::os::unix::fs::PermissionsExt::from_mode(0o644);
    fs::set_permissions(&tmp, mode).unwrap_or_else(|e| panic!("chmod {}: {e}", tmp.display()));
    fs::rename(&tmp, path).unwrap_or_else(|e| panic!("rename to {}: {e}", path.display()));
}

/// True if process `pid` owns a socket listening on 127.0.0.1:`port` (or on any address), per
/// /proc/net/tcp{,6} and /proc/<pid>/fd. Checking ownership means a stranger on the same port is
/// never mistaken for our pooler, and no probe connection shows up in the pooler's stats.
fn listens_on(pid: u32, port: u16) -> bool {
    let inodes = listening_inodes(port);
    if inodes.is_empty() {
        return false;
    }
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        fs::read_link(fd.path()).ok().is_some_and(|target| {
            let t = target.to_string_lossy();
            t.strip_prefix("socket:[")
                .and_then(|s| s.strip_suffix(']'))
                .is_some_and(|inode| inodes.iter().any(|i| i == inode))
        })
    })
}

/// Inodes of LISTEN sockets on `port` bound to 127.0.0.1, 0.0.0.0, :: or ::ffff:127.0.0.1.
fn listening_inodes(port: u16) -> Vec<String> {
    let suffix = format!(":{port:04X}");
    let local_ok = [
        "0100007F",
        "00000000",
        "00000000000000000000000000000000",
        "0000000000000000FFFF00000100007F",
    ];
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // sl local rem st tx:rx tr:when retrnsmt uid timeout inode
            let (Some(local), Some(state), Some(inode)) = (f.get(1), f.get(3), f.get(9)) else {
                continue;
            };
            let addr_ok = local
                .strip_suffix(&suffix)
                .is_some_and(|addr| local_ok.contains(&addr));
            if addr_ok && *state == "0A" {
                inodes.push((*inode).to_string());
            }
        }
    }
    inodes
}
