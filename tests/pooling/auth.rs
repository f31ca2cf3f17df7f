//! Client authentication (md5, SCRAM, plain, trust) and server login (md5, SCRAM with a
//! password, SCRAM pass-through), with PgBouncer's error texts.

use crate::common::{Pg, Pooler};
use crate::{assert_pooler_error, db_error};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn md5_auth_and_wrong_passwords() {
    let pg = Pg::start();
    let pooler = Pooler::start_default(&pg);
    for (user, pw) in [
        ("olly", "olly_pw"),
        ("md5user", "md5_pw"),
        ("scramuser", "scram_pw"),
    ] {
        let c = pooler.connect(user, pw, "testdb").await;
        assert!(c.simple_query("SELECT 1").await.is_ok(), "{user}");
    }
    let e = pooler
        .try_connect("olly", "wrong", "testdb")
        .await
        .expect_err("wrong password refused");
    assert_pooler_error(&e, "password authentication failed");
    // An unknown user looks exactly like a wrong password.
    let e = pooler
        .try_connect("nobody", "x", "testdb")
        .await
        .expect_err("unknown user refused");
    assert_pooler_error(&e, "password authentication failed");
    let e = pooler
        .try_connect("olly", "olly_pw", "nope")
        .await
        .expect_err("unknown db refused");
    assert_pooler_error(&e, "no such database: nope");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_clients_and_scram_pass_through() {
    let pg = Pg::start();
    let secret = pg.scram_secret("scramuser");
    let pooler = Pooler::start(&pg, "", "auth_type = scram-sha-256", "");
    // Plain-text userlist entries are usable for SCRAM clients too.
    let c = pooler.connect("olly", "olly_pw", "testdb").await;
    assert!(c.simple_query("SELECT 1").await.is_ok());
    let e = pooler
        .try_connect("olly", "bad", "testdb")
        .await
        .err()
        .unwrap();
    assert_pooler_error(&e, "SASL authentication failed");
    drop(pooler);

    // The userlist holds only the SCRAM secret copied from pg_authid, so the pooler can log in to
    // the server only with the keys the client's proof reveals (SCRAM pass-through).
    let ul = format!("\"scramuser\" \"{secret}\"");
    let pooler = Pooler::start(&pg, "", "auth_type = md5", &ul);
    // md5 auth_type with a SCRAM-stored user falls back to SCRAM; the server login then uses
    // SCRAM pass-through with the recovered ClientKey.
    let c = pooler.connect("scramuser", "scram_pw", "testdb").await;
    let r = c.simple_query("SELECT current_user").await.unwrap();
    assert!(
        matches!(&r[1], tokio_postgres::SimpleQueryMessage::Row(row) if row.get(0) == Some("scramuser"))
    );
    let e = pooler
        .try_connect("scramuser", "nope", "testdb")
        .await
        .err()
        .unwrap();
    assert_pooler_error(&e, "SASL authentication failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_login_errors_keep_the_server_sqlstate() {
    let pg = Pg::start();
    // The userlist says one password, the server another: the client authenticates to the pooler
    // fine, then the server refuses the pooler.
    let pooler = Pooler::start(
        &pg,
        "",
        "server_login_retry = 1",
        "\"md5user\" \"not_the_server_pw\"",
    );
    let e = pooler
        .try_connect("md5user", "not_the_server_pw", "testdb")
        .await
        .expect_err("server refuses");
    let (code, msg) = db_error(&e);
    assert_eq!(code, "28P01", "{e:?}");
    assert!(msg.contains("password authentication failed"), "{msg}");
    // A database that does not exist on the server: 3D000 from the server.
    let pooler2 = Pooler::start(
        &pg,
        &format!("ghost = host=127.0.0.1 port={} dbname=ghost", pg.port),
        "",
        "",
    );
    let e = pooler2
        .try_connect("olly", "olly_pw", "ghost")
        .await
        .err()
        .unwrap();
    assert_eq!(db_error(&e).0, "3D000", "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_and_trust_auth_types() {
    let pg = Pg::start();
    let pooler = Pooler::start(&pg, "", "auth_type = plain", "");
    assert!(pooler
        .try_connect("olly", "olly_pw", "testdb")
        .await
        .is_ok());
    let e = pooler
        .try_connect("olly", "x", "testdb")
        .await
        .err()
        .unwrap();
    assert_pooler_error(&e, "password authentication failed");
    drop(pooler);
    // `onlysettings` has pool settings in [users] but no auth_file entry.
    // `forced` logs in to the server as olly whoever the client is.
    let pooler = Pooler::start(
        &pg,
        &format!(
            "forced = host=127.0.0.1 port={} dbname=testdb user=olly password=olly_pw",
            pg.port
        ),
        "auth_type = trust\n[users]\nonlysettings = pool_mode=session",
        "",
    );
    assert!(pooler
        .try_connect("olly", "anything", "testdb")
        .await
        .is_ok());
    let e = pooler
        .try_connect("stranger", "", "testdb")
        .await
        .err()
        .unwrap();
    assert_pooler_error(&e, "\"trust\" authentication failed");
    // A [users] name is a known user (PgBouncer adds it with an empty password, reference §5).
    assert!(pooler
        .try_connect("onlysettings", "", "forced")
        .await
        .is_ok());
}
