//! auth_type = hba: the method comes from the first matching line of auth_hba_file, with
//! PgBouncer's texts for reject and no match, hostssl/hostnossl by the client's TLS, and `@file`.

use super::common::{Pg, Pooler};
use super::{conninfo, run_psql, Certs};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hba_allow_deny_matrix() {
    let certs = Certs::new("hba");
    certs.leaf("pooler", "pooler", &["localhost"]);
    std::fs::write(certs.path("dbs.txt"), "testdb\n").unwrap();
    std::fs::write(
        certs.path("hba.conf"),
        "# TYPE    DATABASE  USER       ADDRESS       METHOD\n\
         hostssl   all       scramuser  127.0.0.1/32  scram-sha-256\n\
         host      testdb    olly       127.0.0.1/32  reject\n\
         host      pgbouncer olly       127.0.0.1/32  md5\n\
         hostnossl @dbs.txt  md5user    127.0.0.0/8   password\n\
         host      all       stats      ::1/128       trust\n",
    )
    .unwrap();
    let pg = Pg::start();
    let extra = format!(
        "auth_type = hba\nauth_hba_file = {}\nclient_tls_sslmode = prefer\n\
         client_tls_key_file = {}\nclient_tls_cert_file = {}\n",
        certs.p("hba.conf"),
        certs.p("pooler.key"),
        certs.p("pooler.crt")
    );
    let pooler = Pooler::start(&pg, "", &extra, "");
    let port = pooler.port;
    let login = |user: &str, pw: &str, db: &str, ssl: &str| {
        run_psql(
            &conninfo("127.0.0.1", port, user, pw, db, &format!("sslmode={ssl}")),
            "SELECT current_user",
        )
    };

    // password (cleartext) for md5user over plain TCP, through the @file database list.
    let (code, out, err) = login("md5user", "md5_pw", "testdb", "disable");
    assert_eq!((code, out.as_str()), (0, "md5user"), "{err}");
    // hostnossl does not match a TLS client, and nothing else does.
    let (_, _, err) = login("md5user", "md5_pw", "testdb", "require");
    assert!(err.contains("no authentication method is found"), "{err}");
    // hostssl: only over TLS.
    let (code, out, err) = login("scramuser", "scram_pw", "testdb", "require");
    assert_eq!((code, out.as_str()), (0, "scramuser"), "{err}");
    let (_, _, err) = login("scramuser", "scram_pw", "testdb", "disable");
    assert!(err.contains("no authentication method is found"), "{err}");
    // reject, per database.
    let (_, _, err) = login("olly", "olly_pw", "testdb", "disable");
    assert!(err.contains("login rejected"), "{err}");
    let admin = conninfo(
        "127.0.0.1",
        port,
        "olly",
        "olly_pw",
        "pgbouncer",
        "sslmode=disable",
    );
    let (code, out, err) = run_psql(&admin, "SHOW VERSION");
    assert_eq!(code, 0, "{err}: {out}");
    // An IPv6-only line does not match an IPv4 client.
    let (_, _, err) = login("stats", "stats_pw", "testdb", "disable");
    assert!(err.contains("no authentication method is found"), "{err}");
    // Wrong password through an HBA md5/password line: PgBouncer's text.
    let (_, _, err) = login("md5user", "nope", "testdb", "disable");
    assert!(err.contains("password authentication failed"), "{err}");
}

/// A line naming a `+group` is what PgBouncer skips with `could not parse hba config line N`,
/// reading on: the same file through the Debian PgBouncer and through us gives the same answers
/// (the trust line never applies, to the group's members or to the plain names beside them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_lines_are_skipped_like_pgbouncer() {
    let dir = Certs::new("hba-group");
    std::fs::write(
        dir.path("hba.conf"),
        "host all +admins,md5user 127.0.0.1/32 trust\n\
         host all all             127.0.0.1/32 md5\n",
    )
    .unwrap();
    let pg = Pg::start();
    let extra = format!("auth_type = hba\nauth_hba_file = {}\n", dir.p("hba.conf"));
    for pooler in [
        Pooler::start_pgbouncer(&pg, "", &extra, ""),
        Pooler::start(&pg, "", &extra, ""),
    ] {
        let login = |pw: &str| {
            run_psql(
                &conninfo("127.0.0.1", pooler.port, "md5user", pw, "testdb", ""),
                "SELECT current_user",
            )
        };
        // Not trusted: a wrong password fails at the md5 line...
        let (code, _, err) = login("wrong");
        assert_ne!(code, 0, "trust line applied");
        assert!(err.contains("password authentication failed"), "{err}");
        // ...and the right one passes it.
        let (code, out, err) = login("md5_pw");
        assert_eq!((code, out.as_str()), (0, "md5user"), "{err}");
        assert!(
            pooler.log().contains("could not parse hba config line 1"),
            "{}",
            pooler.log()
        );
    }
}

/// HBA `cert` with `map=` (auth_ident_file): the certificate CN goes through the map, with a
/// regular expression and `\1`; without a map the CN must be the user; failures get PgBouncer's
/// `certificate authentication failed`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cert_with_an_ident_map() {
    let certs = Certs::new("hba-certmap");
    certs.leaf("pooler", "pooler", &["localhost"]);
    certs.leaf("app", "app-olly", &[]);
    certs.leaf("alice", "alice", &[]);
    std::fs::write(
        certs.path("hba.conf"),
        "hostssl pgbouncer all 127.0.0.1/32 cert\n\
         hostssl all all 127.0.0.1/32 cert map=certs\n",
    )
    .unwrap();
    std::fs::write(
        certs.path("ident.conf"),
        "certs /^app-(.*)$ \\1\n\
         certs alice       md5user\n",
    )
    .unwrap();
    let pg = Pg::start();
    let extra = format!(
        "auth_type = hba\nauth_hba_file = {}\nauth_ident_file = {}\n\
         client_tls_sslmode = require\nclient_tls_key_file = {}\n\
         client_tls_cert_file = {}\nclient_tls_ca_file = {}\n",
        certs.p("hba.conf"),
        certs.p("ident.conf"),
        certs.p("pooler.key"),
        certs.p("pooler.crt"),
        certs.p("ca.crt")
    );
    let pooler = Pooler::start(&pg, "", &extra, "");
    let login = |stem: &str, user: &str, db: &str| {
        let ci = conninfo(
            "127.0.0.1",
            pooler.port,
            user,
            "unused",
            db,
            &format!(
                "sslmode=require sslcert={} sslkey={}",
                certs.p(&format!("{stem}.crt")),
                certs.p(&format!("{stem}.key"))
            ),
        );
        run_psql(&ci, "SELECT current_user")
    };
    // CN app-olly -> olly through the regex and \1.
    let (code, out, err) = login("app", "olly", "testdb");
    assert_eq!((code, out.as_str()), (0, "olly"), "{err}");
    // The CN itself is not a user the map gives, nor is anyone else.
    for user in ["app-olly", "md5user"] {
        let (code, _, err) = login("app", user, "testdb");
        assert_ne!(code, 0, "{user}");
        assert!(err.contains("certificate authentication failed"), "{err}");
    }
    // CN alice -> md5user by an exact line, and not to olly.
    let (code, out, err) = login("alice", "md5user", "testdb");
    assert_eq!((code, out.as_str()), (0, "md5user"), "{err}");
    let (_, _, err) = login("alice", "olly", "testdb");
    assert!(err.contains("certificate authentication failed"), "{err}");
    // The console line has no map: the CN must be the user.
    let (_, _, err) = login("app", "olly", "pgbouncer");
    assert!(err.contains("certificate authentication failed"), "{err}");
}
