//! TLS and authentication-source settings of `[pgbouncer]`: `client_tls_*`, `server_tls_*`,
//! `auth_user`/`auth_query`/`auth_dbname`, `auth_hba_file`, `auth_ident_file` and
//! `auth_ldap_options`.
//!
//! Owns the typed values and their PgBouncer defaults. It does no I/O: key and certificate files
//! are read by `net::tls` when a configuration is put in force, the HBA file by `auth::hba`.

use std::path::PathBuf;

/// A TLS mode, as libpq and PgBouncer spell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SslMode {
    /// Plain text only.
    Disable,
    /// Plain text first; TLS if the other side insists (client side: TLS when asked).
    Allow,
    /// TLS when the other side offers it.
    Prefer,
    /// TLS always, without checking certificates.
    Require,
    /// TLS always; the peer's certificate must chain to the CA file.
    VerifyCa,
    /// Like verify-ca, and the certificate must name the host.
    VerifyFull,
}

impl SslMode {
    /// The ini spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Allow => "allow",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    fn parse(value: &str) -> Result<SslMode, String> {
        Ok(match value.to_ascii_lowercase().as_str() {
            "disable" => SslMode::Disable,
            "allow" => SslMode::Allow,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => {
                return Err(format!(
                    "expected one of disable, allow, prefer, require, verify-ca, verify-full, got \"{value}\""
                ))
            }
        })
    }
}

/// One side's TLS settings (`client_tls_*` or `server_tls_*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// `*_tls_sslmode`.
    pub sslmode: SslMode,
    /// `*_tls_key_file`: our private key (PEM).
    pub key_file: Option<PathBuf>,
    /// `*_tls_cert_file`: our certificate chain (PEM).
    pub cert_file: Option<PathBuf>,
    /// `*_tls_ca_file`: roots the peer's certificate must chain to (PEM).
    pub ca_file: Option<PathBuf>,
    /// `*_tls_protocols`: `secure` (TLS 1.2 and 1.3), `all`, or a list such as `tlsv1.3`.
    pub protocols: String,
    /// `*_tls_ciphers` as written: the TLS 1.2 suites (see `net::tls`).
    pub ciphers: String,
    /// `*_tls13_ciphers` as written (PgBouncer 1.25): the TLS 1.3 suites; empty leaves them to
    /// `ciphers`, as PgBouncer documents.
    pub tls13_ciphers: String,
    /// `client_tls_ecdhcurve`: the key-exchange groups offered, in order; `None` for `auto`
    /// (and `none`, see [`parse_curves`]). PgBouncer has no server-side key, so the server side
    /// keeps `None`.
    pub ecdh_curves: Option<Vec<EcdhCurve>>,
}

/// A key-exchange group the ring provider has, under OpenSSL's name (what SHOW CLIENTS prints).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EcdhCurve {
    /// `X25519`.
    X25519,
    /// `prime256v1`, also spelled `P-256` or `secp256r1`.
    Prime256v1,
    /// `secp384r1`, also spelled `P-384`.
    Secp384r1,
}

/// Parses `client_tls_ecdhcurve`: `auto`, `none`, or one curve name or a `:`/`,` list of them.
///
/// `none` means the defaults too: PgBouncer hands it to libusual as "set no curve", which
/// OpenSSL 1.1+ answers with its automatic curve choice, and every suite rustls offers needs an
/// (EC)DHE group, so there is nothing to turn off. A name ring lacks (secp521r1, X448, ffdhe*)
/// is refused with libusual's text, as PgBouncer refuses it when TLS is set up.
pub fn parse_curves(value: &str) -> Result<Option<Vec<EcdhCurve>>, String> {
    let v = value.trim();
    if v.is_empty() || v.eq_ignore_ascii_case("auto") || v.eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    let mut out = Vec::new();
    for name in v.split([':', ',']).map(str::trim).filter(|n| !n.is_empty()) {
        let c = match name.to_ascii_lowercase().as_str() {
            "x25519" => EcdhCurve::X25519,
            "prime256v1" | "secp256r1" | "p-256" => EcdhCurve::Prime256v1,
            "secp384r1" | "p-384" => EcdhCurve::Secp384r1,
            _ => {
                return Err(format!(
                "invalid ecdhe curve '{name}' (known: auto, none, X25519, prime256v1, secp384r1)"
            ))
            }
        };
        if !out.contains(&c) {
            out.push(c);
        }
    }
    Ok((!out.is_empty()).then_some(out))
}

