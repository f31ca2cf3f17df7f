//! Certificates OpenSSL accepts and webpki does not, as PgBouncer's own test CA makes them
//! (`openssl ca` / `openssl x509 -req` without extensions): X.509 v1, host name only in the CN.
//! The pooler serves one to psql, takes one as a client certificate (auth_type cert), and checks
//! PostgreSQL's with server_tls_sslmode verify-full, as PgBouncer does with OpenSSL.

use std::path::Path;
use std::process::Command;

use super::common::{Pg, Pooler};
use super::{conninfo, run_psql, Certs};

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An OpenSSL CA in the directory of `certs` (replacing its ca.crt): `ca.crt`, `ca.key`.
fn openssl_ca(certs: &Certs) {
    let d = certs.dir.path();
    openssl(
        d,
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-out",
            "ca.key",
        ],
    );
    openssl(
        d,
        &[
            "req",
            "-new",
            "-x509",
            "-key",
            "ca.key",
            "-subj",
            "/CN=legacy test CA",
            "-days",
            "30",
            "-out",
            "ca.crt",
        ],
    );
}

/// `<stem>.crt`/`<stem>.key`: a v1 certificate with subject CN `cn` and no extensions, signed by
/// the OpenSSL CA. Asserts it really is v1, so the test cannot silently test a v3 one.
fn v1_leaf(certs: &Certs, stem: &str, cn: &str) {
    let d = certs.dir.path();
    let (key, csr, crt) = (
        format!("{stem}.key"),
        format!("{stem}.csr"),
        format!("{stem}.crt"),
    );
    openssl(
        d,
        &["ecparam", "-name", "prime256v1", "-genkey", "-out", &key],
    );
    openssl(
        d,
        &[
            "req",
            "-new",
            "-key",
            &key,
            "-subj",
            &format!("/CN={cn}"),
            "-out",
            &csr,
        ],
    );
    openssl(
        d,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "30",
            "-out",
            &crt,
        ],
    );
    super::set_mode(&certs.path(&key), 0o600);
    let pem = std::fs::read(certs.path(&crt)).expect("read leaf");
    let (_, parsed) = x509_parser::pem::parse_x509_pem(&pem).expect("PEM");
    let cert = parsed.parse_x509().expect("certificate");
    assert_eq!(
        cert.version(),
        x509_parser::x509::X509Version::V1,
        "this openssl made a v3 certificate; the test needs a v1 one"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_certificates_serve_psql_and_authenticate_clients() {
    let certs = Certs::new("legacy-client");
    openssl_ca(&certs);
    v1_leaf(&certs, "pooler", "localhost");
    v1_leaf(&certs, "olly", "olly");
    let pg = Pg::start();
    let extra = format!(
        "client_tls_sslmode = verify-full\nclient_tls_key_file = {}\nclient_tls_cert_file = {}\n\
         client_tls_ca_file = {}\nauth_type = cert\n",
        certs.p("pooler.key"),
        certs.p("pooler.crt"),
        certs.p("ca.crt")
    );
    let pooler = Pooler::start(&pg, "", &extra, "");
    // libpq verify-full matches the CN when there is no subjectAltName; the client certificate
    // is v1 too.
    // verify-full against our CA, presenting `who`'s olly certificate.
    let olly_ci = |who: &Certs| {
        conninfo(
            "localhost",
            pooler.port,
            "olly",
            "unused",
            "testdb",
            &format!(
                "sslmode=verify-full sslrootcert={} sslcert={} sslkey={}",
                certs.p("ca.crt"),
                who.p("olly.crt"),
                who.p("olly.key")
            ),
        )
    };
    let ci = olly_ci(&certs);
    let (code, out, err) = run_psql(&ci, "SELECT current_user");
    assert_eq!((code, out.as_str()), (0, "olly"), "{err}\n{}", pooler.log());
    // A v1 certificate from another CA is still refused.
    let other = Certs::new("legacy-stranger");
    openssl_ca(&other);
    v1_leaf(&other, "olly", "olly");
    let ci = olly_ci(&other);
    assert_ne!(run_psql(&ci, "SELECT 1").0, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_accepts_a_v1_server_certificate_named_by_its_cn() {
    let certs = Certs::new("legacy-server");
    openssl_ca(&certs);
    v1_leaf(&certs, "server", "localhost");
    certs.give_to_postgres("server");
    let pg = Pg::start_with_conf(&format!(
        "ssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'\n",
        certs.p("server.crt"),
        certs.p("server.key")
    ));
    let dbs = format!(
        "byname = host=localhost port={p} dbname=testdb\nbyip = host=127.0.0.1 port={p} dbname=testdb\n",
        p = pg.port
    );
    let tls = |ca: &Certs| {
        format!(
            "server_tls_sslmode = verify-full\nserver_tls_ca_file = {}\nclient_login_timeout = 3\n",
            ca.p("ca.crt")
        )
    };
    let pooler = Pooler::start(&pg, &dbs, &tls(&certs), "");
    let c = pooler.connect("olly", "olly_pw", "byname").await;
    let rows = c
        .simple_query("SELECT ssl::text FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .await
        .expect("query");
    let ssl = rows.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
        _ => None,
    });
    assert_eq!(ssl.as_deref(), Some("true"));
    // The CN names localhost, not the address.
    assert!(pooler.try_connect("olly", "olly_pw", "byip").await.is_err());
    drop(pooler);

    // Another CA: refused, with the text PgBouncer (OpenSSL) logs.
    let stranger = Certs::new("legacy-other");
    openssl_ca(&stranger);
    let pooler = Pooler::start(&pg, &dbs, &tls(&stranger), "");
    assert!(pooler
        .try_connect("olly", "olly_pw", "byname")
        .await
        .is_err());
    assert!(
        pooler.log().contains("certificate verify failed"),
        "{}",
        pooler.log()
    );
}
