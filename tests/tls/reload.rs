//! server_tls_* changes as PgBouncer handles them: a TLS 1.0-only protocol list (which rustls
//! cannot speak) only fails servers that actually agree to TLS, and a RELOAD that changes the
//! server TLS settings closes the idle servers afterwards with PgBouncer's
//! "closing because: database configuration changed" line.

use std::time::Duration;

use super::common::{Pg, Pooler};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls10_only_protocol_list_leaves_prefer_on_a_plain_server_working() {
    // The harness's PostgreSQL has no TLS: prefer falls back to plain after its 'N'.
    let pg = Pg::start();
    let extra = "server_tls_sslmode = prefer\nserver_tls_protocols = tlsv1.0\n";
    let pooler = Pooler::start(&pg, "", extra, "");
    let c = pooler.connect("olly", "olly_pw", "testdb").await;
    c.simple_query("SELECT 1").await.expect("query over plain");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_changing_server_tls_logs_the_retired_idle_server_after_it() {
    let pg = Pg::start();
    let pooler = Pooler::start(&pg, "", "server_tls_sslmode = disable\n", "");
    let c = pooler.connect("olly", "olly_pw", "testdb").await;
    c.simple_query("SELECT 1").await.expect("query");
    // The server is idle in the pool now (transaction mode). Change the TLS settings.
    pooler.rewrite_config("", "server_tls_sslmode = allow\n", "");
    let admin = pooler.connect("olly", "olly_pw", "pgbouncer").await;
    admin.simple_query("RELOAD").await.expect("RELOAD");
    let after_reload = pooler.log().len();
    let line = "closing because: database configuration changed";
    // Polled in place: the client's connection task runs on the runtime's other worker.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let seen = loop {
        let log = pooler.log();
        if log
            .get(after_reload..)
            .is_some_and(|tail| tail.contains(line))
        {
            break (true, log);
        }
        if std::time::Instant::now() >= deadline {
            break (false, log);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(seen.0, "no '{line}' after the RELOAD:\n{}", seen.1);
    // And the client goes on, on a new server.
    c.simple_query("SELECT 2")
        .await
        .expect("query after reload");
}
