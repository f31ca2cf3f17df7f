//! `Stream`: one byte stream to a client or a server, over TCP, TLS over TCP, or a Unix socket.
//!
//! An enum rather than a boxed trait object so the plaintext hot path dispatches with a match and
//! idle clients pay no extra allocation; only the TLS variant is boxed (rustls state is large).
//! TLS changes two things callers must respect: readiness also counts plaintext rustls already
//! decrypted (the socket may be quiet while a whole request waits in rustls), and writes may
//! stay buffered in rustls until `poll_flush`, so whoever stops writing to wait for an answer
//! flushes first (`send` does both).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpStream, UnixStream};
use tokio_rustls::TlsStream;

/// A connected byte stream.
#[derive(Debug)]
pub enum Stream {
    /// TCP (NODELAY set by whoever made it).
    Tcp(TcpStream),
    /// Unix domain socket.
    Unix(UnixStream),
    /// TLS over TCP, either side (boxed: a rustls connection is tens of KiB of state).
    Tls(Box<TlsStream<TcpStream>>),
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
            // Printed in every disconnect line: std's SocketAddr formatting is slow.
            PeerAddr::Tcp(a) => crate::logsafe::write_socket_addr(f, a),
            PeerAddr::Unix => f.write_str("unix"),
        }
    }
}

impl Stream {
    /// Waits until a read would not block, without reading: lets an idle client own no buffer.
    pub async fn readable(&self) -> io::Result<()> {
        std::future::poll_fn(|cx| self.poll_read_ready(cx)).await
    }

    /// Polls for read readiness without reading (the socket's registration keeps the waker).
    /// For TLS, plaintext rustls holds already counts as ready.
    pub fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Stream::Tcp(s) => s.poll_read_ready(cx),
            Stream::Unix(s) => s.poll_read_ready(cx),
            Stream::Tls(t) => {
                let (tcp, conn) = t.get_ref();
                // rustls stops wanting socket bytes while it holds unread plaintext (or after
                // close_notify): either way a read would not block.
                if !conn.wants_read() {
                    return Poll::Ready(Ok(()));
                }
                tcp.poll_read_ready(cx)
            }
        }
    }

    /// Writes all of `buf` and flushes: for the login and the pooler's own messages, after
    /// which we wait for the peer (TLS would otherwise keep the tail in rustls).
    pub async fn send(&mut self, buf: &[u8]) -> io::Result<()> {
        self.write_all(buf).await?;
        if let Stream::Tls(_) = self {
            self.flush().await?;
        }
        Ok(())
    }

    /// True for the TLS variant.
    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }

    /// PgBouncer's `tls` column text for this stream (empty when plain).
    pub fn tls_description(&self) -> String {
        match self {
            Stream::Tls(t) => super::tls::describe(t.get_ref().1),
            _ => String::new(),
        }
    }

    /// The client certificate the peer presented, if any (DER of the end entity).
    pub fn peer_certificate(&self) -> Option<&[u8]> {
        match self {
            Stream::Tls(t) => t
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| c.as_ref()),
            _ => None,
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
            Stream::Tls(t) => {
                if !t.get_ref().1.wants_read() {
                    return true;
                }
                t.get_ref().0.poll_read_ready(&mut cx)
            }
        };
        if !matches!(ready, Poll::Ready(_)) {
            return false;
        }
        // Readiness can be stale: confirm with a non-blocking read. Consuming a byte is fine,
        // because a server that sent anything while idle is closed anyway.
        let mut b = [0u8; 1];
        // For TLS this eats a record byte; the connection is closed anyway if anything came.
        let r = match self {
            Stream::Tcp(s) => s.try_read(&mut b),
            Stream::Unix(s) => s.try_read(&mut b),
            Stream::Tls(t) => t.get_ref().0.try_read(&mut b),
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
            Stream::Tls(s) => Pin::new(&mut **s).poll_read(cx, buf),
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
            Stream::Tls(s) => Pin::new(&mut **s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Unix(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(&mut **s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Unix(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(&mut **s).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::super::test_tls::tls_pair;
    use super::*;

    /// Plaintext rustls already decrypted counts as readable even when the socket itself has
    /// nothing more (an idle wait on the socket alone would sleep on a request it holds).
    #[tokio::test]
    async fn buffered_plaintext_is_readable() {
        let (mut server, mut client) = tls_pair().await;
        client.write_all(b"first-second").await.unwrap();
        client.flush().await.unwrap();
        let mut five = [0u8; 5];
        server.read_exact(&mut five).await.unwrap();
        assert_eq!(&five, b"first");
        // Drain the socket's readiness: the rest sits in rustls, not in the kernel.
        if let Stream::Tls(t) = &server {
            let mut b = [0u8; 16];
            assert_eq!(
                t.get_ref().0.try_read(&mut b).unwrap_err().kind(),
                io::ErrorKind::WouldBlock
            );
        }
        let ready = std::future::poll_fn(|cx| Poll::Ready(server.poll_read_ready(cx))).await;
        assert!(matches!(ready, Poll::Ready(Ok(()))));
        let mut rest = [0u8; 7];
        server.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"-second");
        assert!(server.is_tls());
        assert!(server.tls_description().starts_with("TLSv1.3/TLS_"));
    }

    /// `send` leaves nothing in rustls: the peer gets every byte without further writes.
    #[tokio::test]
    async fn send_flushes_tls() {
        let (mut server, mut client) = tls_pair().await;
        let big = vec![7u8; 300_000];
        let reader = tokio::spawn(async move {
            let mut got = vec![0u8; 300_000];
            client.read_exact(&mut got).await.unwrap();
            got
        });
        server.send(&big).await.unwrap();
        assert_eq!(reader.await.unwrap(), big);
    }
}
