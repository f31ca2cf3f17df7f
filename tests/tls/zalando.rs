//! The Zalando operator's pooler configuration (`pooler/pgbouncer.ini.tmpl`, verbatim in
//! `zalando/`), after its entrypoint's envsubst, with client and server TLS `require`, auth_query through
//! `pooler.user_lookup`, and a self-signed certificate as the entrypoint makes: psql with
//! sslmode=require is served. The test moves only what must stay inside the test: the absolute
//! directories go under the test's temp dir and `listen_addr = *` becomes 127.0.0.1. The same
//! file runs unchanged, with those paths, in the container image: scripts/docker-zalando.sh.

use super::auth_query::{create_pooler_role, install_user_lookup};
use super::common::{free_port, Pooler};
use super::{conninfo, pg_with_ssl, run_psql, Certs};

/// The operator's `pooler/pgbouncer.ini.tmpl`, byte for byte (shared with
/// scripts/docker-zalando.sh, which runs it in the image with its real paths).
const TEMPLATE: &str = include_str!("zalando/pgbouncer.ini.tmpl");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_pooler_ini_serves_psql_with_sslmode_require() {
    let certs = Certs::new("zalando");
    let pg = pg_with_ssl(&certs, &["localhost"]);
    create_pooler_role(&pg);
    install_user_lookup(&pg, "postgres");
    let port = free_port();
    let vars = [
        ("$PGHOST", "127.0.0.1".to_string()),
        ("$PGPORT", pg.port.to_string()),
        ("$PGUSER", "pooler".into()),
        ("$PGSCHEMA", "pooler".into()),
        ("$CONNECTION_POOLER_MODE", "transaction".into()),
        ("$CONNECTION_POOLER_PORT", port.to_string()),
        ("$INFRASTRUCTURE_ROLES", "".into()),
        ("$CONNECTION_POOLER_DEFAULT_SIZE", "15".into()),
        ("$CONNECTION_POOLER_MIN_SIZE", "7".into()),
        ("$CONNECTION_POOLER_RESERVE_SIZE", "7".into()),
        ("$CONNECTION_POOLER_MAX_CLIENT_CONN", "10000".into()),
        ("$CONNECTION_POOLER_MAX_DB_CONN", "30".into()),
    ];
    let pooler = Pooler::start_custom(&pg, port, |dir| {
        // envsubst, as the image's entrypoint does.
        let mut ini = TEMPLATE.to_string();
        for (k, v) in &vars {
            ini = ini.replace(k, v);
        }
        let root = dir.join("root");
        for d in [
            "etc/pgbouncer",
            "etc/ssl/certs",
            "var/log/pgbouncer",
            "var/run/pgbouncer",
        ] {
            std::fs::create_dir_all(root.join(d)).unwrap();
            ini = ini.replace(&format!("/{d}/"), &format!("{}/{d}/", root.display()));
        }
        ini = ini.replace("listen_addr = *", "listen_addr = 127.0.0.1");
        // The entrypoint's self-signed certificate (openssl req -x509 -subj /CN=spilo.dummy.org).
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "spilo.dummy.org");
        let cert = params.self_signed(&key).unwrap();
        let certs_dir = root.join("etc/ssl/certs");
        std::fs::write(certs_dir.join("pgbouncer.crt"), cert.pem()).unwrap();
        std::fs::write(certs_dir.join("pgbouncer.key"), key.serialize_pem()).unwrap();
        std::fs::write(
            root.join("etc/pgbouncer/userlist.txt"),
            "\"pooler\" \"pooler_pw\"\n",
        )
        .unwrap();
        let path = dir.join("pgbouncer.ini");
        std::fs::write(&path, ini).unwrap();
        (vec![path.display().to_string()], vec![])
    });

    let ci = conninfo(
        "127.0.0.1",
        port,
        "md5user",
        "md5_pw",
        "testdb",
        "sslmode=require",
    );
    let (code, out, err) = run_psql(
        &ci,
        "SELECT current_user || ' ' || ssl::text FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
    );
    assert_eq!((code, out.as_str()), (0, "md5user true"), "{err}");
    // JDBC's extra_float_digits is ignored as the template asks; SCRAM users pass through.
    let ci = conninfo(
        "127.0.0.1",
        port,
        "scramuser",
        "scram_pw",
        "testdb",
        "sslmode=require options='-c extra_float_digits=2'",
    );
    let (code, out, err) = run_psql(&ci, "SELECT current_user");
    assert_eq!((code, out.as_str()), (0, "scramuser"), "{err}");
    // The admin console as $PGUSER, over TLS.
    let admin = conninfo(
        "127.0.0.1",
        port,
        "pooler",
        "pooler_pw",
        "pgbouncer",
        "sslmode=require",
    );
    let (code, out, err) = run_psql(&admin, "SHOW CLIENTS");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("TLSv1.3"), "{out}");
    // PgBouncer's login line, with the TLS description (the template sets log_connections).
    let log = std::fs::read_to_string(pooler.dir.join("root/var/log/pgbouncer/pgbouncer.log"))
        .expect("the template's logfile");
    assert!(
        log.contains("login attempt: db=testdb user=md5user tls=TLSv1.3/"),
        "{log}"
    );
    // Plain clients are refused.
    let plain = conninfo(
        "127.0.0.1",
        port,
        "md5user",
        "md5_pw",
        "testdb",
        "sslmode=disable",
    );
    let (code, _, err) = run_psql(&plain, "SELECT 1");
    assert_ne!(code, 0);
    assert!(err.contains("SSL required"), "{err}");
    drop(pooler);
    drop(certs);
}
