//! TCP socket options from `[pgbouncer]` (tcp_keepalive and friends, tcp_user_timeout), applied
//! to client and server sockets alike.

use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};
use tokio::net::{TcpSocket, TcpStream};

use crate::config::General;

/// The TCP options in force; cheap to copy into every connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TcpOptions {
    /// SO_KEEPALIVE.
    pub keepalive: bool,
    /// TCP_KEEPCNT; 0 = OS default.
    pub keepcnt: u32,
    /// TCP_KEEPIDLE in seconds; 0 = OS default.
    pub keepidle: u32,
    /// TCP_KEEPINTVL in seconds; 0 = OS default.
    pub keepintvl: u32,
    /// TCP_USER_TIMEOUT in milliseconds; 0 = OS default.
    pub user_timeout_ms: u32,
    /// `tcp_socket_buffer`: SO_SNDBUF and SO_RCVBUF in bytes; 0 = OS default.
    pub socket_buffer: u32,
}

impl TcpOptions {
    /// The options of a config.
    pub fn from_general(g: &General) -> Self {
        TcpOptions {
            keepalive: g.tcp_keepalive,
            keepcnt: g.tcp_keepcnt,
            keepidle: g.tcp_keepidle,
            keepintvl: g.tcp_keepintvl,
            user_timeout_ms: g.tcp_user_timeout,
            socket_buffer: g.tcp_socket_buffer,
        }
    }

    /// Connects to a server with tcp_socket_buffer set before the handshake, as PgBouncer does:
    /// the receive buffer fixes the TCP window scale in the SYN, and shrinking it on an open
    /// connection left the window tiny and every refill waiting on a delayed ACK (~200 ms per
    /// 8 KiB: pg_receivewal through the pooler at tcp_socket_buffer = 4096 never caught up).
    pub async fn connect(&self, addr: std::net::SocketAddr) -> std::io::Result<TcpStream> {
        let sock = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        set_socket_buffer(SockRef::from(&sock), self.socket_buffer);
        let s = sock.connect(addr).await?;
        self.apply_options(&s);
        Ok(s)
    }

    /// Applies NODELAY and these options to an accepted socket. Failures are logged, not fatal:
    /// the connection works without them, as with PgBouncer.
    pub fn apply(&self, s: &TcpStream) {
        self.apply_options(s);
        set_socket_buffer(SockRef::from(s), self.socket_buffer);
    }

    /// Everything but the buffer sizes.
    fn apply_options(&self, s: &TcpStream) {
        let _ = s.set_nodelay(true);
        let sock = SockRef::from(s);
        if self.keepalive {
            let mut ka = TcpKeepalive::new();
            if self.keepidle > 0 {
                ka = ka.with_time(Duration::from_secs(self.keepidle.into()));
            }
            if self.keepintvl > 0 {
                ka = ka.with_interval(Duration::from_secs(self.keepintvl.into()));
            }
            if self.keepcnt > 0 {
                ka = ka.with_retries(self.keepcnt);
            }
            let custom = self.keepidle > 0 || self.keepintvl > 0 || self.keepcnt > 0;
            let r = if custom {
                sock.set_tcp_keepalive(&ka)
            } else {
                sock.set_keepalive(true)
            };
            if let Err(e) = r {
                tracing::warn!("cannot set TCP keepalive options: {e}");
            }
        }
        if self.user_timeout_ms > 0 {
            let t = Duration::from_millis(self.user_timeout_ms.into());
            if let Err(e) = sock.set_tcp_user_timeout(Some(t)) {
                tracing::warn!("cannot set tcp_user_timeout: {e}");
            }
        }
    }
}

/// `tcp_socket_buffer` on a socket (SO_SNDBUF and SO_RCVBUF); 0 leaves it alone. A failure is
/// logged, not fatal: the socket works with the kernel's sizes, as with PgBouncer.
pub fn set_socket_buffer(sock: SockRef<'_>, size: u32) {
    if size == 0 {
        return;
    }
    let size = size as usize;
    if let Err(e) = sock
        .set_send_buffer_size(size)
        .and_then(|()| sock.set_recv_buffer_size(size))
    {
        tracing::warn!("cannot set tcp_socket_buffer: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn options_reach_the_socket() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (c, _) = tokio::join!(TcpStream::connect(addr), l.accept());
        let c = c.unwrap();
        let opts = TcpOptions {
            keepalive: true,
            keepcnt: 4,
            keepidle: 42,
            keepintvl: 7,
            user_timeout_ms: 1500,
            socket_buffer: 32768,
        };
        opts.apply(&c);
        let sock = SockRef::from(&c);
        assert!(sock.keepalive().unwrap());
        assert_eq!(sock.keepalive_time().unwrap(), Duration::from_secs(42));
        assert_eq!(sock.keepalive_interval().unwrap(), Duration::from_secs(7));
        assert_eq!(sock.keepalive_retries().unwrap(), 4);
        assert_eq!(
            sock.tcp_user_timeout().unwrap(),
            Some(Duration::from_millis(1500))
        );
        assert!(c.nodelay().unwrap());
        // Linux doubles the value it is given, for its bookkeeping.
        assert!(sock.send_buffer_size().unwrap() >= 32768);
        assert!(sock.recv_buffer_size().unwrap() >= 32768);
    }
}
