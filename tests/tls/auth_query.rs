//! auth_query through the Zalando operator's `pooler.user_lookup`, created in the test as the
//! operator creates it: md5 and SCRAM users log in with only the pooler user in the auth_file,
//! SCRAM passes through to the server, and an unknown user gets PgBouncer's "no such user".
//! The console takes auth_query users too (global auth_user), never with itself as the auth
//! database; the query runs at every login; a refused server login logs its own line.

use tokio_postgres::SimpleQueryMessage;

use super::common::{free_port, Pg, Pooler};

/// The operator's lookup function (postgres-operator `pkg/cluster/database.go`), in `db`.
pub fn install_user_lookup(pg: &Pg, db: &str) {
    pg.psql_db(
        db,
        "CREATE SCHEMA IF NOT EXISTS pooler;
         CREATE OR REPLACE FUNCTION pooler.user_lookup(
             in i_username text, out uname text, out phash text)
         RETURNS record AS $$
         BEGIN
             SELECT usename, passwd FROM pg_catalog.pg_shadow
             WHERE usename = i_username INTO uname, phash;
             RETURN;
         END;
         $$ LANGUAGE plpgsql SECURITY DEFINER;
         REVOKE ALL ON FUNCTION pooler.user_lookup(text) FROM public, pooler;
         GRANT EXECUTE ON FUNCTION pooler.user_lookup(text) TO pooler;
         GRANT USAGE ON SCHEMA pooler TO pooler;",
    );
}

/// The operator's pooler role.
pub fn create_pooler_role(pg: &Pg) {
    pg.psql_db(
        "postgres",
        "DO $$ BEGIN
           IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'pooler') THEN
             CREATE ROLE pooler LOGIN PASSWORD 'pooler_pw';
           END IF;
         END $$;",
    );
}

fn start(pg: &Pg) -> Pooler {
    let port = free_port();
    let pg_port = pg.port;
    Pooler::start_custom(pg, port, |dir| {
        std::fs::write(dir.join("userlist.txt"), "\"pooler\" \"pooler_pw\"\n").unwrap();
        let ini = format!(
            "[databases]\n\
             * = host=127.0.0.1 port={pg_port} auth_user=pooler\n\
             [pgbouncer]\n\
             listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir = {d}\n\
             auth_type = md5\nauth_file = {d}/userlist.txt\nauth_dbname = postgres\n\
             auth_query = SELECT * FROM pooler.user_lookup($1)\n\
             admin_users = pooler\npool_mode = transaction\n",
            d = dir.display()
        );
        std::fs::write(dir.join("pgbouncer.ini"), ini).unwrap();
        (
            vec![dir.join("pgbouncer.ini").display().to_string()],
            vec![],
        )
    })
}

async fn current_user(c: &tokio_postgres::Client) -> String {
    let rows = c.simple_query("SELECT current_user").await.unwrap();
    match &rows[1] {
        SimpleQueryMessage::Row(r) => r.get(0).unwrap().to_string(),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_user_lookup_serves_md5_and_scram_users() {
    let pg = Pg::start();
    create_pooler_role(&pg);
    install_user_lookup(&pg, "postgres");
    let pooler = start(&pg);

    let c = pooler.connect("md5user", "md5_pw", "testdb").await;
    assert_eq!(current_user(&c).await, "md5user");
    // SCRAM secret from pg_shadow: the client does SCRAM with the pooler, and the recovered keys
    // log in to the server.
    let c2 = pooler.connect("scramuser", "scram_pw", "testdb").await;
    assert_eq!(current_user(&c2).await, "scramuser");
    c.simple_query("SELECT 1").await.unwrap();

    // Wrong password, and a user the operator's function answers with a row of NULLs: PgBouncer
    // drops the auth query's server at the NULL name and tells the client "bouncer config error".
    let wrong = pooler
        .try_connect("md5user", "nope", "testdb")
        .await
        .err()
        .unwrap();
    let ghost = pooler
        .try_connect("ghost", "nope", "testdb")
        .await
        .err()
        .unwrap();
    let text = |e: &tokio_postgres::Error| {
        let d = e.as_db_error().expect("db error");
        (d.code().code().to_string(), d.message().to_string())
    };
    assert_eq!(
        text(&wrong),
        ("08P01".into(), "password authentication failed".into())
    );
    assert_eq!(
        text(&ghost),
        ("08P01".into(), "bouncer config error".into())
    );

    // After a RELOAD (whose config knows nothing of md5user) the clients' servers still log in
    // with what auth_query found: new server logins for connected clients keep working.
    let admin = pooler.connect("pooler", "pooler_pw", "pgbouncer").await;
    admin.simple_query("RELOAD").await.expect("RELOAD");
    pg.terminate_backends("testdb");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(current_user(&c).await, "md5user");
    assert_eq!(current_user(&c2).await, "scramuser");

    // No pool (so no server connection) was made for the unknown user; secrets never show.
    let pools = admin.simple_query("SHOW POOLS").await.unwrap();
    let users: Vec<String> = pools
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(r.get(1).unwrap_or("").to_string()),
            _ => None,
        })
        .collect();
    assert!(users.contains(&"md5user".to_string()), "{users:?}");
    assert!(!users.contains(&"ghost".to_string()), "{users:?}");
    let md5_secret = pg.psql_db(
        "postgres",
        "SELECT rolpassword FROM pg_authid WHERE rolname = 'md5user'",
    );
    assert!(md5_secret.starts_with("md5"));
    assert!(!pooler.log().contains(&md5_secret), "secret in the log");
    assert!(
        !pooler.log().contains("SCRAM-SHA-256$"),
        "secret in the log"
    );
}

