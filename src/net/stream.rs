//! `Stream`: one byte stream to a client or a server, over TCP or a Unix socket.
//!
//! An enum rather than a boxed trait object so the hot path dispatches with a match and idle
//! clients pay no extra allocation. TLS will become one more variant; callers already use only
//! `readable()` + the AsyncRead/AsyncWrite impls, which a TLS variant can provide.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

/// A connected byte stream.
#[derive(Debug)]
pub enum Stream {
    /// TCP (NODELAY set by whoever made it).
    Tcp(TcpStream),
    /// Unix domain socket.
    Unix(UnixStream),
}

/// Where the peer of a stream is, for logs and SHOW CLIENTS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerAddr {
    /// An IP peer.
    Tcp(std::net::SocketAddr),
    /// A Unix-socket peer (no address).
    Unix,
}

impl PeerAddr {
    /// Address text as PgBouncer shows it (`unix` for Unix sockets).
    pub fn host(&self) -> String {
        match self {
            PeerAddr::Tcp(a) => a.ip().to_string(),
            PeerAddr::Unix => "unix".to_string(),
        }
    }

    /// Port, or 0 for Unix sockets.
    pub fn port(&self) -> u16 {
        match self {
            PeerAddr::Tcp(a) => a.port(),
            PeerAddr::Unix => 0,
        }
    }
}

impl std::fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PeerAddr::Tcp(a) => write!(f, "{a}"),
            PeerAddr::Unix => write!(f, "unix"),
        }
    }
}

impl Stream {
    /// Waits until a read would not block, without reading: lets an idle client own no buffer.
    pub async fn readable(&self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.readable().await,
            Stream::Unix(s) => s.readable().await,
        }
    }

    /// Polls for read readiness without reading (the socket's registration keeps the waker).
    pub fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Stream::Tcp(s) => s.poll_read_ready(cx),
            Stream::Unix(s) => s.poll_read_ready(cx),
        }
    }

    /// Non-blocking probe used on idle servers: `true` when the peer sent data or closed
    /// (either way an idle server connection is no longer usable). Costs no syscall while the
    /// reactor has not marked the socket readable.
    pub fn is_readable_now(&self) -> bool {
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        let ready = match self {
            Stream::Tcp(s) => s.poll_read_ready(&mut cx),
            Stream::Unix(s) => s.poll_read_ready(&mut cx),
        };
        if !matches!(ready, Poll::Ready(_)) {
            return false;
        }
        // Readiness can be stale: confirm with a non-blocking read. Consuming a byte is fine,
        // because a server that sent anything while idle is closed anyway.
        let mut b = [0u8; 1];
        let r = match self {
            Stream::Tcp(s) => s.try_read(&mut b),
            Stream::Unix(s) => s.try_read(&mut b),
        };
        !matches!(r, Err(ref e) if e.kind() == io::ErrorKind::WouldBlock)
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}
