//! PgBouncer 1.25's TLS 1.2 / TLS 1.3 split: `*_tls_ciphers` picks the TLS 1.2 suites,
//! `*_tls13_ciphers` the TLS 1.3 ones, and `client_tls_ecdhcurve` the key-exchange group, as the
//! `tls` column of SHOW CLIENTS and PostgreSQL's pg_stat_ssl report them.

use tokio_postgres::SimpleQueryMessage;

use super::common::Pooler;
use super::{conninfo, pg_with_ssl, run_psql, Certs};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_side_suites_and_curve_follow_the_settings() {
    let certs = Certs::new("ciphers");
    certs.leaf("pooler", "pooler", &["localhost", "127.0.0.1"]);
    let pg = super::common::Pg::start();
    // The test certificates have ECDSA keys, hence an ECDSA TLS 1.2 suite.
    let lines = format!(
        "client_tls_sslmode = require\nclient_tls_key_file = {}\nclient_tls_cert_file = {}\n\
         client_tls_ciphers = ECDHE-ECDSA-AES128-GCM-SHA256\n\
         client_tls13_ciphers = TLS_CHACHA20_POLY1305_SHA256\n\
         client_tls_ecdhcurve = secp384r1\n",
        certs.p("pooler.key"),
        certs.p("pooler.crt")
    );
    let pooler = Pooler::start(&pg, "", &lines, "");
    let show = |extra: &str| {
        let ci = conninfo(
            "127.0.0.1",
            pooler.port,
            "olly",
            "olly_pw",
            "pgbouncer",
            &format!("sslmode=require {extra}"),
        );
        let (code, out, err) = run_psql(&ci, "SHOW CLIENTS");
        assert_eq!(code, 0, "{err}");
        out
    };
    // TLS 1.3 (what libpq asks for first): the TLS 1.3 list decides, whatever the TLS 1.2 one.
    let out = show("");
    assert!(
        out.contains("|TLSv1.3/TLS_CHACHA20_POLY1305_SHA256/ECDH=secp384r1|"),
        "{out}"
    );
    // TLS 1.2: the TLS 1.2 list decides, and the curve is the same.
    let out = show("ssl_max_protocol_version=TLSv1.2");
    assert!(
        out.contains("|TLSv1.2/ECDHE-ECDSA-AES128-GCM-SHA256/ECDH=secp384r1|"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_tls13_ciphers_pick_the_suite_postgres_sees() {
    let certs = Certs::new("ciphers-server");
    let pg = pg_with_ssl(&certs, &["localhost"]);
    let dbs = format!("tls13 = host=localhost port={} dbname=testdb\n", pg.port);
    let lines = "server_tls_sslmode = require\nserver_tls13_ciphers = TLS_AES_128_GCM_SHA256\n";
    let pooler = Pooler::start(&pg, &dbs, lines, "");
    let c = pooler.connect("olly", "olly_pw", "tls13").await;
    let rows = c
        .simple_query(
            "SELECT version || '/' || cipher FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        )
        .await
        .unwrap();
    let seen = rows
        .iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        })
        .expect("a row");
    // PostgreSQL prefers TLS_AES_256_GCM_SHA384 when the pooler offers every TLS 1.3 suite.
    assert_eq!(seen, "TLSv1.3/TLS_AES_128_GCM_SHA256");
}
