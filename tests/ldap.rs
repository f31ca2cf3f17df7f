//! LDAP authentication (PgBouncer 1.25) against a real slapd: `auth_type = ldap` with
//! `auth_ldap_options` (simple bind) and HBA `ldap` lines (search+bind, ldapurl), PgBouncer's
//! `LDAP authentication failed` for a wrong password, an unknown user and a server that is down,
//! the LDAP password used for the server login, and the refusal next to auth_user.

mod common;

use common::slapd::{ADMIN_DN, ADMIN_PW, BASE_DN};
use common::{Pg, Pooler, Slapd};

/// (severity, SQLSTATE, message) of a refused login, or panics if it was let in.
async fn refused(p: &Pooler, user: &str, pw: &str, db: &str) -> (String, String, String) {
    match p.try_connect(user, pw, db).await {
        Ok(_) => panic!("{user} with {pw}: login was expected to fail"),
        Err(e) => {
            let d = e
                .as_db_error()
                .unwrap_or_else(|| panic!("{user}: not a server error: {e}"));
            (
                d.severity().to_string(),
                d.code().code().to_string(),
                d.message().to_string(),
            )
        }
    }
}

fn ldap_failed() -> (String, String, String) {
    (
        "FATAL".to_string(),
        "08P01".to_string(),
        "LDAP authentication failed".to_string(),
    )
}

/// A PostgreSQL role that only LDAP knows the password of (not in auth_file).
fn pg_with_ldap_user() -> Pg {
    let pg = Pg::start();
    pg.psql("CREATE ROLE ldapuser LOGIN PASSWORD 'ldap_pw'");
    pg
}