impl TlsSettings {
    fn with_mode(sslmode: SslMode) -> TlsSettings {
        TlsSettings {
            sslmode,
            key_file: None,
            cert_file: None,
            ca_file: None,
            protocols: "secure".to_string(),
            ciphers: "default".to_string(),
            tls13_ciphers: String::new(),
            ecdh_curves: None,
        }
    }
}

/// PgBouncer 1.24.1+'s default auth_query (CVE-2025-2291 fix: honours rolvaliduntil).
pub const DEFAULT_AUTH_QUERY: &str = "SELECT rolname, CASE WHEN rolvaliduntil < now() THEN NULL \
     ELSE rolpassword END FROM pg_authid WHERE rolname=$1 AND rolcanlogin";

/// TLS on both sides plus where secrets come from when the auth_file lacks a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Security {
    /// Towards clients (PgBouncer default: disable).
    pub client_tls: TlsSettings,
    /// Towards servers (PgBouncer 1.20+ default: prefer).
    pub server_tls: TlsSettings,
    /// `auth_user`: who runs auth_query (a database entry may override it).
    pub auth_user: Option<String>,
    /// `auth_query`: `$1` is the user name; answers (name, secret).
    pub auth_query: String,
    /// `auth_dbname`: the database auth_query runs in (default: the client's database).
    pub auth_dbname: Option<String>,
    /// `auth_hba_file`, used when auth_type is hba.
    pub auth_hba_file: Option<PathBuf>,
    /// `auth_ident_file`: the user name maps HBA `map=` options name (read when auth_type is hba).
    pub auth_ident_file: Option<PathBuf>,
    /// `auth_ldap_options`: the LDAP options of auth_type ldap, as written (parsed by
    /// `auth::ldap` when the configuration is loaded).
    pub auth_ldap_options: String,
}

impl Default for Security {
    fn default() -> Self {
        Security {
            client_tls: TlsSettings::with_mode(SslMode::Disable),
            server_tls: TlsSettings::with_mode(SslMode::Prefer),
            auth_user: None,
            auth_query: DEFAULT_AUTH_QUERY.to_string(),
            auth_dbname: None,
            auth_hba_file: None,
            auth_ident_file: None,
            auth_ldap_options: String::new(),
        }
    }
}

fn path(value: &str) -> Option<PathBuf> {
    (!value.is_empty()).then(|| PathBuf::from(value))
}

fn name(value: &str) -> Option<String> {
    (!value.is_empty()).then(|| value.to_string())
}

