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
