//! rustls configurations built from `client_tls_*` (we accept clients) and `server_tls_*` (we
//! connect to PostgreSQL), the certificate checks each sslmode asks for, and the `tls` text of
//! SHOW CLIENTS/SERVERS.
//!
//! Only the `ring` provider is used (aws-lc-rs needs cmake). Files are read here, when a
//! configuration is put in force (start, RELOAD, SIGHUP); live connections keep the config they
//! were made with, so a reload never drops anyone. Must not touch sockets beyond the handshake.

use std::hash::{Hash, Hasher};
use std::path::Path;
use std::sync::Arc;

use parking_lot::RwLock;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio_rustls::rustls::{
    self,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    client::WebPkiServerVerifier,
    crypto::CryptoProvider,
    server::danger::{ClientCertVerified, ClientCertVerifier},
    server::WebPkiClientVerifier,
    CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, RootCertStore,
    ServerConfig, SignatureScheme,
};

use super::tls_legacy as legacy;

mod suites;
use suites::{provider, suite_name, versions};

use crate::config::{SslMode, TlsSettings};

fn read(path: &Path, fp: &mut impl Hasher) -> Result<Vec<u8>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    bytes.hash(fp);
    Ok(bytes)
}

fn certs(path: &Path, fp: &mut impl Hasher) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = read(path, fp)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate found", path.display()));
    }
    Ok(certs)
}

fn key(path: &Path, fp: &mut impl Hasher) -> Result<PrivateKeyDer<'static>, String> {
    let bytes = read(path, fp)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))
}

/// A CA file: the store webpki checks against, and the certificates themselves for the
/// fallback of `tls_legacy` (a v1 CA certificate, which webpki cannot take as an anchor, is
/// only in the second).
struct Roots {
    /// What webpki trusts (None when it could take none of the file's certificates).
    store: Option<Arc<RootCertStore>>,
    /// Every certificate of the file.
    ders: Vec<CertificateDer<'static>>,
}

fn roots(path: &Path, fp: &mut impl Hasher) -> Result<Roots, String> {
    let mut store = RootCertStore::empty();
    let ders = certs(path, fp)?;
    let mut refused = None;
    for c in &ders {
        if let Err(e) = store.add(c.clone()) {
            refused = Some(e);
        }
    }
    if store.is_empty() && !ders.iter().any(|d| legacy::parses(d)) {
        let e = refused.map(|e| e.to_string()).unwrap_or_default();
        return Err(format!("{}: {e}", path.display()));
    }
    Ok(Roots {
        store: (!store.is_empty()).then(|| Arc::new(store)),
        ders,
    })
}

/// Builds the config that accepts clients; `None` when client_tls_sslmode is disable.
pub fn acceptor_config(s: &TlsSettings) -> Result<Option<Arc<ServerConfig>>, String> {
    if s.sslmode == SslMode::Disable {
        return Ok(None);
    }
    let (Some(key_file), Some(cert_file)) = (&s.key_file, &s.cert_file) else {
        return Err(format!(
            "client_tls_sslmode {} needs client_tls_key_file and client_tls_cert_file",
            s.sslmode.as_str()
        ));
    };
    let fp = &mut std::collections::hash_map::DefaultHasher::new();
    let provider = Arc::new(provider(s, "client_tls")?);
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions(&s.protocols)?)
        .map_err(|e| e.to_string())?;
    // verify-ca/verify-full: a client certificate signed by the CA is mandatory. Below that a
    // CA file still lets clients present one (for auth_type cert through HBA).
    let builder = match (&s.ca_file, s.sslmode >= SslMode::VerifyCa) {
        (Some(ca), mandatory) => {
            let roots = roots(ca, fp)?;
            let webpki = match &roots.store {
                Some(store) => {
                    let b = WebPkiClientVerifier::builder_with_provider(
                        store.clone(),
                        provider.clone(),
                    );
                    let b = if mandatory {
                        b
                    } else {
                        b.allow_unauthenticated()
                    };
                    Some(b.build().map_err(|e| e.to_string())?)
                }
                None => None,
            };
            builder.with_client_cert_verifier(Arc::new(ClientVerifier {
                webpki,
                roots: roots.ders,
                provider: provider.clone(),
                mandatory,
            }))
        }
        (None, true) => {
            return Err(format!(
                "client_tls_sslmode {} needs client_tls_ca_file",
                s.sslmode.as_str()
            ))
        }
        (None, false) => builder.with_no_client_auth(),
    };
    // Served through a resolver rather than with_single_cert, whose key check parses the
    // certificate with webpki and so refuses the v1 certificates OpenSSL serves.
    let served = legacy::certified_key(&provider, certs(cert_file, fp)?, key(key_file, fp)?)
        .map_err(|e| format!("client TLS key/certificate: {e}"))?;
    let cfg = builder.with_cert_resolver(Arc::new(legacy::FixedServerCert(served)));
    Ok(Some(Arc::new(cfg)))
}

