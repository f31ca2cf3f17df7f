//! Certificates rustls's webpki refuses but OpenSSL and libpq accept, so PgBouncer does too:
//! X.509 **v1** certificates (no extensions; `openssl ca` without an extensions section makes
//! them, and PgBouncer's own test CA does) and certificates that name their host only in the
//! subject CN (no subjectAltName). webpki rejects the first outright (`UnsupportedCertVersion`)
//! and never matches a host name against the CN.
//!
//! This module is the fallback the verifiers in `tls.rs` use when webpki refuses a certificate
//! for one of those reasons: it checks the chain up to a configured root (issuer name and
//! signature, validity period), the host name as libpq does (subjectAltName entries if there are
//! any, else the CN), and handshake signatures with the key taken from the certificate itself.
//! Signatures are checked by the crypto provider's algorithms (ring), never here. Bytes come
//! from peers and files: every step is bounds-checked and anything unexpected is a refusal.

use std::net::IpAddr;
use std::sync::Arc;

use rustls_pki_types::{CertificateDer, ServerName, SignatureVerificationAlgorithm, UnixTime};
use tokio_rustls::rustls::{
    self,
    client::danger::HandshakeSignatureValid,
    crypto::{CryptoProvider, WebPkiSupportedAlgorithms},
    sign::CertifiedKey,
    CertificateError, DigitallySignedStruct, SignatureScheme,
};

use crate::auth::cert::element;

const SEQUENCE: u8 = 0x30;
const BIT_STRING: u8 = 0x03;

/// Chains longer than this are refused (PostgreSQL deployments use one or two levels).
const MAX_DEPTH: usize = 8;

fn bad(e: CertificateError) -> rustls::Error {
    rustls::Error::InvalidCertificate(e)
}

/// The raw pieces of a certificate a signature check needs.
struct Parts<'a> {
    /// The whole tbsCertificate element (what the issuer signed).
    tbs: &'a [u8],
    /// The contents of the signatureAlgorithm AlgorithmIdentifier.
    sig_alg: &'a [u8],
    /// The signature bits.
    sig: &'a [u8],
    /// The contents of the subject public key's AlgorithmIdentifier.
    spki_alg: &'a [u8],
    /// The subject public key bits.
    spki_key: &'a [u8],
}

/// A BIT STRING's bits (only whole-byte strings, as keys and signatures are).
fn bits(contents: &[u8]) -> Option<&[u8]> {
    match contents.split_first() {
        Some((0, rest)) => Some(rest),
        _ => None,
    }
}

/// (algorithm contents, key bits) of a SubjectPublicKeyInfo element's contents.
fn spki_parts(spki: &[u8]) -> Option<(&[u8], &[u8])> {
    let (tag, alg, rest) = element(spki)?;
    if tag != SEQUENCE {
        return None;
    }
    let (tag, key, _) = element(rest)?;
    if tag != BIT_STRING {
        return None;
    }
    Some((alg, bits(key)?))
}

fn parts(der: &[u8]) -> Option<Parts<'_>> {
    let (tag, cert, _) = element(der)?;
    if tag != SEQUENCE {
        return None;
    }
    let (tag, tbs_contents, rest) = element(cert)?;
    if tag != SEQUENCE {
        return None;
    }
    let tbs = &cert[..cert.len() - rest.len()];
    let (tag, sig_alg, rest) = element(rest)?;
    if tag != SEQUENCE {
        return None;
    }
    let (tag, sig, _) = element(rest)?;
    if tag != BIT_STRING {
        return None;
    }
    // tbsCertificate: [0] version (absent in v1), serial, signature, issuer, validity,
    // subject, subjectPublicKeyInfo, ...
    let mut r = tbs_contents;
    let (tag, _, after) = element(r)?;
    if tag == 0xa0 {
        r = after;
    }
    for _ in 0..5 {
        r = element(r)?.2;
    }
    let (tag, spki, _) = element(r)?;
    if tag != SEQUENCE {
        return None;
    }
    let (spki_alg, spki_key) = spki_parts(spki)?;
    Some(Parts {
        tbs,
        sig_alg,
        sig: bits(sig)?,
        spki_alg,
        spki_key,
    })
}

/// The SubjectPublicKeyInfo (contents of its SEQUENCE) of a certificate, for comparing a
/// private key with the certificate it is configured with.
fn spki_contents(der: &[u8]) -> Option<Vec<u8>> {
    let p = parts(der)?;
    let mut v = Vec::new();
    // Rebuild the comparable form: AlgorithmIdentifier contents + key bits.
    v.extend_from_slice(p.spki_alg);
    v.extend_from_slice(p.spki_key);
    Some(v)
}

