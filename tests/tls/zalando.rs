//! The Zalando operator's pooler configuration (`pooler/pgbouncer.ini.tmpl`, verbatim below), after
//! its entrypoint's envsubst, with client and server TLS `require`, auth_query through
//! `pooler.user_lookup`, and a self-signed certificate as the entrypoint makes: psql with
//! sslmode=require is served. The test moves only what must stay inside the test: the absolute
//! directories go under the test's temp dir and `listen_addr = *` becomes 127.0.0.1.

use super::auth_query::{create_pooler_role, install_user_lookup};
use super::common::{free_port, Pooler};
use super::{conninfo, pg_with_ssl, run_psql, Certs};

const TEMPLATE: &str = r#"# vim: set ft=dosini:

[databases]
* = host=$PGHOST port=$PGPORT auth_user=$PGUSER
postgres = host=$PGHOST port=$PGPORT auth_user=$PGUSER

[pgbouncer]
pool_mode = $CONNECTION_POOLER_MODE
listen_port = $CONNECTION_POOLER_PORT
listen_addr = *
admin_users = $PGUSER
stats_users = $INFRASTRUCTURE_ROLES
auth_dbname = postgres
auth_file = /etc/pgbouncer/userlist.txt
auth_query = SELECT * FROM $PGSCHEMA.user_lookup($1)
auth_type = md5
logfile = /var/log/pgbouncer/pgbouncer.log
pidfile = /var/run/pgbouncer/pgbouncer.pid

server_tls_sslmode = require
server_tls_ca_file = /etc/ssl/certs/pgbouncer.crt
server_tls_protocols = secure
client_tls_sslmode = require
client_tls_key_file = /etc/ssl/certs/pgbouncer.key
client_tls_cert_file = /etc/ssl/certs/pgbouncer.crt

log_connections = 1
log_disconnections = 1
verbose = 1

# Number of prepared statements to cache on a server connection (zero value
# disables support of prepared statements).
max_prepared_statements = 200

# How many server connections to allow per user/database pair.
default_pool_size = $CONNECTION_POOLER_DEFAULT_SIZE

# Add more server connections to pool if below this number. Improves behavior
# when usual load comes suddenly back after period of total inactivity.
#
# NOTE: This value is per pool, i.e. a pair of (db, user), not a global one.
# Which means on the higher level it has to be calculated from the max allowed
# database connections and number of databases and users. If not taken into
# account, then for too many users or databases PgBouncer will go crazy
# opening/evicting connections. For now disable it.
#
# min_pool_size = $CONNECTION_POOLER_MIN_SIZE

# How many additional connections to allow to a pool
reserve_pool_size = $CONNECTION_POOLER_RESERVE_SIZE

# Maximum number of client connections allowed.
max_client_conn = $CONNECTION_POOLER_MAX_CLIENT_CONN

# Do not allow more than this many connections per database (regardless of
# pool, i.e. user)
max_db_connections = $CONNECTION_POOLER_MAX_DB_CONN

# If a client has been in "idle in transaction" state longer, it will be
# disconnected. [seconds]
idle_transaction_timeout = 600

# If login failed, because of failure from connect() or authentication that
# pooler waits this much before retrying to connect. Default is 15. [seconds]
server_login_retry = 5

# To ignore extra parameter in startup packet. By default only 'database' and
# 'user' are allowed, all others raise error.  This is needed to tolerate
# overenthusiastic JDBC wanting to unconditionally set 'extra_float_digits=2'
# in startup packet.
ignore_startup_parameters = extra_float_digits,options
"#;

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