/// Checks client certificates against client_tls_ca_file: webpki first, and `tls_legacy` for
/// what webpki cannot parse (v1 certificates), as OpenSSL accepts them for PgBouncer.
#[derive(Debug)]
struct ClientVerifier {
    /// webpki's verifier (None when it could take no certificate of the CA file).
    webpki: Option<Arc<dyn ClientCertVerifier>>,
    /// The CA file's certificates, for the fallback.
    roots: Vec<CertificateDer<'static>>,
    provider: Arc<CryptoProvider>,
    /// verify-ca/verify-full: a certificate is required.
    mandatory: bool,
}

impl ClientCertVerifier for ClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }
    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        match &self.webpki {
            Some(w) => w.root_hint_subjects(),
            None => &[],
        }
    }
    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let first = match &self.webpki {
            Some(w) => w.verify_client_cert(end_entity, intermediates, now),
            None => Err(rustls::Error::InvalidCertificate(
                CertificateError::BadEncoding,
            )),
        };
        match first {
            Err(e) if legacy::retry_after(&e) => {
                let algs = &self.provider.signature_verification_algorithms;
                legacy::verify_chain(end_entity, intermediates, &self.roots, now, algs)
                    .map(|()| ClientCertVerified::assertion())
            }
            r => r,
        }
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        handshake_signature(m, c, d, &self.provider, false)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        handshake_signature(m, c, d, &self.provider, true)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A handshake signature by the peer's certificate key: rustls's check, and for a certificate
/// webpki cannot parse, the key taken out of it by `tls_legacy`.
fn handshake_signature(
    m: &[u8],
    c: &CertificateDer<'_>,
    d: &DigitallySignedStruct,
    provider: &CryptoProvider,
    tls13: bool,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    let algs = &provider.signature_verification_algorithms;
    let r = if tls13 {
        rustls::crypto::verify_tls13_signature(m, c, d, algs)
    } else {
        rustls::crypto::verify_tls12_signature(m, c, d, algs)
    };
    match r {
        Err(e) if legacy::retry_after(&e) => legacy::verify_handshake_signature(m, c, d, algs),
        r => r,
    }
}