/// Sets one of this file's keys; `None` when `key` is not one of them.
pub(crate) fn apply(s: &mut Security, key: &str, value: &str) -> Option<Result<(), String>> {
    let side = |s: &mut Security, k: &str| -> Option<(bool, String)> {
        let _ = s;
        k.strip_prefix("client_tls_")
            .map(|r| (true, r.to_string()))
            .or_else(|| {
                k.strip_prefix("server_tls_")
                    .map(|r| (false, r.to_string()))
            })
    };
    match key {
        "auth_user" => s.auth_user = name(value),
        "auth_query" => s.auth_query = value.to_string(),
        // PgBouncer's cf_set_authdb: the console's database can never run auth_query.
        "auth_dbname" if value == "pgbouncer" => {
            return Some(Err(
                "cannot use the reserved \"pgbouncer\" database as an auth_dbname".into(),
            ))
        }
        "auth_dbname" => s.auth_dbname = name(value),
        "auth_hba_file" => s.auth_hba_file = path(value),
        "auth_ident_file" => s.auth_ident_file = path(value),
        "auth_ldap_options" => s.auth_ldap_options = value.to_string(),
        "client_tls13_ciphers" => s.client_tls.tls13_ciphers = value.to_string(),
        "server_tls13_ciphers" => s.server_tls.tls13_ciphers = value.to_string(),
        // Client side only, as in PgBouncer (it passes no curve for server connections).
        "client_tls_ecdhcurve" => match parse_curves(value) {
            Ok(c) => s.client_tls.ecdh_curves = c,
            Err(e) => return Some(Err(e)),
        },
        _ => {
            let (client, rest) = side(s, key)?;
            let t = if client {
                &mut s.client_tls
            } else {
                &mut s.server_tls
            };
            match rest.as_str() {
                "sslmode" => match SslMode::parse(value) {
                    Ok(m) => t.sslmode = m,
                    Err(e) => return Some(Err(e)),
                },
                "key_file" => t.key_file = path(value),
                "cert_file" => t.cert_file = path(value),
                "ca_file" => t.ca_file = path(value),
                "protocols" => t.protocols = value.to_ascii_lowercase(),
                "ciphers" => t.ciphers = value.to_string(),
                _ => return None,
            }
        }
    }
    Some(Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_defaults() {
        let mut s = Security::default();
        assert_eq!(s.server_tls.sslmode, SslMode::Prefer);
        assert_eq!(s.client_tls.sslmode, SslMode::Disable);
        assert!(apply(&mut s, "client_tls_sslmode", "verify-full")
            .unwrap()
            .is_ok());
        assert_eq!(s.client_tls.sslmode, SslMode::VerifyFull);
        assert!(apply(&mut s, "server_tls_sslmode", "sometimes")
            .unwrap()
            .is_err());
        assert!(apply(&mut s, "server_tls_ca_file", "/x/ca.crt")
            .unwrap()
            .is_ok());
        assert_eq!(s.server_tls.ca_file, Some(PathBuf::from("/x/ca.crt")));
        assert!(apply(&mut s, "auth_user", "pooler").unwrap().is_ok());
        assert_eq!(s.auth_user.as_deref(), Some("pooler"));
        assert!(apply(&mut s, "listen_port", "1").is_none());
        assert!(apply(&mut s, "client_tls_dheparams", "auto").is_none());
        assert!(
            apply(&mut s, "server_tls13_ciphers", "TLS_AES_128_GCM_SHA256")
                .unwrap()
                .is_ok()
        );
        assert_eq!(s.server_tls.tls13_ciphers, "TLS_AES_128_GCM_SHA256");
        assert!(s.client_tls.tls13_ciphers.is_empty());
    }

    #[test]
    fn ecdh_curve_names() {
        assert_eq!(parse_curves("auto"), Ok(None));
        assert_eq!(parse_curves("none"), Ok(None));
        assert_eq!(
            parse_curves("secp384r1"),
            Ok(Some(vec![EcdhCurve::Secp384r1]))
        );
        assert_eq!(
            parse_curves("P-256:X25519,prime256v1"),
            Ok(Some(vec![EcdhCurve::Prime256v1, EcdhCurve::X25519]))
        );
        assert_eq!(
            parse_curves("secp521r1").unwrap_err(),
            "invalid ecdhe curve 'secp521r1' (known: auto, none, X25519, prime256v1, secp384r1)"
        );
        let mut s = Security::default();
        assert!(apply(&mut s, "client_tls_ecdhcurve", "P-384")
            .unwrap()
            .is_ok());
        assert_eq!(s.client_tls.ecdh_curves, Some(vec![EcdhCurve::Secp384r1]));
        assert!(apply(&mut s, "client_tls_ecdhcurve", "brainpool")
            .unwrap()
            .is_err());
        assert_eq!(s.client_tls.ecdh_curves, Some(vec![EcdhCurve::Secp384r1]));
    }
}