/// Whether `issuer`'s key signed `cert`.
fn signed_by(cert: &Parts<'_>, issuer: &Parts<'_>, algs: &WebPkiSupportedAlgorithms) -> bool {
    algs.all.iter().any(|a| {
        a.signature_alg_id().as_ref() == cert.sig_alg
            && a.public_key_alg_id().as_ref() == issuer.spki_alg
            && a.verify_signature(issuer.spki_key, cert.tbs, cert.sig)
                .is_ok()
    })
}

/// What the chain walk needs of one certificate, parsed once.
struct Cert<'a> {
    der: &'a [u8],
    parts: Parts<'a>,
    subject: Vec<u8>,
    issuer: Vec<u8>,
    not_before: i64,
    not_after: i64,
    /// basicConstraints cA, or true for a v1 certificate (which cannot say).
    may_sign: bool,
}

fn cert(der: &[u8]) -> Result<Cert<'_>, rustls::Error> {
    let parts = parts(der).ok_or(bad(CertificateError::BadEncoding))?;
    let (_, x) =
        x509_parser::parse_x509_certificate(der).map_err(|_| bad(CertificateError::BadEncoding))?;
    let may_sign = match x.basic_constraints() {
        Ok(Some(bc)) => bc.value.ca,
        Ok(None) => x.version() == x509_parser::x509::X509Version::V1,
        Err(_) => false,
    };
    Ok(Cert {
        der,
        parts,
        subject: x.subject().as_raw().to_vec(),
        issuer: x.issuer().as_raw().to_vec(),
        not_before: x.validity().not_before.timestamp(),
        not_after: x.validity().not_after.timestamp(),
        may_sign,
    })
}

fn current(c: &Cert<'_>, now: UnixTime) -> Result<(), rustls::Error> {
    let now = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
    if now < c.not_before {
        return Err(bad(CertificateError::NotValidYet));
    }
    if now > c.not_after {
        return Err(bad(CertificateError::Expired));
    }
    Ok(())
}

/// Checks that `end_entity` chains, through `intermediates`, to one of `roots` (each link: the
/// issuer name matches the signer's subject and the signer's key made the signature), and that
/// every certificate on the way is within its validity period.
pub fn verify_chain(
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    roots: &[CertificateDer<'static>],
    now: UnixTime,
    algs: &WebPkiSupportedAlgorithms,
) -> Result<(), rustls::Error> {
    let roots: Vec<Cert<'_>> = roots.iter().filter_map(|r| cert(r).ok()).collect();
    let inter: Vec<Cert<'_>> = intermediates.iter().filter_map(|c| cert(c).ok()).collect();
    let mut here = cert(end_entity)?;
    for _ in 0..MAX_DEPTH {
        current(&here, now)?;
        // A configured root that is this very certificate, or that signed it, ends the walk.
        if roots.iter().any(|r| r.der == here.der) {
            return Ok(());
        }
        if roots
            .iter()
            .any(|r| r.subject == here.issuer && signed_by(&here.parts, &r.parts, algs))
        {
            return Ok(());
        }
        let Some(next) = inter.iter().find(|i| {
            i.may_sign
                && i.subject == here.issuer
                && i.der != here.der
                && signed_by(&here.parts, &i.parts, algs)
        }) else {
            return Err(bad(CertificateError::UnknownIssuer));
        };
        here = cert(next.der)?;
    }
    Err(bad(CertificateError::UnknownIssuer))
}

/// Host name check as libpq's verify-full: the subjectAltName dNSName (wildcard `*.` in the
/// first label) and iPAddress entries when the certificate has any, else the subject CN.
pub fn name_matches(end_entity: &[u8], server_name: &ServerName<'_>) -> bool {
    let Ok((_, x)) = x509_parser::parse_x509_certificate(end_entity) else {
        return false;
    };
    let (host, ip): (String, Option<IpAddr>) = match server_name {
        ServerName::DnsName(d) => (d.as_ref().to_ascii_lowercase(), None),
        ServerName::IpAddress(a) => {
            let ip = IpAddr::from(*a);
            (ip.to_string(), Some(ip))
        }
        _ => return false,
    };
    let mut had_names = false;
    if let Ok(Some(san)) = x.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                x509_parser::extensions::GeneralName::DNSName(d) => {
                    had_names = true;
                    if ip.is_none() && dns_matches(&d.to_ascii_lowercase(), &host) {
                        return true;
                    }
                }
                x509_parser::extensions::GeneralName::IPAddress(b) => {
                    had_names = true;
                    let theirs = match b.len() {
                        4 => <[u8; 4]>::try_from(*b).ok().map(IpAddr::from),
                        16 => <[u8; 16]>::try_from(*b).ok().map(IpAddr::from),
                        _ => None,
                    };
                    if ip.is_some() && theirs == ip {
                        return true;
                    }
                }
                _ => {}
            }
        }
    }
    if had_names {
        return false;
    }
    crate::auth::cert::subject_common_name(end_entity)
        .is_some_and(|cn| dns_matches(&cn.to_ascii_lowercase(), &host))
}

