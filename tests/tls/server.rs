//! Server-side TLS: verify-full checks PostgreSQL's certificate and host name, verify-ca only the
//! chain, a wrong CA is refused, `require` refuses a server without TLS and `prefer` falls back.

use tokio_postgres::SimpleQueryMessage;

use super::common::{Pg, Pooler};
use super::{pg_with_ssl, Certs};

async fn first_value(c: &tokio_postgres::Client, sql: &str) -> String {
    let rows = c.simple_query(sql).await.expect(sql);
    rows.iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(r.get(0).unwrap_or("").to_string()),
            _ => None,
        })
        .expect("a row")
}

fn dbs(pg: &Pg) -> String {
    format!(
        "byname = host=localhost port={p} dbname=testdb\nbyip = host=127.0.0.1 port={p} dbname=testdb\n",
        p = pg.port
    )
}

const SSL_IN_USE: &str = "SELECT ssl::text FROM pg_stat_ssl WHERE pid = pg_backend_pid()";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_checks_certificate_and_host_name() {
    let certs = Certs::new("server");
    let pg = pg_with_ssl(&certs, &["localhost"]);
    // A refused server is retried (as PgBouncer does) until the client's login times out.
    let tls = |mode: &str, ca: &Certs| {
        format!(
            "server_tls_sslmode = {mode}\nserver_tls_ca_file = {}\nclient_login_timeout = 3\n",
            ca.p("ca.crt")
        )
    };

    let pooler = Pooler::start(&pg, &dbs(&pg), &tls("verify-full", &certs), "");
    let c = pooler.connect("olly", "olly_pw", "byname").await;
    assert_eq!(first_value(&c, SSL_IN_USE).await, "true");
    // The certificate names localhost only: by IP address verify-full must refuse.
    assert!(pooler.try_connect("olly", "olly_pw", "byip").await.is_err());
    let admin = pooler.connect("olly", "olly_pw", "pgbouncer").await;
    let rows = admin.simple_query("SHOW SERVERS").await.unwrap();
    let tls_col = rows
        .iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(r) if r.get(2) == Some("byname") => {
                Some(r.get("tls").unwrap_or("").to_string())
            }
            _ => None,
        })
        .expect("a server of byname");
    assert!(tls_col.starts_with("TLSv1.3/TLS_"), "{tls_col}");
    drop(pooler);

    // verify-ca: chain only, so the IP address is fine.
    let pooler = Pooler::start(&pg, &dbs(&pg), &tls("verify-ca", &certs), "");
    let c = pooler.connect("olly", "olly_pw", "byip").await;
    assert_eq!(first_value(&c, SSL_IN_USE).await, "true");
    drop(pooler);

    // Another CA: refused in both modes.
    let stranger = Certs::new("stranger");
    let pooler = Pooler::start(&pg, &dbs(&pg), &tls("verify-ca", &stranger), "");
    assert!(pooler
        .try_connect("olly", "olly_pw", "byname")
        .await
        .is_err());
    assert!(pooler.log().contains("server TLS"), "{}", pooler.log());
    drop(pooler);

    // require: TLS without identity checks (the Zalando template's mode).
    let pooler = Pooler::start(&pg, &dbs(&pg), "server_tls_sslmode = require", "");
    let c = pooler.connect("olly", "olly_pw", "byip").await;
    assert_eq!(first_value(&c, SSL_IN_USE).await, "true");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_refuses_a_plain_server_and_prefer_falls_back() {
    let pg = Pg::start();
    let extra = "server_tls_sslmode = require\nclient_login_timeout = 3";
    let pooler = Pooler::start(&pg, "", extra, "");
    assert!(pooler
        .try_connect("olly", "olly_pw", "testdb")
        .await
        .is_err());
    assert!(
        pooler.log().contains("does not support TLS"),
        "{}",
        pooler.log()
    );
    drop(pooler);
    let pooler = Pooler::start(&pg, "", "server_tls_sslmode = prefer", "");
    let c = pooler.connect("olly", "olly_pw", "testdb").await;
    assert_eq!(first_value(&c, "SELECT 'plain'").await, "plain");
}
