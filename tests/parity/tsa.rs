//! `target_session_attrs` over a host list of a primary and its streaming standby, in both
//! orders (PgBouncer's test_target_session_attrs): a server of the wrong kind is closed with
//! PgBouncer's `closing because: server does not satisfy target_session_attrs` and the next host
//! is tried; when no host fits, the client gets PgBouncer's `client_login_timeout (server down)`.

use crate::common::{Pg, Pooler};
use crate::console::Raw;

/// Whether the server a client's transaction ran on is a standby.
async fn in_recovery(port: u16, db: &str) -> bool {
    let mut c = Raw::connect(port, "olly", "olly_pw", db)
        .await
        .unwrap_or_else(|e| panic!("{db}: {e:?}"));
    let a = c.query("SELECT pg_is_in_recovery()").await;
    assert!(a.error.is_none(), "{db}: {a:?}");
    a.rows[0][0].as_deref() == Some("t")
}

fn entry(name: &str, first: &Pg, second: &Pg, attrs: &str) -> String {
    format!(
        "{name} = host=127.0.0.1,127.0.0.1 port={},{} dbname=testdb target_session_attrs={attrs}\n",
        first.port, second.port
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_kind_lands_on_the_matching_server_in_either_order() {
    let primary = Pg::start();
    let standby = Pg::start_standby_of(&primary);
    let (p, s) = (&primary, &standby);
    let dbs = [
        entry("primary_first", p, s, "primary"),
        entry("primary_second", s, p, "primary"),
        entry("standby_first", s, p, "standby"),
        entry("standby_second", p, s, "standby"),
        entry("readwrite_second", s, p, "read-write"),
        entry("readonly_second", p, s, "read-only"),
        entry("any_standby_first", s, p, "any"),
    ]
    .concat();
    let pooler = Pooler::start(p, &dbs, "server_login_retry = 1", "");
    for (db, standby_wanted) in [
        ("primary_first", false),
        ("primary_second", false),
        ("standby_first", true),
        ("standby_second", true),
        ("readwrite_second", false),
        ("readonly_second", true),
        ("any_standby_first", true),
    ] {
        assert_eq!(in_recovery(pooler.port, db).await, standby_wanted, "{db}");
    }
    let log = pooler.log();
    let refused = |port: u16| {
        format!("@127.0.0.1:{port} closing because: server does not satisfy target_session_attrs")
    };
    assert!(log.contains(&refused(s.port)), "{log}");
    assert!(log.contains(&refused(p.port)), "{log}");
    assert!(log.contains("does not satisfy target_session_attrs, trying the other hosts"));
    // A second client of a database whose first host was refused goes to the right one.
    assert!(!in_recovery(pooler.port, "primary_second").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_matching_host_ends_in_client_login_timeout() {
    let primary = Pg::start();
    let other = Pg::start();
    let dbs = entry("nostandby", &primary, &other, "standby");
    let pooler = Pooler::start(
        &primary,
        &dbs,
        "server_login_retry = 1\nclient_login_timeout = 2",
        "",
    );
    let err = Raw::connect(pooler.port, "olly", "olly_pw", "nostandby")
        .await
        .err()
        .expect("no standby: the login must fail");
    assert_eq!(err.message, "client_login_timeout (server down)", "{err:?}");
    assert!(pooler
        .log()
        .contains("closing because: server does not satisfy target_session_attrs"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_host_of_the_wrong_kind_is_refused_too() {
    let primary = Pg::start();
    let dbs = format!(
        "ro = host=127.0.0.1 port={} dbname=testdb target_session_attrs=read-only\n",
        primary.port
    );
    let pooler = Pooler::start(&primary, &dbs, "client_login_timeout = 2", "");
    assert!(Raw::connect(pooler.port, "olly", "olly_pw", "ro")
        .await
        .is_err());
    assert!(pooler
        .log()
        .contains("closing because: server does not satisfy target_session_attrs"));
}

/// PgBouncer tags the database changed when target_session_attrs changes: after RELOAD the
/// servers made under the old value are not reused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_with_another_value_replaces_the_servers() {
    let primary = Pg::start();
    let standby = Pg::start_standby_of(&primary);
    let entry = |attrs: &str| {
        format!(
            "tsa_reload = host=127.0.0.1,127.0.0.1 port={},{} dbname=testdb \
             load_balance_hosts=disable target_session_attrs={attrs}\n",
            standby.port, primary.port
        )
    };
    let pooler = Pooler::start(&primary, &entry("any"), "server_login_retry = 1", "");
    assert!(
        in_recovery(pooler.port, "tsa_reload").await,
        "any: the first host"
    );
    pooler.rewrite_config(&entry("primary"), "server_login_retry = 1", "");
    let mut console = crate::admin(&pooler).await;
    let a = console.query("RELOAD").await;
    assert!(a.error.is_none(), "{a:?}");
    assert!(
        !in_recovery(pooler.port, "tsa_reload").await,
        "primary after RELOAD"
    );
}
