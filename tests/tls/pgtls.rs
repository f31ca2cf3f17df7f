//! A tokio-postgres TLS connector over tokio-rustls (ring), so the tests drive the pooler's TLS
//! with tokio-postgres as well as with psql, without another TLS crate.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};
use tokio_rustls::rustls::{self, ClientConfig};

/// Makes connectors that trust `ca.crt` of a test CA (verify-full: chain and host name).
#[derive(Clone)]
pub struct RustlsTls(Arc<ClientConfig>);

impl RustlsTls {
    /// Trusts the certificates in the PEM file `ca`.
    pub fn new(ca: &std::path::Path) -> RustlsTls {
        let mut roots = rustls::RootCertStore::empty();
        let pem = std::fs::read(ca).expect("read CA");
        for c in rustls_pki_types::pem::PemObject::pem_slice_iter(&pem) {
            roots.add(c.expect("CA PEM")).expect("add CA");
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let cfg = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        RustlsTls(Arc::new(cfg))
    }
}

/// One connection's connector.
pub struct Connect(Arc<ClientConfig>, rustls_pki_types::ServerName<'static>);

/// The TLS stream tokio-postgres reads and writes.
pub struct Stream<S>(tokio_rustls::client::TlsStream<S>);

impl<S> MakeTlsConnect<S> for RustlsTls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = Stream<S>;
    type TlsConnect = Connect;
    type Error = io::Error;

    fn make_tls_connect(&mut self, domain: &str) -> io::Result<Connect> {
        let name = rustls_pki_types::ServerName::try_from(domain.to_string())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        Ok(Connect(self.0.clone(), name))
    }
}

impl<S> TlsConnect<S> for Connect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = Stream<S>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Stream<S>>> + Send>>;

    fn connect(self, tcp: S) -> Self::Future {
        Box::pin(async move {
            let s = tokio_rustls::TlsConnector::from(self.0)
                .connect(self.1, tcp)
                .await?;
            Ok(Stream(s))
        })
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> TlsStream for Stream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Stream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Stream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// tokio-postgres over TLS to `conninfo` (which names sslmode); the connection task is spawned.
pub async fn connect(
    conninfo: &str,
    tls: &RustlsTls,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, conn) = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        tokio_postgres::connect(conninfo, tls.clone()),
    )
    .await
    .expect("connect hung")?;
    // Detached: ends when the client is dropped.
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}
