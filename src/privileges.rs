//! Process-level set-up from the command line: `-u user` (drop root) and `-d` (detach).
//! The only module allowed `unsafe`: setuid/setgid have no safe std wrapper.

use std::ffi::CString;
use std::process::{Command, Stdio};

/// Switches the process to `user` (its uid, primary gid). Must run before any thread starts.
#[allow(unsafe_code)]
pub fn switch_user(user: &str) -> Result<(), String> {
    let name = CString::new(user).map_err(|_| "bad user name".to_string())?;
    // SAFETY: getpwnam returns a pointer to static storage or null; we read it before any other
    // call that could overwrite it, on a single thread.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    if pw.is_null() {
        return Err(format!("user {user} not found"));
    }
    // SAFETY: pw is non-null and points to a valid passwd struct (see above).
    let (uid, gid) = unsafe { ((*pw).pw_uid, (*pw).pw_gid) };
    // SAFETY: plain syscalls with integer arguments (setgroups with an empty list).
    let rc = unsafe {
        let root = libc::geteuid() == 0;
        // Dropping supplementary groups needs root; a non-root caller has none to drop.
        let groups_ok = !root || libc::setgroups(0, std::ptr::null()) == 0;
        if groups_ok && libc::setgid(gid) == 0 {
            libc::setuid(uid)
        } else {
            -1
        }
    };
    if rc != 0 {
        return Err(format!(
            "could not switch to user {user}: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// Starts this program again, without `-d`, in its own process group with no terminal, and
/// returns in the parent. A re-exec instead of fork(): forking a process is unsafe once any
/// library may have started a thread.
pub fn daemonize() -> Result<(), std::io::Error> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe()?;
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "-d" && a != "--daemon")
        .chain(std::iter::once("-q".to_string()))
        .collect();
    Command::new(exe)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()?;
    Ok(())
}