/// `pattern` (lower case) against `host`: exact, or `*.rest` matching one leading label.
fn dns_matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(rest) => host
            .split_once('.')
            .is_some_and(|(first, tail)| !first.is_empty() && tail == rest),
        None => pattern == host,
    }
}

/// Verifies a handshake signature with the key inside `cert` (which webpki could not parse).
pub fn verify_handshake_signature(
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
    algs: &WebPkiSupportedAlgorithms,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    let p = parts(cert).ok_or(bad(CertificateError::BadEncoding))?;
    let candidates: &[&dyn SignatureVerificationAlgorithm] = algs
        .mapping
        .iter()
        .find(|(s, _)| *s == dss.scheme)
        .map(|(_, a)| *a)
        .ok_or(rustls::Error::PeerMisbehaved(
            rustls::PeerMisbehaved::SignedHandshakeWithUnadvertisedSigScheme,
        ))?;
    let ok = candidates.iter().any(|a| {
        a.public_key_alg_id().as_ref() == p.spki_alg
            && a.verify_signature(p.spki_key, message, dss.signature())
                .is_ok()
    });
    if ok {
        Ok(HandshakeSignatureValid::assertion())
    } else {
        Err(bad(CertificateError::BadSignature))
    }
}

/// Whether `der` is a certificate this module can read (for CA files webpki takes nothing from).
pub fn parses(der: &[u8]) -> bool {
    parts(der).is_some() && x509_parser::parse_x509_certificate(der).is_ok()
}

/// Whether a webpki refusal is one this module may look at again: a certificate webpki cannot
/// parse (v1: reported as `Other`/`BadEncoding`/`UnsupportedCertVersion`) or a host name only
/// the CN carries.
pub fn retry_after(e: &rustls::Error) -> bool {
    matches!(
        e,
        rustls::Error::InvalidCertificate(
            CertificateError::Other(_)
                | CertificateError::BadEncoding
                | CertificateError::NotValidForName
                | CertificateError::NotValidForNameContext { .. }
        )
    )
}

/// A certificate chain with its key, built without webpki parsing the certificate (so a v1
/// certificate can be served), after checking the key belongs to the certificate.
pub fn certified_key(
    provider: &CryptoProvider,
    chain: Vec<CertificateDer<'static>>,
    key: rustls_pki_types::PrivateKeyDer<'static>,
) -> Result<Arc<CertifiedKey>, String> {
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| e.to_string())?;
    let leaf = chain.first().ok_or("no certificate found")?;
    if let (Some(spki), Some(ours)) = (signing.public_key(), spki_contents(leaf)) {
        let theirs = element(spki.as_ref())
            .and_then(|(_, c, _)| spki_parts(c))
            .map(|(a, k)| [a, k].concat());
        if theirs.as_deref() != Some(ours.as_slice()) {
            return Err("the private key does not match the certificate".into());
        }
    }
    Ok(Arc::new(CertifiedKey::new(chain, signing)))
}

/// Serves one fixed certificate (see [`certified_key`]).
#[derive(Debug)]
pub struct FixedServerCert(pub Arc<CertifiedKey>);

impl rustls::server::ResolvesServerCert for FixedServerCert {
    fn resolve(&self, _: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// Presents one fixed client certificate to servers (see [`certified_key`]).
#[derive(Debug)]
pub struct FixedClientCert(pub Arc<CertifiedKey>);

impl rustls::client::ResolvesClientCert for FixedClientCert {
    fn resolve(&self, _: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
    fn has_certs(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_cover_one_label() {
        assert!(dns_matches("db.example", "db.example"));
        assert!(dns_matches("*.example", "db.example"));
        assert!(!dns_matches("*.example", "a.db.example"));
        assert!(!dns_matches("*.example", "example"));
    }

    #[test]
    fn garbage_is_refused() {
        assert!(parts(b"").is_none());
        assert!(parts(&[0x30, 0x02, 0x30, 0x00]).is_none());
        let algs = tokio_rustls::rustls::crypto::ring::default_provider()
            .signature_verification_algorithms;
        assert!(verify_chain(
            &CertificateDer::from(vec![0x30, 0x00]),
            &[],
            &[],
            UnixTime::now(),
            &algs
        )
        .is_err());
        assert!(!name_matches(
            &[0x30, 0x00],
            &ServerName::try_from("localhost").unwrap()
        ));
    }
}
