//! Child processes for the harness: bounded runs of client tools (psql, pgbench), stopping servers by
//! PID (never by name), a process-exit safety net, free ports and temp dirs.
//!
//! Must not: signal any process that is not our own child (or, after a bounded grace, that child's own
//! children), nor touch any path outside the temp dirs it made.

use std::collections::hash_map::RandomState;
use std::collections::HashSet;
use std::hash::{BuildHasher, Hasher};
use std::io::Read;
use std::net::TcpListener;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard, Once};
use std::thread;
use std::time::{Duration, Instant};

/// Lock a mutex even if a panicking test poisoned it: the harness state stays valid across panics.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Remove every `PG*` variable (PGHOST, PGPASSWORD, PGOPTIONS, ...) that the caller's environment
/// may carry, so client tools talk only to the server a test names.
pub(crate) fn clear_pg_env(cmd: &mut Command) -> &mut Command {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PG") {
            cmd.env_remove(key);
        }
    }
    cmd
}

/// Exit code of a finished process; a signal death `s` becomes `128 + s` like a shell reports it.
pub(crate) fn exit_code(status: ExitStatus) -> i32 {
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

/// Run a client tool to completion with stdout/stderr captured, killing it (by its PID) and panicking
/// if it runs past `timeout`. Returns (exit code, stdout, stderr).
pub(crate) fn run_bounded(
    cmd: &mut Command,
    timeout: Duration,
    what: &str,
) -> (i32, String, String) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    let out = drain(child.stdout.take().expect("invariant: stdout is piped"));
    let err = drain(child.stderr.take().expect("invariant: stderr is piped"));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait on a client tool") {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(10));
    };
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    match status {
        Some(status) => (exit_code(status), stdout, stderr),
        None => panic!(
            "{what} still running after {timeout:?}; killed it\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}"
        ),
    }
}

fn drain(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// PIDs whose parent is `pid` (from /proc/*/stat), e.g. the backends of a postmaster.
pub(crate) fn children_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&p| parent_of(p) == Some(pid))
        .collect()
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid ...": comm may hold spaces and parens, so split after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// True while a process with this PID exists (zombies included).
pub fn pid_alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks for existence and permission; it delivers nothing.
    let rc = unsafe { libc::kill(pid as libc::pid_t, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Send `sig` to our still-unreaped child. Holding the unreaped `Child` guarantees the PID is not
/// recycled. Returns false if the child had already exited.
pub(crate) fn signal_child(child: &mut Child, sig: i32) -> bool {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return false;
    }
    // SAFETY: plain kill(2) on the PID of a child we have not reaped yet.
    unsafe { libc::kill(child.id() as libc::pid_t, sig) == 0 }
}

/// Wait up to `timeout` for a child to exit; None if it is still running.
pub(crate) fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Stop a child: send `first` (e.g. SIGQUIT), wait up to `grace`, then SIGKILL its own children
/// (orphaned PostgreSQL backends would otherwise outlive a killed postmaster) and itself, and reap it.
pub(crate) fn stop_child(child: &mut Child, first: i32, grace: Duration) -> ExitStatus {
    if let Ok(Some(status)) = child.try_wait() {
        return status;
    }
    signal_child(child, first);
    if let Some(status) = wait_timeout(child, grace) {
        return status;
    }
    for pid in children_of(child.id()) {
        // SAFETY: kill(2) on a PID whose parent is our still-running, unreaped child.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
    }
    let _ = child.kill();
    child.wait().expect("wait for a killed child")
}

/// Safety net for servers whose owner is never dropped (e.g. a `Pg` kept in a `static`): at process
/// exit every registered PID still alive gets SIGKILL (with its children) and its dir is removed.
/// Normal cleanup is `Drop`, which unregisters.
static LIVE: Mutex<Vec<(u32, Option<PathBuf>)>> = Mutex::new(Vec::new());
static AT_EXIT: Once = Once::new();

pub(crate) fn register(pid: u32, dir: Option<&Path>) {
    AT_EXIT.call_once(|| {
        // SAFETY: registering a plain extern "C" fn that takes no arguments.
        unsafe { libc::atexit(kill_leftovers) };
    });
    lock(&LIVE).push((pid, dir.map(Path::to_path_buf)));
}

pub(crate) fn unregister(pid: u32) {
    lock(&LIVE).retain(|(p, _)| *p != pid);
}

extern "C" fn kill_leftovers() {
    let Ok(mut live) = LIVE.try_lock() else {
        return;
    };
    for (pid, dir) in live.drain(..) {
        for child in children_of(pid) {
            // SAFETY: kill(2) on children of a server we started and never reaped.
            unsafe { libc::kill(child as libc::pid_t, libc::SIGKILL) };
        }
        // SAFETY: kill(2) + waitpid(2) on our own unreaped child.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGKILL);
            libc::waitpid(pid as libc::pid_t, std::ptr::null_mut(), 0);
        }
        if let Some(dir) = dir {
            remove_dir(&dir);
        }
    }
}

/// True when env KEEP_TEST_DIRS is set: temp dirs survive the test for post-mortems.
pub fn keep_dirs() -> bool {
    std::env::var_os("KEEP_TEST_DIRS").is_some()
}

/// Remove a temp dir unless KEEP_TEST_DIRS is set (then say where it is).
pub(crate) fn remove_dir(dir: &Path) {
    if keep_dirs() {
        eprintln!("KEEP_TEST_DIRS: keeping {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// A fresh private temp dir (`/tmp` when root, so the `postgres` user can reach it; short, because a
/// Unix socket path must fit in 107 bytes). The caller owns removal.
pub(crate) fn make_temp_dir(prefix: &str) -> PathBuf {
    let mut base = std::env::temp_dir();
    if is_root() || base.as_os_str().len() > 60 {
        base = PathBuf::from("/tmp");
    }
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(&base)
        .unwrap_or_else(|e| panic!("cannot create a temp dir in {}: {e}", base.display()))
        .keep()
}

pub(crate) fn is_root() -> bool {
    // SAFETY: geteuid(2) cannot fail and has no side effects.
    unsafe { libc::geteuid() == 0 }
}

/// Ports handed out by this process, never handed out twice.
static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A TCP port that is free on 127.0.0.1 right now. Picked at random *below* the kernel's ephemeral
/// range, so outgoing connections of parallel tests cannot be sitting on it, and never twice per
/// process. Servers still retry with a new port if the bind races with another process.
pub fn free_port() -> u16 {
    let (lo, hi) = candidate_range();
    let state = RandomState::new();
    let mut handed = lock(&HANDED_OUT);
    let handed = handed.get_or_insert_with(HashSet::new);
    for attempt in 0u64..10_000 {
        let mut h = state.build_hasher();
        h.write_u64(attempt);
        let port = lo + (h.finish() % u64::from(hi - lo)) as u16;
        if !handed.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            handed.insert(port);
            return port;
        }
    }
    panic!("no free TCP port on 127.0.0.1 in {lo}..{hi}");
}

fn candidate_range() -> (u16, u16) {
    let ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|v| v.parse::<u16>().ok());
            Some((it.next()??, it.next()??))
        });
    match ephemeral {
        Some((lo, _)) if lo > 12_000 => (10_000, lo),
        Some((_, hi)) if hi < 63_000 => (hi + 1, 65_535),
        _ => (10_000, 65_000),
    }
}

/// Last `n` lines of a text file (for failure messages); empty if unreadable.
pub(crate) fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
