//! Listening sockets (TCP on listen_addr:listen_port and the Unix socket
//! `<unix_socket_dir>/.s.PGSQL.<port>`) and the accept loops that spawn one session per client.
//! TCP accepting stops as soon as the pooler starts draining (taking in what the kernel already
//! queued, see [`take_backlog`]); the Unix socket stays open until
//! the process stops, so the console can still be reached (PgBouncer's `cleanup_sockets`), while
//! normal logins there are refused with `pooler is shutting down`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpSocket, TcpStream, UnixListener};

use crate::config::General;
use crate::context::Context;
use crate::net::{PeerAddr, Stream, TcpOptions};
use crate::session;
use crate::session::registry::LocalAddr;

/// The bound sockets, before accepting starts.
pub struct Listeners {
    tcp: Vec<TcpListener>,
    unix: Option<(UnixListener, PathBuf)>,
}

fn resolve_addrs(g: &General) -> std::io::Result<Vec<SocketAddr>> {
    let mut out = Vec::new();
    for a in &g.listen_addr {
        if a == "*" {
            out.push(SocketAddr::from(([0, 0, 0, 0], g.listen_port)));
            continue;
        }
        let host = a.trim_start_matches('[').trim_end_matches(']');
        let found = std::net::ToSocketAddrs::to_socket_addrs(&(host, g.listen_port))?;
        for addr in found {
            if !out.contains(&addr) {
                out.push(addr);
            }
        }
    }
    Ok(out)
}

impl Listeners {
    /// Binds everything the config asks for; fails if any socket cannot be bound.
    pub fn bind(g: &General) -> std::io::Result<Listeners> {
        let mut tcp = Vec::new();
        for addr in resolve_addrs(g)? {
            let sock = if addr.is_ipv4() {
                TcpSocket::new_v4()?
            } else {
                TcpSocket::new_v6()?
            };
            sock.set_reuseaddr(true)?;
            if g.so_reuseport {
                // Several processes on one port, the kernel spreading connections among them.
                sock.set_reuseport(true)?;
            }
            sock.bind(addr).map_err(|e| {
                std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}"))
            })?;
            // Before listen: accepted sockets inherit the buffers, and the window scale their
            // handshake announces follows the receive buffer (it cannot change afterwards).
            crate::net::set_socket_buffer(socket2::SockRef::from(&sock), g.tcp_socket_buffer);
            let l = sock.listen(g.listen_backlog)?;
            apply_defer_accept(&l, g.tcp_defer_accept);
            tcp.push(l);
        }
        let unix = if g.unix_socket_dir.is_empty() {
            None
        } else if g.unix_socket_dir.starts_with('@') {
            tracing::warn!(
                "unix_socket_dir {}: abstract Unix sockets are not supported, not listening on one",
                g.unix_socket_dir
            );
            None
        } else {
            let path =
                PathBuf::from(&g.unix_socket_dir).join(format!(".s.PGSQL.{}", g.listen_port));
            // A socket file left by a previous run blocks bind; nothing is listening on it if
            // connecting fails.
            if path.exists() && std::os::unix::net::UnixStream::connect(&path).is_err() {
                let _ = std::fs::remove_file(&path);
            }
            let l = UnixListener::bind(&path).map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("cannot listen on {}: {e}", path.display()),
                )
            })?;
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(
                &path,
                std::fs::Permissions::from_mode(g.unix_socket_mode),
            );
            if let Some(group) = &g.unix_socket_group {
                let gid = crate::sys::group_id(group).ok_or_else(|| {
                    std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        format!("unix_socket_group {group}: no such group"),
                    )
                })?;
                std::os::unix::fs::chown(&path, None, Some(gid))?;
            }
            Some((l, path))
        };
        Ok(Listeners { tcp, unix })
    }

    /// The first TCP address actually bound (tests bind port 0).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.tcp.first().and_then(|l| l.local_addr().ok())
    }

    /// Spawns the accept loops on `ctx.tasks`; TCP ends when draining starts, Unix at shutdown.
    pub fn spawn(self, ctx: &Arc<Context>) -> Option<PathBuf> {
        for l in self.tcp {
            let ctx2 = ctx.clone();
            ctx.tasks.spawn(accept_tcp(ctx2, l));
        }
        let path = self.unix.as_ref().map(|(_, p)| p.clone());
        if let Some((l, _)) = self.unix {
            let ctx2 = ctx.clone();
            ctx.tasks.spawn(accept_unix(ctx2, l));
        }
        path
    }
}

