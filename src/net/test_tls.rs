//! Test helper: a TLS connection over loopback TCP, the pooler's end as a [`Stream`].

use std::sync::Arc;

use tokio::net::TcpStream;
use tokio_rustls::rustls;
use tokio_rustls::TlsStream;

use super::Stream;

/// A TLS pair over loopback TCP with a throwaway self-signed certificate.
pub(crate) async fn tls_pair() -> (Stream, tokio_rustls::client::TlsStream<TcpStream>) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server_cfg = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.der().clone()).unwrap();
    let client_cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (c, s) = tokio::join!(TcpStream::connect(addr), l.accept());
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let (c, s) = tokio::join!(
        tokio_rustls::TlsConnector::from(Arc::new(client_cfg)).connect(name, c.unwrap()),
        tokio_rustls::TlsAcceptor::from(Arc::new(server_cfg)).accept(s.unwrap().0)
    );
    (
        Stream::Tls(Box::new(TlsStream::Server(s.unwrap()))),
        c.unwrap(),
    )
}
