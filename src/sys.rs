//! Thin safe wrappers over the few libc calls std and socket2 lack: TCP_DEFER_ACCEPT on a
//! listening socket, user and group lookups (peer authentication, `unix_socket_group`), the
//! effective uid, and syslog(3) for the `syslog` setting.
//!
//! Besides `privileges`, the only module allowed `unsafe`; every block is one libc call with
//! buffers it owns. It holds no pooler logic.
#![allow(unsafe_code)]

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::AsRawFd;

use parking_lot::Mutex;

/// The seconds PgBouncer (libusual's `tune_accept`) passes when `tcp_defer_accept` is on:
/// the setting is a switch, and the kernel's wait for the first data is fixed at 45 s.
pub const DEFER_ACCEPT_SECS: u32 = 45;

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Sets TCP_DEFER_ACCEPT (seconds; 0 turns it off) on a listening TCP socket.
pub fn set_tcp_defer_accept(sock: &impl AsRawFd, secs: u32) -> io::Result<()> {
    let val = libc::c_int::try_from(secs).unwrap_or(libc::c_int::MAX);
    // SAFETY: setsockopt reads `size_of::<c_int>()` bytes from a live local.
    check(unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_DEFER_ACCEPT,
            (&val as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    })
}

/// Reads TCP_DEFER_ACCEPT back (the kernel rounds the seconds to its retransmit steps).
pub fn tcp_defer_accept(sock: &impl AsRawFd) -> io::Result<u32> {
    let mut val: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into a live local and updates `len`.
    check(unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_DEFER_ACCEPT,
            (&mut val as *mut libc::c_int).cast(),
            &mut len,
        )
    })?;
    Ok(u32::try_from(val).unwrap_or(0))
}

/// The effective uid of this process.
pub fn euid() -> u32 {
    // SAFETY: geteuid has no arguments and cannot fail.
    unsafe { libc::geteuid() }
}

/// The login name of `uid` (getpwuid_r), if it has one.
pub fn user_name(uid: u32) -> Option<String> {
    let mut buf = vec![0u8; 4096];
    // SAFETY: passwd is plain old data; an all-zero value is valid before getpwuid_r fills it.
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut out: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer refers to a live local or to `buf`, whose length is passed along.
    let rc =
        unsafe { libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr().cast(), buf.len(), &mut out) };
    if rc != 0 || out.is_null() || pw.pw_name.is_null() {
        return None;
    }
    // SAFETY: on success pw_name points to a NUL-terminated string inside `buf`.
    let name = unsafe { CStr::from_ptr(pw.pw_name) };
    Some(name.to_string_lossy().into_owned())
}

/// The gid of group `name` (getgrnam_r), if it exists.
pub fn group_id(name: &str) -> Option<u32> {
    let cname = CString::new(name).ok()?;
    let mut buf = vec![0u8; 16384];
    // SAFETY: group is plain old data; an all-zero value is valid before getgrnam_r fills it.
    let mut gr: libc::group = unsafe { std::mem::zeroed() };
    let mut out: *mut libc::group = std::ptr::null_mut();
    // SAFETY: every pointer refers to a live local or to `buf`, whose length is passed along.
    let rc = unsafe {
        libc::getgrnam_r(
            cname.as_ptr(),
            &mut gr,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut out,
        )
    };
    (rc == 0 && !out.is_null()).then_some(gr.gr_gid)
}

/// syslog(3) as the `syslog`, `syslog_ident` and `syslog_facility` settings ask, switchable at
/// run time. The identity string must outlive `openlog`, so it lives here; the lock keeps a
/// `syslog` call from racing a re-`openlog`.
#[derive(Debug, Default)]
pub struct Syslog {
    /// `Some((ident, facility))` while enabled.
    open: Mutex<Option<(CString, libc::c_int)>>,
}

/// `syslog_facility` names (already validated by the config) to libc's codes.
fn facility_code(name: &str) -> libc::c_int {
    match name {
        "auth" => libc::LOG_AUTH,
        "authpriv" => libc::LOG_AUTHPRIV,
        "user" => libc::LOG_USER,
        "local0" => libc::LOG_LOCAL0,
        "local1" => libc::LOG_LOCAL1,
        "local2" => libc::LOG_LOCAL2,
        "local3" => libc::LOG_LOCAL3,
        "local4" => libc::LOG_LOCAL4,
        "local5" => libc::LOG_LOCAL5,
        "local6" => libc::LOG_LOCAL6,
        "local7" => libc::LOG_LOCAL7,
        _ => libc::LOG_DAEMON,
    }
}

/// Log levels as syslog priorities.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    /// FATAL lines (LOG_CRIT, as PgBouncer).
    Critical,
    Error,
    Warning,
    Info,
    Debug,
}

impl Syslog {
    /// Opens, re-opens (new ident or facility) or closes the syslog connection.
    pub fn configure(&self, enabled: bool, ident: &str, facility: &str) {
        let mut open = self.open.lock();
        let want = if enabled {
            // An ident with a NUL cannot be passed to C; fall back to PgBouncer's default.
            let ident = CString::new(ident).unwrap_or_else(|_| c"pgbouncer".to_owned());
            Some((ident, facility_code(facility)))
        } else {
            None
        };
        if *open == want {
            return;
        }
        if open.is_some() {
            // SAFETY: closelog has no arguments.
            unsafe { libc::closelog() };
        }
        if let Some((ident, facility)) = &want {
            // SAFETY: `ident` is stored in `self.open` below and stays alive until the next
            // closelog, which happens under this same lock.
            unsafe { libc::openlog(ident.as_ptr(), libc::LOG_PID, *facility) };
        }
        *open = want;
    }

    /// True while syslog is on.
    pub fn enabled(&self) -> bool {
        self.open.lock().is_some()
    }

    /// Sends one message (no-op while syslog is off). NULs in the text are dropped.
    pub fn send(&self, priority: Priority, message: &str) {
        let open = self.open.lock();
        if open.is_none() {
            return;
        }
        let level = match priority {
            Priority::Critical => libc::LOG_CRIT,
            Priority::Error => libc::LOG_ERR,
            Priority::Warning => libc::LOG_WARNING,
            Priority::Info => libc::LOG_INFO,
            Priority::Debug => libc::LOG_DEBUG,
        };
        let text = CString::new(message.replace('\0', "")).unwrap_or_default();
        // SAFETY: a constant "%s" format with one NUL-terminated argument; the ident that
        // openlog keeps is held alive by `open`, locked for the call.
        unsafe { libc::syslog(level, c"%s".as_ptr(), text.as_ptr()) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defer_accept_round_trips_on_a_listener() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        set_tcp_defer_accept(&l, DEFER_ACCEPT_SECS).unwrap();
        assert!(tcp_defer_accept(&l).unwrap() > 0);
        set_tcp_defer_accept(&l, 0).unwrap();
        assert_eq!(tcp_defer_accept(&l).unwrap(), 0);
    }

    #[test]
    fn lookups() {
        assert_eq!(user_name(0).as_deref(), Some("root"));
        assert_eq!(group_id("root"), Some(0));
        assert_eq!(group_id("no-such-group-here"), None);
        assert_eq!(euid(), euid());
    }
}