/// DISABLE of the auth database refuses every login that needs auth_query, also for a user
/// whose answer is cached, with PgBouncer's text; ENABLE lets them in again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_auth_database_refuses_auth_query_logins() {
    let pg = Pg::start();
    create_pooler_role(&pg);
    install_user_lookup(&pg, "postgres");
    let pooler = start(&pg);

    // Makes the auth database's pool and caches md5user's answer.
    let c = pooler.connect("md5user", "md5_pw", "testdb").await;
    assert_eq!(current_user(&c).await, "md5user");
    let admin = pooler.connect("pooler", "pooler_pw", "pgbouncer").await;
    admin
        .simple_query("DISABLE postgres")
        .await
        .expect("DISABLE");

    let e = pooler
        .try_connect("md5user", "md5_pw", "testdb")
        .await
        .expect_err("refused");
    let d = e.as_db_error().expect("db error");
    assert_eq!(
        (d.code().code(), d.message()),
        ("08P01", "authentication database \"postgres\" is disabled")
    );
    // A user from the auth_file needs no auth_query and still logs in.
    pooler.connect("pooler", "pooler_pw", "testdb").await;
    // The connected client is not affected.
    assert_eq!(current_user(&c).await, "md5user");

    admin.simple_query("ENABLE postgres").await.expect("ENABLE");
    let c2 = pooler.connect("md5user", "md5_pw", "testdb").await;
    assert_eq!(current_user(&c2).await, "md5user");
}

/// A pooler with a global auth_user (so the console uses auth_query too), `md5user` as a stats
/// user, and `bad`, a database whose forced server login PostgreSQL refuses.
fn start_global(pg: &Pg, auth_dbname: Option<&str>) -> Pooler {
    start_global_query(pg, auth_dbname, "SELECT * FROM pooler.user_lookup($1)")
}

fn start_global_query(pg: &Pg, auth_dbname: Option<&str>, query: &str) -> Pooler {
    let port = free_port();
    let pg_port = pg.port;
    let authdb = auth_dbname
        .map(|d| format!("auth_dbname = {d}\n"))
        .unwrap_or_default();
    Pooler::start_custom(pg, port, |dir| {
        std::fs::write(dir.join("userlist.txt"), "\"pooler\" \"pooler_pw\"\n").unwrap();
        let ini = format!(
            "[databases]\n\
             bad = host=127.0.0.1 port={pg_port} dbname=testdb user=md5user password=wrong\n\
             * = host=127.0.0.1 port={pg_port}\n\
             [pgbouncer]\n\
             listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir = {d}\n\
             auth_type = md5\nauth_file = {d}/userlist.txt\nauth_user = pooler\n{authdb}\
             auth_query = {query}\n\
             admin_users = pooler\nstats_users = md5user\npool_mode = transaction\n",
            d = dir.display()
        );
        std::fs::write(dir.join("pgbouncer.ini"), ini).unwrap();
        (
            vec![dir.join("pgbouncer.ini").display().to_string()],
            vec![],
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_and_password_changes_go_through_auth_query_like_pgbouncer() {
    let pg = Pg::start();
    create_pooler_role(&pg);
    install_user_lookup(&pg, "postgres");
    install_user_lookup(&pg, "testdb");

    // No global auth_dbname: the console would be its own auth database, which PgBouncer refuses.
    let pooler = start_global(&pg, None);
    let e = pooler
        .try_connect("md5user", "md5_pw", "pgbouncer")
        .await
        .expect_err("refused");
    let d = e.as_db_error().expect("db error");
    assert_eq!(
        (d.code().code(), d.message()),
        ("08P01", "bouncer config error")
    );
    assert!(
        pooler
            .log()
            .contains("cannot use the reserved \"pgbouncer\" database as an auth_dbname"),
        "{}",
        pooler.log()
    );
    drop(pooler);

    // With one, the console's auth_query runs there.
    let pooler = start_global(&pg, Some("postgres"));
    let admin = pooler.connect("md5user", "md5_pw", "pgbouncer").await;
    admin.simple_query("SHOW STATS").await.expect("SHOW STATS");

    // The query runs at every login: a new password works at once, the old one no more.
    let c = pooler.connect("md5user", "md5_pw", "testdb").await;
    assert_eq!(current_user(&c).await, "md5user");
    pg.psql_db("postgres", "ALTER ROLE md5user PASSWORD 'changed_pw'");
    let c2 = pooler.connect("md5user", "changed_pw", "testdb").await;
    assert_eq!(current_user(&c2).await, "md5user");
    assert!(pooler
        .try_connect("md5user", "md5_pw", "testdb")
        .await
        .is_err());

    // A user the query returns no row for: PgBouncer's "no such user" (no mock login).
    drop(pooler);
    let pooler = start_global_query(
        &pg,
        Some("postgres"),
        "SELECT uname, phash FROM pooler.user_lookup($1) WHERE uname IS NOT NULL",
    );
    let e = pooler
        .try_connect("ghost", "x", "testdb")
        .await
        .expect_err("refused");
    assert_eq!(
        e.as_db_error().map(|d| d.message().to_string()).as_deref(),
        Some("no such user")
    );

    // A server login PostgreSQL refuses: the client's line and the server's own.
    assert!(pooler
        .try_connect("pooler", "pooler_pw", "bad")
        .await
        .is_err());
    let needle = "closing because: password authentication failed for user";
    assert!(
        pooler.log().matches(needle).count() >= 2,
        "{}",
        pooler.log()
    );
}
