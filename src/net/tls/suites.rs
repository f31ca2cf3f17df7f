//! Which suites, protocol versions and key-exchange groups one side offers: the ring provider
//! narrowed by `*_tls_ciphers`, `*_tls13_ciphers`, `client_tls_ecdhcurve` and `*_tls_protocols`,
//! and OpenSSL's names for the suites (SHOW CLIENTS/SERVERS print those). Pure: no files, no
//! sockets.

use tokio_rustls::rustls::{
    self,
    crypto::{ring, CryptoProvider},
    SupportedProtocolVersion,
};

use crate::config::{EcdhCurve, TlsSettings};

/// OpenSSL's names for the suites the ring provider has (PgBouncer prints and accepts these).
const SUITE_NAMES: &[(&str, &str)] = &[
    ("TLS13_AES_256_GCM_SHA384", "TLS_AES_256_GCM_SHA384"),
    ("TLS13_AES_128_GCM_SHA256", "TLS_AES_128_GCM_SHA256"),
    (
        "TLS13_CHACHA20_POLY1305_SHA256",
        "TLS_CHACHA20_POLY1305_SHA256",
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        "ECDHE-ECDSA-AES128-GCM-SHA256",
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
    ),
    (
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
    ),
    (
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
    ),
    (
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
        "ECDHE-RSA-CHACHA20-POLY1305",
    ),
];

/// PgBouncer's named cipher sets; rustls's defaults are all modern AEAD suites, so each named
/// set means "the provider's defaults".
const NAMED_CIPHER_SETS: &[&str] = &[
    "default", "secure", "fast", "normal", "compat", "legacy", "all",
];

pub(super) fn suite_name(suite: rustls::SupportedCipherSuite) -> String {
    let rust = format!("{:?}", suite.suite());
    SUITE_NAMES
        .iter()
        .find(|(r, _)| *r == rust)
        .map(|(_, o)| o.to_string())
        .unwrap_or(rust)
}

/// The names a cipher list gives, or `None` when it means "the provider's defaults" (empty,
/// or one of PgBouncer's named sets).
fn cipher_names(list: &str) -> Option<Vec<&str>> {
    let c = list.trim();
    if c.is_empty() || NAMED_CIPHER_SETS.iter().any(|n| n.eq_ignore_ascii_case(c)) {
        return None;
    }
    Some(
        c.split([':', ','])
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect(),
    )
}

/// Whether `suite` is one of `names` (rustls, OpenSSL or IANA spelling; the IANA and OpenSSL
/// names of the TLS 1.3 suites are the same, `TLS_AES_128_GCM_SHA256`).
fn named(suite: &rustls::SupportedCipherSuite, names: &[&str]) -> bool {
    let rust = format!("{:?}", suite.suite());
    let ossl = suite_name(*suite);
    names.iter().any(|w| {
        w.eq_ignore_ascii_case(&rust)
            || w.eq_ignore_ascii_case(&ossl)
            || w.eq_ignore_ascii_case(rust.trim_start_matches("TLS13_"))
    })
}

/// The ring provider for one side's settings; `pfx` is `client_tls` or `server_tls`, for errors.
///
/// As in PgBouncer 1.25, `*_tls_ciphers` picks the TLS 1.2 suites and `*_tls13_ciphers` the
/// TLS 1.3 ones. When `*_tls13_ciphers` is empty PgBouncer uses `*_tls_ciphers` for both, so
/// the TLS 1.3 suites named there are kept (the only control before 1.25, and what this pooler
/// did until then); a `*_tls_ciphers` list naming no TLS 1.3 suite leaves TLS 1.3 at its
/// defaults, as OpenSSL's cipher list never touches them. Names rustls lacks (CBC, CCM, RC4…)
/// are skipped; a list naming none of ours is an error.
pub(super) fn provider(s: &TlsSettings, pfx: &str) -> Result<CryptoProvider, String> {
    let mut p = ring::default_provider();
    let (tls13, tls12): (Vec<rustls::SupportedCipherSuite>, Vec<_>) = p
        .cipher_suites
        .iter()
        .copied()
        .partition(|c| matches!(c, rustls::SupportedCipherSuite::Tls13(_)));
    let (keep12, legacy13) = match cipher_names(&s.ciphers) {
        Some(names) => {
            let k12: Vec<_> = tls12.into_iter().filter(|c| named(c, &names)).collect();
            let k13: Vec<_> = tls13.iter().copied().filter(|c| named(c, &names)).collect();
            if k12.is_empty() && k13.is_empty() {
                return Err(format!(
                    "invalid {pfx}_ciphers: no cipher in \"{}\" is available \
                     (TLS 1.2/1.3 AEAD suites only)",
                    s.ciphers
                ));
            }
            (k12, k13)
        }
        None => (tls12, Vec::new()),
    };
    let keep13 = match cipher_names(&s.tls13_ciphers) {
        Some(names) => {
            let k: Vec<_> = tls13.into_iter().filter(|c| named(c, &names)).collect();
            if k.is_empty() {
                return Err(format!(
                    "invalid {pfx}13_ciphers: {} (rustls has TLS_AES_256_GCM_SHA384, \
                     TLS_AES_128_GCM_SHA256, TLS_CHACHA20_POLY1305_SHA256)",
                    s.tls13_ciphers
                ));
            }
            k
        }
        None if s.tls13_ciphers.trim().is_empty() && !legacy13.is_empty() => legacy13,
        None => tls13,
    };
    p.cipher_suites = keep13.into_iter().chain(keep12).collect();
    if let Some(curves) = &s.ecdh_curves {
        p.kx_groups = curves
            .iter()
            .map(|c| match c {
                EcdhCurve::X25519 => ring::kx_group::X25519,
                EcdhCurve::Prime256v1 => ring::kx_group::SECP256R1,
                EcdhCurve::Secp384r1 => ring::kx_group::SECP384R1,
            })
            .collect();
    }
    Ok(p)
}

/// `*_tls_protocols`: `secure`/`default`/`all`/`legacy` or a list of `tlsv1.2`, `tlsv1.3`
/// (TLS 1.0 and 1.1 are not offered by rustls and are skipped).
pub(super) fn versions(protocols: &str) -> Result<Vec<&'static SupportedProtocolVersion>, String> {
    let p = protocols.trim().to_ascii_lowercase();
    if p.is_empty() || matches!(p.as_str(), "secure" | "default" | "all" | "legacy") {
        return Ok(vec![&rustls::version::TLS13, &rustls::version::TLS12]);
    }
    let mut out: Vec<&'static SupportedProtocolVersion> = Vec::new();
    for item in p.split([',', ':', ' ']).filter(|s| !s.is_empty()) {
        match item {
            "tlsv1.3" => out.push(&rustls::version::TLS13),
            "tlsv1.2" => out.push(&rustls::version::TLS12),
            "tlsv1" | "tlsv1.0" | "tlsv1.1" => {}
            other => return Err(format!("unknown TLS protocol \"{other}\"")),
        }
    }
    if out.is_empty() {
        return Err(format!(
            "\"{protocols}\" names no protocol rustls offers (tlsv1.2, tlsv1.3)"
        ));
    }
    Ok(out)
}
