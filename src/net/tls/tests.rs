//! Unit tests of `net::tls`: protocol and cipher lists, the TLS 1.2 / 1.3 split, curves, and an
//! in-memory handshake.

use super::*;
use crate::config::EcdhCurve;
use tokio_rustls::rustls::crypto::ring;

#[test]
fn protocol_lists() {
    assert_eq!(versions("secure").unwrap().len(), 2);
    assert_eq!(versions("tlsv1.3").unwrap().len(), 1);
    assert_eq!(versions("tlsv1.1,tlsv1.2").unwrap().len(), 1);
    assert!(versions("tlsv1.1").is_err());
    assert!(versions("sslv3").is_err());
}

fn with_ciphers(ciphers: &str, tls13: &str) -> TlsSettings {
    let mut s = crate::config::Security::default().client_tls;
    s.ciphers = ciphers.to_string();
    s.tls13_ciphers = tls13.to_string();
    s
}

fn names(ciphers: &str, tls13: &str) -> Result<Vec<String>, String> {
    let p = provider(&with_ciphers(ciphers, tls13), "client_tls")?;
    Ok(p.cipher_suites.iter().map(|c| suite_name(*c)).collect())
}

#[test]
fn cipher_lists() {
    let all = ring::default_provider().cipher_suites.len();
    assert_eq!(names("default", "").unwrap().len(), all);
    // Before 1.25 the one list named both kinds; without *_tls13_ciphers it still does.
    assert_eq!(
        names("ECDHE-RSA-AES256-GCM-SHA384:TLS_AES_128_GCM_SHA256", "").unwrap(),
        ["TLS_AES_128_GCM_SHA256", "ECDHE-RSA-AES256-GCM-SHA384"]
    );
    assert_eq!(
        names("RC4-MD5", "").unwrap_err(),
        "invalid client_tls_ciphers: no cipher in \"RC4-MD5\" is available \
         (TLS 1.2/1.3 AEAD suites only)"
    );
}

/// PgBouncer 1.25: *_tls_ciphers is TLS 1.2 only, *_tls13_ciphers TLS 1.3 only.
#[test]
fn tls12_and_tls13_lists_are_separate() {
    let tls13_all = ["TLS_AES_256_GCM_SHA384", "TLS_AES_128_GCM_SHA256"];
    // A TLS 1.2-only list leaves TLS 1.3 at its defaults (OpenSSL's cipher list never
    // touches TLS 1.3 suites).
    let n = names("ECDHE-RSA-AES256-GCM-SHA384", "").unwrap();
    assert_eq!(n.len(), 4, "{n:?}");
    assert!(tls13_all.iter().all(|t| n.iter().any(|x| x == t)), "{n:?}");
    assert!(n.contains(&"TLS_CHACHA20_POLY1305_SHA256".to_string()));
    assert!(n.contains(&"ECDHE-RSA-AES256-GCM-SHA384".to_string()));
    // *_tls13_ciphers picks the TLS 1.3 suites and leaves TLS 1.2 to *_tls_ciphers.
    let n = names("default", "TLS_CHACHA20_POLY1305_SHA256").unwrap();
    let tls12 = ring::default_provider()
        .cipher_suites
        .iter()
        .filter(|c| matches!(c, rustls::SupportedCipherSuite::Tls12(_)))
        .count();
    assert_eq!(n.len(), 1 + tls12, "{n:?}");
    assert_eq!(n[0], "TLS_CHACHA20_POLY1305_SHA256");
    assert!(!n.iter().any(|x| tls13_all.contains(&x.as_str())), "{n:?}");
    // ...and overrides TLS 1.3 names left in *_tls_ciphers.
    assert_eq!(
        names(
            "TLS_AES_128_GCM_SHA256:ECDHE-RSA-AES128-GCM-SHA256",
            "TLS_AES_256_GCM_SHA384:TLS_AES_128_CCM_SHA256"
        )
        .unwrap(),
        ["TLS_AES_256_GCM_SHA384", "ECDHE-RSA-AES128-GCM-SHA256"]
    );
    // TLS 1.2 names in *_tls13_ciphers do not count; a list of none of ours is refused.
    assert!(names(
        "default",
        "ECDHE-RSA-AES128-GCM-SHA256:TLS_AES_128_CCM_8_SHA256"
    )
    .unwrap_err()
    .starts_with("invalid client_tls13_ciphers: ECDHE-RSA-AES128-GCM-SHA256:"));
    let mut s = with_ciphers("default", "TLS_AES_128_CCM_SHA256");
    s.sslmode = SslMode::Require;
    assert!(ServerTls::build(&s)
        .error
        .unwrap()
        .starts_with("invalid server_tls13_ciphers: TLS_AES_128_CCM_SHA256"));
}