/// Checks the server's certificate as server_tls_sslmode asks. require (and below): no identity
/// check, as libpq's sslmode=require; the handshake signatures are still checked, so the peer
/// must hold the certificate's key. verify-ca: the chain must reach the CA. verify-full: and the
/// host name must match (subjectAltName, else the CN, as libpq). webpki decides first; what it
/// cannot parse or match (v1 certificates, CN-only names) goes to `tls_legacy`.
#[derive(Debug)]
struct ServerVerifier {
    /// webpki's verifier for verify-ca/verify-full (None: require, or a CA file webpki could
    /// take nothing from).
    webpki: Option<Arc<WebPkiServerVerifier>>,
    /// verify-ca/verify-full: the CA file's certificates.
    roots: Option<Vec<CertificateDer<'static>>>,
    /// verify-full: the host name is checked.
    full: bool,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for ServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(roots) = &self.roots else {
            return Ok(ServerCertVerified::assertion());
        };
        let first = match &self.webpki {
            Some(w) => w.verify_server_cert(end_entity, intermediates, server_name, ocsp, now),
            None => Err(rustls::Error::InvalidCertificate(
                CertificateError::BadEncoding,
            )),
        };
        match first {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.full => Ok(ServerCertVerified::assertion()),
            Err(e) if legacy::retry_after(&e) => {
                let algs = &self.provider.signature_verification_algorithms;
                legacy::verify_chain(end_entity, intermediates, roots, now, algs)?;
                if self.full && !legacy::name_matches(end_entity, server_name) {
                    return Err(rustls::Error::InvalidCertificate(
                        CertificateError::NotValidForName,
                    ));
                }
                Ok(ServerCertVerified::assertion())
            }
            r => r,
        }
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        handshake_signature(m, c, d, &self.provider, false)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        handshake_signature(m, c, d, &self.provider, true)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// How the pooler uses TLS towards one server target: the mode plus the config it was built
/// with. Equal when the settings and the files' contents are, so a RELOAD that changes nothing
/// keeps the servers, and one that changes a certificate retires them at release.
#[derive(Clone)]
pub struct ServerTls {
    /// server_tls_sslmode.
    pub mode: SslMode,
    /// The built config (None for disable, or when building failed: see `error`).
    pub config: Option<Arc<ClientConfig>>,
    /// Why the config could not be built; connecting then fails with it.
    pub error: Option<String>,
    fingerprint: u64,
}

impl PartialEq for ServerTls {
    fn eq(&self, o: &Self) -> bool {
        self.mode == o.mode && self.fingerprint == o.fingerprint && self.error == o.error
    }
}
impl Eq for ServerTls {}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ServerTls({})", self.mode.as_str())
    }
}

impl Default for ServerTls {
    fn default() -> Self {
        ServerTls {
            mode: SslMode::Disable,
            config: None,
            error: None,
            fingerprint: 0,
        }
    }
}

impl ServerTls {
    /// Builds from `server_tls_*`. Never fails: a bad file makes every connect fail with the
    /// reason (start-up checks the same settings first with [`check_settings`]).
    pub fn build(s: &TlsSettings) -> ServerTls {
        let mut fp = std::collections::hash_map::DefaultHasher::new();
        s.hash_into(&mut fp);
        let (config, error) = match connector_config(s, &mut fp) {
            Ok(c) => (c, None),
            Err(e) => (None, Some(e)),
        };
        ServerTls {
            mode: s.sslmode,
            config,
            error,
            fingerprint: fp.finish(),
        }
    }
}

trait HashInto {
    fn hash_into(&self, h: &mut impl Hasher);
}

impl HashInto for TlsSettings {
    fn hash_into(&self, h: &mut impl Hasher) {
        self.sslmode.as_str().hash(h);
        self.key_file.hash(h);
        self.cert_file.hash(h);
        self.ca_file.hash(h);
        self.protocols.hash(h);
        self.ciphers.hash(h);
        self.tls13_ciphers.hash(h);
        self.ecdh_curves.hash(h);
    }
}