async fn current_user(p: &Pooler, user: &str, pw: &str) -> String {
    let c = p
        .try_connect(user, pw, "testdb")
        .await
        .unwrap_or_else(|e| panic!("{user}: {e}"));
    c.query_one("SELECT current_user::text", &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_type_ldap_simple_bind() {
    let mut slapd = Slapd::start(&[("ldapuser", "ldap_pw"), ("olly", "olly_pw")]);
    let pg = pg_with_ldap_user();
    let opts = format!(
        "auth_type = ldap\nauth_ldap_options = ldapserver=127.0.0.1 ldapport={} \
         ldapprefix=\"uid=\" ldapsuffix=\",ou=people,{BASE_DN}\"\n",
        slapd.port
    );
    let p = Pooler::start(&pg, "", &opts, "");
    // The right password: in, and the server login used it (ldapuser is not in auth_file).
    assert_eq!(current_user(&p, "ldapuser", "ldap_pw").await, "ldapuser");
    assert_eq!(current_user(&p, "olly", "olly_pw").await, "olly");
    // A wrong password and an unknown user look the same to the client.
    assert_eq!(
        refused(&p, "ldapuser", "nope", "testdb").await,
        ldap_failed()
    );
    assert_eq!(
        refused(&p, "nobody", "ldap_pw", "testdb").await,
        ldap_failed()
    );
    // An empty password is never sent to LDAP (it would be an anonymous bind).
    assert_eq!(refused(&p, "ldapuser", "", "testdb").await, ldap_failed());
    assert!(
        p.log().contains("LDAP login failed for user uid=ldapuser"),
        "{}",
        p.log()
    );
    // The server down: the same FATAL, the reason in the log.
    slapd.stop();
    assert_eq!(
        refused(&p, "ldapuser", "ldap_pw", "testdb").await,
        ldap_failed()
    );
    assert!(p.log().contains("could not connect to LDAP"), "{}", p.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hba_ldap_search_bind_and_ldapurl() {
    let slapd = Slapd::start(&[("ldapuser", "ldap_pw"), ("olly", "olly_pw")]);
    let pg = pg_with_ldap_user();
    let dir = tempfile::tempdir().unwrap();
    let hba = dir.path().join("hba.conf");
    // testdb: search+bind as the admin DN by uid; mail: ldapurl with a filter on mail.
    std::fs::write(
        &hba,
        format!(
            "host testdb all 127.0.0.1/32 ldap ldapserver=127.0.0.1 ldapport={port} \
             ldapbasedn=\"{BASE_DN}\" ldapbinddn=\"{ADMIN_DN}\" ldapbindpasswd={ADMIN_PW} \
             ldapsearchattribute=uid\n\
             host maildb all 127.0.0.1/32 ldap ldapbinddn=\"{ADMIN_DN}\" \
             ldapbindpasswd={ADMIN_PW} \
             ldapurl=\"ldap://127.0.0.1:{port}/{BASE_DN}??sub?(mail=$username@example.net)\"\n",
            port = slapd.port
        ),
    )
    .unwrap();
    let p = Pooler::start(
        &pg,
        &format!("maildb = host=127.0.0.1 port={} dbname=testdb", pg.port),
        &format!("auth_type = hba\nauth_hba_file = {}\n", hba.display()),
        "",
    );
    assert_eq!(current_user(&p, "ldapuser", "ldap_pw").await, "ldapuser");
    assert_eq!(
        refused(&p, "ldapuser", "olly_pw", "testdb").await,
        ldap_failed()
    );
    assert_eq!(refused(&p, "ghost", "x", "testdb").await, ldap_failed());
    assert!(
        p.log().contains("LDAP user \"ghost\" does not exist"),
        "{}",
        p.log()
    );
    // A user name that would change the filter is refused before any search.
    assert_eq!(refused(&p, "*", "ldap_pw", "testdb").await, ldap_failed());
    // Through the ldapurl line: found by mail.
    let c = p.try_connect("olly", "olly_pw", "maildb").await.unwrap();
    let who: String = c
        .query_one("SELECT current_user::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(who, "olly");
    assert_eq!(refused(&p, "olly", "bad", "maildb").await, ldap_failed());
}

/// PgBouncer refuses LDAP for a database with an auth_user: `bouncer config error`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_type_ldap_with_auth_user_is_a_config_error() {
    let slapd = Slapd::start(&[("ldapuser", "ldap_pw")]);
    let pg = pg_with_ldap_user();
    let opts = format!(
        "auth_type = ldap\nauth_ldap_options = ldapserver=127.0.0.1 ldapport={} \
         ldapprefix=\"uid=\" ldapsuffix=\",ou=people,{BASE_DN}\"\n",
        slapd.port
    );
    let p = Pooler::start(
        &pg,
        &format!(
            "authdb = host=127.0.0.1 port={} dbname=testdb auth_user=olly",
            pg.port
        ),
        &opts,
        "",
    );
    assert_eq!(
        refused(&p, "ldapuser", "ldap_pw", "authdb").await,
        (
            "FATAL".to_string(),
            "08P01".to_string(),
            "bouncer config error".to_string()
        )
    );
    assert!(
        p.log()
            .contains("LDAP can't be used together with database authentication"),
        "{}",
        p.log()
    );
    assert_eq!(current_user(&p, "ldapuser", "ldap_pw").await, "ldapuser");
}

/// A CA (PEM) and a server certificate + key it signed for 127.0.0.1 (PEM).
fn ca_and_server() -> (String, String, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "olly test LDAP CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    leaf.distinguished_name
        .push(rcgen::DnType::CommonName, "127.0.0.1");
    let cert = leaf.signed_by(&key, &ca_cert, &ca_key).unwrap();
    (ca_cert.pem(), cert.pem(), key.serialize_pem())
}

/// A pooler whose environment has `LDAPTLS_CACERT` = `ca_pem` (libldap's variable), with `hba`
/// as its auth_hba_file.
fn pooler_with_ca(pg: &Pg, ca_pem: &str, hba: &str, databases: &str) -> Pooler {
    let port = common::free_port();
    let (ca_pem, hba, databases) = (ca_pem.to_string(), hba.to_string(), databases.to_string());
    Pooler::start_custom(pg, port, move |dir| {
        std::fs::write(dir.join("ca.pem"), &ca_pem).unwrap();
        std::fs::write(dir.join("hba.conf"), &hba).unwrap();
        std::fs::write(dir.join("userlist.txt"), common::render_userlist("")).unwrap();
        let ini = common::render_ini(
            pg.port,
            port,
            dir,
            &databases,
            &format!(
                "auth_type = hba\nauth_hba_file = {}/hba.conf",
                dir.display()
            ),
        );
        let ini_path = dir.join("pgbouncer.ini");
        std::fs::write(&ini_path, ini).unwrap();
        (
            vec![ini_path.display().to_string()],
            vec![(
                "LDAPTLS_CACERT".to_string(),
                dir.join("ca.pem").display().to_string(),
            )],
        )
    })
}

/// ldapscheme=ldaps and ldaptls=1 (StartTLS): the server certificate must chain to
/// LDAPTLS_CACERT; with another CA the login fails like a wrong password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ldaps_and_starttls_check_the_server_certificate() {
    let (ca, cert, key) = ca_and_server();
    let slapd = Slapd::start_tls(&[("ldapuser", "ldap_pw")], &cert, &key);
    let pg = pg_with_ldap_user();
    let bind = format!("ldapprefix=\"uid=\" ldapsuffix=\",ou=people,{BASE_DN}\"");
    let hba = format!(
        "host testdb all 127.0.0.1/32 ldap ldapscheme=ldaps ldapserver=127.0.0.1 \
         ldapport={tls} {bind}\n\
         host all all 127.0.0.1/32 ldap ldaptls=1 ldapserver=127.0.0.1 ldapport={plain} {bind}\n",
        tls = slapd.tls_port,
        plain = slapd.port
    );
    let starttls_db = format!("starttlsdb = host=127.0.0.1 port={} dbname=testdb", pg.port);
    let p = pooler_with_ca(&pg, &ca, &hba, &starttls_db);
    // ldaps (testdb) and StartTLS (starttlsdb).
    assert_eq!(current_user(&p, "ldapuser", "ldap_pw").await, "ldapuser");
    let c = p
        .try_connect("ldapuser", "ldap_pw", "starttlsdb")
        .await
        .unwrap_or_else(|e| panic!("StartTLS login: {e}\n{}", p.log()));
    assert!(c.simple_query("SELECT 1").await.is_ok());
    assert_eq!(
        refused(&p, "ldapuser", "bad", "testdb").await,
        ldap_failed()
    );
    assert_eq!(
        refused(&p, "ldapuser", "bad", "starttlsdb").await,
        ldap_failed()
    );
    // Another CA: no TLS session, so no login, over either mode.
    let (other_ca, _, _) = ca_and_server();
    let q = pooler_with_ca(&pg, &other_ca, &hba, &starttls_db);
    for db in ["testdb", "starttlsdb"] {
        assert_eq!(refused(&q, "ldapuser", "ldap_pw", db).await, ldap_failed());
    }
    assert!(q.log().contains("could not connect to LDAP"), "{}", q.log());
}