#[test]
fn ecdh_curves_pick_the_kx_groups() {
    let groups = |curves: Option<Vec<EcdhCurve>>| {
        let mut s = with_ciphers("default", "");
        s.ecdh_curves = curves;
        let p = provider(&s, "client_tls").unwrap();
        p.kx_groups.iter().map(|g| g.name()).collect::<Vec<_>>()
    };
    let auto = groups(None);
    assert_eq!(
        auto,
        ring::default_provider()
            .kx_groups
            .iter()
            .map(|g| g.name())
            .collect::<Vec<_>>()
    );
    assert_eq!(
        groups(Some(vec![EcdhCurve::Secp384r1])),
        [rustls::NamedGroup::secp384r1]
    );
    assert_eq!(
        groups(Some(vec![EcdhCurve::Prime256v1, EcdhCurve::X25519])),
        [rustls::NamedGroup::secp256r1, rustls::NamedGroup::X25519]
    );
}

/// A handshake in memory between an acceptor and a connector built from settings: the
/// negotiated suite and group follow client_tls13_ciphers and client_tls_ecdhcurve.
#[test]
fn handshake_uses_the_configured_suite_and_curve() {
    let mut server = with_ciphers("default", "TLS_CHACHA20_POLY1305_SHA256");
    server.ecdh_curves = Some(vec![EcdhCurve::Secp384r1]);
    let p = Arc::new(provider(&server, "client_tls").unwrap());
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let key = PrivateKeyDer::try_from(ck.key_pair.serialize_der()).unwrap();
    let cfg = ServerConfig::builder_with_provider(p)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![ck.cert.der().clone()], key)
        .unwrap();
    let client = ServerTls::build(&{
        let mut c = with_ciphers("default", "");
        c.sslmode = SslMode::Require;
        c
    });
    let mut cl = rustls::ClientConnection::new(
        client.config.unwrap(),
        ServerName::try_from("localhost").unwrap(),
    )
    .unwrap();
    let mut sv = rustls::ServerConnection::new(Arc::new(cfg)).unwrap();
    for _ in 0..10 {
        let mut buf = Vec::new();
        while cl.wants_write() {
            cl.write_tls(&mut buf).unwrap();
        }
        let mut rd = &buf[..];
        while !rd.is_empty() {
            sv.read_tls(&mut rd).unwrap();
        }
        sv.process_new_packets().unwrap();
        let mut buf = Vec::new();
        while sv.wants_write() {
            sv.write_tls(&mut buf).unwrap();
        }
        let mut rd = &buf[..];
        while !rd.is_empty() {
            cl.read_tls(&mut rd).unwrap();
        }
        cl.process_new_packets().unwrap();
    }
    assert!(!sv.is_handshaking());
    assert_eq!(
        describe(&sv),
        "TLSv1.3/TLS_CHACHA20_POLY1305_SHA256/ECDH=secp384r1"
    );
}

#[test]
fn modes_need_their_files() {
    let mut s = crate::config::Security::default().client_tls;
    assert!(acceptor_config(&s).unwrap().is_none());
    s.sslmode = SslMode::Require;
    assert!(acceptor_config(&s)
        .unwrap_err()
        .contains("client_tls_key_file"));
    let mut s = crate::config::Security::default().server_tls;
    s.sslmode = SslMode::VerifyFull;
    assert!(ServerTls::build(&s)
        .error
        .unwrap()
        .contains("server_tls_ca_file"));
    s.sslmode = SslMode::Require;
    let t = ServerTls::build(&s);
    assert!(t.config.is_some() && t.error.is_none());
    assert_eq!(t, ServerTls::build(&s));
}