fn connector_config(
    s: &TlsSettings,
    fp: &mut impl Hasher,
) -> Result<Option<Arc<ClientConfig>>, String> {
    if s.sslmode == SslMode::Disable {
        return Ok(None);
    }
    let provider = Arc::new(provider(s, "server_tls")?);
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions(&s.protocols)?)
        .map_err(|e| e.to_string())?;
    let verifier = if s.sslmode >= SslMode::VerifyCa {
        let ca = s.ca_file.as_ref().ok_or_else(|| {
            format!(
                "server_tls_sslmode {} needs server_tls_ca_file",
                s.sslmode.as_str()
            )
        })?;
        let roots = roots(ca, fp)?;
        let webpki = match roots.store {
            Some(store) => Some(
                WebPkiServerVerifier::builder_with_provider(store, provider.clone())
                    .build()
                    .map_err(|e| e.to_string())?,
            ),
            None => None,
        };
        ServerVerifier {
            webpki,
            roots: Some(roots.ders),
            full: s.sslmode == SslMode::VerifyFull,
            provider: provider.clone(),
        }
    } else {
        ServerVerifier {
            webpki: None,
            roots: None,
            full: false,
            provider: provider.clone(),
        }
    };
    let builder = builder
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier));
    let cfg = match (&s.key_file, &s.cert_file) {
        // A resolver, not with_client_auth_cert: a v1 client certificate must load too.
        (Some(k), Some(c)) => {
            let ours = legacy::certified_key(&provider, certs(c, fp)?, key(k, fp)?)
                .map_err(|e| format!("server TLS key/certificate: {e}"))?;
            builder.with_client_cert_resolver(Arc::new(legacy::FixedClientCert(ours)))
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(Some(Arc::new(cfg)))
}

/// Checks both sides' settings at start-up, so a bad file stops the start instead of failing
/// every connection later.
pub fn check_settings(client: &TlsSettings, server: &TlsSettings) -> Result<(), String> {
    acceptor_config(client)?;
    if let Some(e) = ServerTls::build(server).error {
        // With prefer (and below) the settings only matter for a server that agrees to TLS, as
        // in PgBouncer, which starts with them; those handshakes fail with this reason.
        if server.sslmode > SslMode::Prefer {
            return Err(e);
        }
        tracing::warn!("server TLS settings cannot be used for TLS servers: {e}");
    }
    Ok(())
}

/// The client-facing TLS config in force; swapped on reload, read at each SSLRequest.
#[derive(Default)]
pub struct ClientTls {
    /// The current acceptor config (None = answer `N` to SSLRequest). A short lock: cloned
    /// out, never held across the handshake.
    current: RwLock<Option<Arc<ServerConfig>>>,
}

impl ClientTls {
    /// Re-reads the files; on error keeps the previous config and says why.
    pub fn reload(&self, s: &TlsSettings) -> Result<(), String> {
        let cfg = acceptor_config(s)?;
        *self.current.write() = cfg;
        Ok(())
    }

    /// The config new handshakes use.
    pub fn get(&self) -> Option<Arc<ServerConfig>> {
        self.current.read().clone()
    }
}

/// The text a failed handshake is logged with. A certificate refusal reads as OpenSSL's
/// "certificate verify failed" (what PgBouncer logs, and what operators search for), followed
/// by rustls's reason.
pub fn handshake_error(e: &std::io::Error) -> String {
    let inner = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>());
    match inner {
        Some(rustls::Error::InvalidCertificate(c)) => {
            format!("certificate verify failed: {c:?}")
        }
        _ => e.to_string(),
    }
}

/// PgBouncer's `tls` column text: `TLSv1.3/TLS_AES_256_GCM_SHA384/ECDH=X25519`.
pub fn describe(conn: &rustls::CommonState) -> String {
    let proto = match conn.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3".to_string(),
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2".to_string(),
        Some(v) => format!("{v:?}"),
        None => "-".to_string(),
    };
    let cipher = conn
        .negotiated_cipher_suite()
        .map(suite_name)
        .unwrap_or_else(|| "-".to_string());
    let kx = conn
        .negotiated_key_exchange_group()
        .map(|g| match g.name() {
            rustls::NamedGroup::X25519 => "/ECDH=X25519".to_string(),
            rustls::NamedGroup::secp256r1 => "/ECDH=prime256v1".to_string(),
            rustls::NamedGroup::secp384r1 => "/ECDH=secp384r1".to_string(),
            other => format!("/ECDH={other:?}"),
        })
        .unwrap_or_default();
    format!("{proto}/{cipher}{kx}")
}

/// The TLS client config for LDAP (ldaps, ldaptls=1) when `LDAPTLS_CACERT` names a CA file, as
/// libldap reads it for PgBouncer: only these roots are trusted, and the server's name is checked.
pub fn ldap_client_config(ca_pem: &[u8], origin: &str) -> Result<Arc<ClientConfig>, String> {
    let mut store = RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem) {
        let c = c.map_err(|e| format!("{origin}: {e}"))?;
        store.add(c).map_err(|e| format!("{origin}: {e}"))?;
    }
    if store.is_empty() {
        return Err(format!("{origin}: no certificate found"));
    }
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(store)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests;