/// `tcp_defer_accept` is a switch in PgBouncer; on, the kernel holds a connection until its
/// first data arrives (for up to [`crate::sys::DEFER_ACCEPT_SECS`]).
fn apply_defer_accept(l: &TcpListener, setting: u32) {
    let secs = if setting > 0 {
        crate::sys::DEFER_ACCEPT_SECS
    } else {
        0
    };
    if let Err(e) = crate::sys::set_tcp_defer_accept(l, secs) {
        tracing::warn!("cannot set tcp_defer_accept: {e}");
    }
}

async fn accept_tcp(ctx: Arc<Context>, l: TcpListener) {
    // What the listener was given, so SET and RELOAD re-apply only what changed.
    let (mut defer, mut buffer) = {
        let g = &ctx.config().general;
        (g.tcp_defer_accept > 0, g.tcp_socket_buffer)
    };
    let mut changes = ctx.config_changes();
    loop {
        let accepted = tokio::select! {
            _ = ctx.drain.cancelled() => return take_backlog(&ctx, &l),
            Ok(()) = changes.changed() => {
                let g = &ctx.config().general;
                if (g.tcp_defer_accept > 0) != defer {
                    defer = g.tcp_defer_accept > 0;
                    apply_defer_accept(&l, g.tcp_defer_accept);
                }
                if g.tcp_socket_buffer != buffer {
                    buffer = g.tcp_socket_buffer;
                    // Once set, the kernel stops auto-tuning the buffers; going back to 0 cannot
                    // undo that on a bound listener, so its sockets keep the last size.
                    crate::net::set_socket_buffer(socket2::SockRef::from(&l), buffer);
                }
                continue;
            }
            r = l.accept() => r,
        };
        // SUSPEND: this connection waits unserved, and later ones in the kernel's backlog,
        // until RESUME.
        if ctx.is_suspended() {
            tokio::select! {
                _ = ctx.drain.cancelled() => return take_backlog(&ctx, &l),
                _ = ctx.wait_unsuspended() => {}
            }
        }
        match accepted {
            Ok((s, peer)) => serve_tcp(&ctx, s, peer),
            Err(e) => {
                tracing::warn!("accept failed: {e}");
                // EMFILE and friends: back off instead of spinning.
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

fn serve_tcp(ctx: &Arc<Context>, s: TcpStream, peer: SocketAddr) {
    TcpOptions::from_general(&ctx.config().general).apply(&s);
    let local = s.local_addr().map_or(LocalAddr::Unknown, LocalAddr::Tcp);
    session::spawn(ctx, Stream::Tcp(s), PeerAddr::Tcp(peer), local);
}

/// Serves the connections the kernel already completed for this listener, before it is closed.
/// Closing a listener resets every connection still in its accept queue; with so_reuseport the
/// other processes on the port would have served them, and the clients (a rolling restart's)
/// see `connection reset` instead (Linux migrates them to a sibling only with the sysctl
/// `net.ipv4.tcp_migrate_req = 1`). Taken in, they log in and are drained like any client.
/// A plain `accept(2)` until EAGAIN: tokio's `accept` would wait for the reactor to report
/// readiness, which it may not have seen yet for connections queued a moment ago.
fn take_backlog(ctx: &Arc<Context>, l: &TcpListener) {
    let sock = socket2::SockRef::from(l);
    let mut taken = 0usize;
    loop {
        let (s, addr) = match sock.accept() {
            Ok(pair) => pair,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                if e.kind() != std::io::ErrorKind::WouldBlock {
                    tracing::warn!("accept failed while closing the listener: {e}");
                }
                break;
            }
        };
        let Some(peer) = addr.as_socket() else {
            continue;
        };
        let s = std::net::TcpStream::from(s);
        match s
            .set_nonblocking(true)
            .and_then(|()| TcpStream::from_std(s))
        {
            Ok(s) => {
                serve_tcp(ctx, s, peer);
                taken += 1;
            }
            Err(e) => tracing::warn!("cannot take a queued connection in: {e}"),
        }
    }
    if taken > 0 {
        tracing::info!("took {taken} queued connections in before closing the listener");
    }
}

async fn accept_unix(ctx: Arc<Context>, l: UnixListener) {
    loop {
        let accepted = tokio::select! {
            _ = ctx.shutdown.cancelled() => return,
            r = l.accept() => r,
        };
        if ctx.is_suspended() {
            tokio::select! {
                _ = ctx.shutdown.cancelled() => return,
                _ = ctx.wait_unsuspended() => {}
            }
        }
        match accepted {
            Ok((s, _)) => {
                let local = LocalAddr::Unix(ctx.config().general.listen_port);
                session::spawn(&ctx, Stream::Unix(s), PeerAddr::Unix, local);
            }
            Err(e) => {
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}
