//! TLS, auth_query, HBA and cert auth through the built pooler, against a real PostgreSQL (with
//! `ssl = on` where the server side is tested) and real clients: psql (libpq) and tokio-postgres,
//! over TLS (a small tokio-rustls connector in `pgtls.rs`) and plain. Certificates come from a small CA the test makes with rcgen.

#[path = "../common/mod.rs"]
mod common;

mod auth_query;
mod ciphers;
mod client;
mod hba;
mod legacy;
mod pgtls;
mod reload;
mod server;
mod startup;
mod vanish;
mod zalando;

use std::path::{Path, PathBuf};

use common::{psql, Pg};

/// A CA and the leaf certificates a test needs, as PEM files in one directory the `postgres`
/// user can read (PostgreSQL insists on owning its key file with mode 0600).
pub struct Certs {
    /// The directory (removed on drop).
    pub dir: tempfile::TempDir,
    ca_cert: rcgen::Certificate,
    ca_key: rcgen::KeyPair,
}

impl Certs {
    /// A raw TLS client's connector (tokio-rustls, ring) that trusts this CA, for tests that
    /// drive the protocol by hand rather than through tokio-postgres.
    pub fn tls_connector(&self) -> tokio_rustls::TlsConnector {
        let mut roots = tokio_rustls::rustls::RootCertStore::empty();
        let pem = std::fs::read(self.path("ca.crt")).expect("read ca.crt");
        for c in rustls_pki_types::pem::PemObject::pem_slice_iter(&pem) {
            roots.add(c.expect("CA PEM")).expect("CA certificate");
        }
        let provider = std::sync::Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let cfg = tokio_rustls::rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg))
    }

    /// A fresh CA named `name`.
    pub fn new(name: &str) -> Certs {
        let dir = tempfile::Builder::new()
            .prefix("olly-tls-")
            .tempdir_in("/tmp")
            .expect("temp dir");
        set_mode(dir.path(), 0o755);
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("{name} test CA"));
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let ca_key = rcgen::KeyPair::generate().expect("key");
        let ca_cert = params.self_signed(&ca_key).expect("CA");
        let c = Certs {
            dir,
            ca_cert,
            ca_key,
        };
        c.write("ca.crt", &c.ca_cert.pem());
        c
    }

    /// Path of a file in the directory.
    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    /// Path text, for ini and conninfo lines.
    pub fn p(&self, file: &str) -> String {
        self.path(file).display().to_string()
    }

    fn write(&self, file: &str, text: &str) {
        std::fs::write(self.path(file), text).expect("write cert file");
    }

    /// A leaf `<stem>.crt`/`<stem>.key` signed by this CA: subject CN `cn`, DNS/IP names `sans`.
    pub fn leaf(&self, stem: &str, cn: &str, sans: &[&str]) {
        let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
        let mut params = rcgen::CertificateParams::new(sans).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params
            .signed_by(&key, &self.ca_cert, &self.ca_key)
            .expect("sign");
        self.write(&format!("{stem}.crt"), &cert.pem());
        self.write(&format!("{stem}.key"), &key.serialize_pem());
        set_mode(&self.path(&format!("{stem}.key")), 0o600);
    }

    /// Hands `<stem>.crt/.key` to the `postgres` user when we are root (PostgreSQL runs as it
    /// and refuses a key it does not own or that others can read).
    pub fn give_to_postgres(&self, stem: &str) {
        if is_root() {
            let (uid, gid) = postgres_ids();
            for f in [format!("{stem}.crt"), format!("{stem}.key")] {
                std::os::unix::fs::chown(self.path(&f), Some(uid), Some(gid)).expect("chown");
            }
        }
    }
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn postgres_ids() -> (u32, u32) {
    let id = |flag: &str| -> u32 {
        let out = std::process::Command::new("id")
            .args([flag, "postgres"])
            .output()
            .expect("id");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("postgres uid")
    };
    (id("-u"), id("-g"))
}

/// A PostgreSQL with `ssl = on` and a server certificate from `certs` for localhost/127.0.0.1
/// (`server.crt`), DNS name `localhost` only unless `sans` says otherwise.
pub fn pg_with_ssl(certs: &Certs, sans: &[&str]) -> Pg {
    certs.leaf("server", "pg-server", sans);
    certs.give_to_postgres("server");
    Pg::start_with_conf(&format!(
        "ssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'\n",
        certs.p("server.crt"),
        certs.p("server.key")
    ))
}

/// `psql` with a conninfo and SQL; (exit code, stdout, stderr).
pub fn run_psql(conninfo: &str, sql: &str) -> (i32, String, String) {
    psql(conninfo, sql)
}

/// conninfo to the pooler over TCP with extra libpq keys (`sslmode=...` and friends).
pub fn conninfo(
    host: &str,
    port: u16,
    user: &str,
    password: &str,
    db: &str,
    extra: &str,
) -> String {
    format!("host={host} port={port} user={user} password={password} dbname={db} {extra}")
}
