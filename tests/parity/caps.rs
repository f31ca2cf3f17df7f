//! max_db_client_connections and max_user_client_connections: global and per entry, PgBouncer's
//! texts, and the SHOW DATABASES / SHOW USERS columns.

use crate::common::Pooler;
use crate::console::Raw;
use crate::{admin, fatal, pg, refused};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_database_cap_refuses_the_extra_client_and_shows_in_show_databases() {
    let pg_port = pg().port;
    let p = Pooler::start(
        pg(),
        &format!(
            "capped = host=127.0.0.1 port={pg_port} dbname=testdb max_db_client_connections=2"
        ),
        "",
        "",
    );
    let a = Raw::connect(p.port, "olly", "olly_pw", "capped")
        .await
        .unwrap();
    let _b = Raw::connect(p.port, "olly", "olly_pw", "capped")
        .await
        .unwrap();
    assert_eq!(
        refused(&p, "olly", "olly_pw", "capped").await,
        fatal("client connections exceeded (max_db_client_connections)")
    );
    // Another database is not affected.
    let _other = Raw::connect(p.port, "olly", "olly_pw", "testdb")
        .await
        .unwrap();
    let mut c = admin(&p).await;
    let dbs = c.query("SHOW DATABASES").await;
    assert_eq!(dbs.num("name", "capped", "max_client_connections"), 2);
    assert_eq!(dbs.num("name", "capped", "current_client_connections"), 2);
    assert_eq!(dbs.num("name", "testdb", "max_client_connections"), 0);
    // A place frees up when a client leaves.
    a.terminate().await;
    assert!(
        wait_login(&p, "capped").await,
        "a slot frees when a client leaves"
    );
}

/// Retries a login for a few seconds (the count drops once the server side notices the close).
async fn wait_login(p: &Pooler, db: &str) -> bool {
    for _ in 0..50 {
        if Raw::connect(p.port, "olly", "olly_pw", db).await.is_ok() {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_user_cap_and_per_user_override_with_show_users() {
    let p = Pooler::start(
        pg(),
        "",
        "max_user_client_connections = 1\n[users]\nmd5user = max_user_client_connections=2",
        "",
    );
    let _a = Raw::connect(p.port, "scramuser", "scram_pw", "testdb")
        .await
        .unwrap();
    assert_eq!(
        refused(&p, "scramuser", "scram_pw", "testdb").await,
        fatal("client connections exceeded (max_user_client_connections)")
    );
    let _m1 = Raw::connect(p.port, "md5user", "md5_pw", "testdb")
        .await
        .unwrap();
    let _m2 = Raw::connect(p.port, "md5user", "md5_pw", "testdb")
        .await
        .unwrap();
    assert_eq!(
        refused(&p, "md5user", "md5_pw", "testdb").await,
        fatal("client connections exceeded (max_user_client_connections)")
    );
    // The admin user on the console is exempt, as in PgBouncer.
    let mut c = admin(&p).await;
    let _c2 = admin(&p).await;
    let users = c.query("SHOW USERS").await;
    assert_eq!(
        users.num("name", "md5user", "max_user_client_connections"),
        2
    );
    assert_eq!(
        users.num("name", "md5user", "current_client_connections"),
        2
    );
    assert_eq!(
        users.num("name", "scramuser", "max_user_client_connections"),
        1
    );
    // SET raises the global cap at run time.
    let a = c.query("SET max_user_client_connections = 5").await;
    assert_eq!(a.tag.as_deref(), Some("SET max_user_client_connections=5"));
    let _s2 = Raw::connect(p.port, "scramuser", "scram_pw", "testdb")
        .await
        .unwrap();
}

/// PgBouncer 1.18 has no client caps; 1.24's text is what we send. The global database cap is
/// shown for every database without its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_database_cap_via_set() {
    let p = Pooler::start(pg(), "", "", "");
    let mut c = admin(&p).await;
    let a = c.query("SET max_db_client_connections = 1").await;
    assert!(a.error.is_none(), "{a:?}");
    let dbs = c.query("SHOW DATABASES").await;
    assert_eq!(dbs.num("name", "testdb", "max_client_connections"), 1);
    let _a = Raw::connect(p.port, "olly", "olly_pw", "testdb")
        .await
        .unwrap();
    assert_eq!(
        refused(&p, "olly", "olly_pw", "testdb").await,
        fatal("client connections exceeded (max_db_client_connections)")
    );
}
