//! autodb_idle_timeout and pool_idle_timeout: a database made from `*`, once it has no client
//! and no server, is dropped after autodb_idle_timeout (gone from SHOW DATABASES and SHOW
//! POOLS); a pool with no client and no server is freed after pool_idle_timeout, while a pool
//! with an idle client stays.

use std::time::Duration;

use crate::common::Pooler;
use crate::console::Raw;
use crate::{admin, pg};

async fn names(c: &mut Raw, show: &str, col: &str) -> Vec<String> {
    let a = c.query(show).await;
    let i = a.col(col);
    a.rows.iter().filter_map(|r| r[i].clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unused_auto_database_is_dropped_after_autodb_idle_timeout() {
    let p = Pooler::start(
        pg(),
        &format!("* = host=127.0.0.1 port={} dbname=testdb", pg().port),
        "autodb_idle_timeout = 1\nserver_idle_timeout = 1",
        "",
    );
    let mut c = admin(&p).await;
    let mut client = Raw::connect(p.port, "olly", "olly_pw", "autodb1")
        .await
        .unwrap();
    assert!(client.query("SELECT 1").await.error.is_none());
    assert!(names(&mut c, "SHOW DATABASES", "name")
        .await
        .contains(&"autodb1".into()));
    // In use (a client, however idle): kept.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(names(&mut c, "SHOW DATABASES", "name")
        .await
        .contains(&"autodb1".into()));
    client.terminate().await;
    let mut gone = false;
    for _ in 0..100 {
        let dbs = names(&mut c, "SHOW DATABASES", "name").await;
        let pools = names(&mut c, "SHOW POOLS", "database").await;
        if !dbs.contains(&"autodb1".into()) && !pools.contains(&"autodb1".into()) {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "{}", p.log());
    assert!(p.log().contains("auto-database unused"), "{}", p.log());
    // The configured database stays; the name works again as a new auto-database.
    assert!(names(&mut c, "SHOW DATABASES", "name")
        .await
        .contains(&"testdb".into()));
    let mut again = Raw::connect(p.port, "olly", "olly_pw", "autodb1")
        .await
        .unwrap();
    assert!(again.query("SELECT 1").await.error.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_pool_is_freed_after_pool_idle_timeout() {
    let p = Pooler::start(
        pg(),
        "",
        "pool_idle_timeout = 1\nserver_idle_timeout = 1",
        "",
    );
    let mut c = admin(&p).await;
    let mut keeps = Raw::connect(p.port, "md5user", "md5_pw", "testdb")
        .await
        .unwrap();
    assert!(keeps.query("SELECT 1").await.error.is_none());
    let mut leaves = Raw::connect(p.port, "olly", "olly_pw", "testdb")
        .await
        .unwrap();
    assert!(leaves.query("SELECT 1").await.error.is_none());
    leaves.terminate().await;
    let users = |a: &crate::console::Answer| -> Vec<String> {
        let i = a.col("user");
        a.rows
            .iter()
            .filter(|r| r[0].as_deref() == Some("testdb"))
            .filter_map(|r| r[i].clone())
            .collect()
    };
    let mut freed = false;
    for _ in 0..100 {
        let pools = c.query("SHOW POOLS").await;
        let u = users(&pools);
        if !u.contains(&"olly".to_string()) {
            assert!(
                u.contains(&"md5user".to_string()),
                "a pool with a client stays: {u:?}"
            );
            freed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(freed, "{}", p.log());
    assert!(names(&mut c, "SHOW DATABASES", "name")
        .await
        .contains(&"testdb".into()));
    assert!(keeps.query("SELECT 2").await.error.is_none());
    let cfg = c.query("SHOW CONFIG").await;
    for key in ["pool_idle_timeout", "autodb_idle_timeout"] {
        assert_eq!(cfg.get("key", key, "changeable").as_deref(), Some("yes"));
    }
    assert_eq!(
        cfg.get("key", "autodb_idle_timeout", "default").as_deref(),
        Some("3600")
    );
}
