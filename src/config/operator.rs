//! Operator image mode: the `pgbouncer.ini` and `userlist.txt` that the Zalando postgres-operator's
//! own pooler image renders from its container environment (`pooler/pgbouncer.ini.tmpl` with
//! `envsubst`), built here from the same variables so `spec.connectionPooler.dockerImage` can point
//! at this image unchanged.
//!
//! Owns the variable names, their defaults and the rendered text. It does no I/O except through the
//! `env` lookup it is given; `main` writes the files and then loads them like any other config, so
//! RELOAD and `--check` behave the same in both modes. Never puts a password in a message.

use std::fmt::Write as _;
use std::path::Path;

/// Where the operator mounts the pooler's userlist (secret `<cluster>-pooler-u`, operator ≥ 2.0).
pub const OPERATOR_USERLIST: &str = "/etc/pgbouncer/userlist.txt";

/// The HTTP port for `/metrics`, `/livez`, `/readyz` in operator mode (the operator's pod template
/// does not probe it; Prometheus may scrape it).
pub const OPERATOR_HTTP_PORT: u16 = 9127;

/// What `render` needs to know about the files around it.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// The `pgbouncer.ini` text.
    pub ini: String,
    /// The `userlist.txt` text to write, when the operator did not mount one (`None`: use theirs).
    pub userlist: Option<String>,
}

/// A missing or malformed variable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("operator mode: {name}: {message}")]
pub struct EnvError {
    /// The variable.
    pub name: &'static str,
    /// What was expected.
    pub message: String,
}

/// True when the environment looks like the operator's pooler container (`PGHOST` and `PGUSER`
/// set), which is what starts operator mode when no config file is given.
pub fn detected(env: &dyn Fn(&str) -> Option<String>) -> bool {
    env("PGHOST").is_some() && env("PGUSER").is_some()
}

/// Renders the operator's template. `userlist_path` is where the userlist will be (the mounted
/// one when `mounted_userlist` is true, else one written from `PGUSER`/`PGPASSWORD`).
///
/// Defaults for unset `CONNECTION_POOLER_*` variables are what the operator computes with its own
/// defaults (`connection_pooler_max_db_connections: 60` over 2 instances): max_db_connections 30,
/// default_pool_size 15, reserve_pool_size 7, max_client_conn 10000, transaction mode, port 5432.
pub fn render(
    env: &dyn Fn(&str) -> Option<String>,
    userlist_path: &Path,
    mounted_userlist: bool,
) -> Result<Rendered, EnvError> {
    // Every value lands on one line of the ini or the userlist: a line break (or a NUL) in one
    // would add lines of its own choosing.
    let one_line = |name: &'static str, v: String| -> Result<String, EnvError> {
        if v.contains(['\n', '\r', '\0']) {
            return Err(EnvError {
                name,
                message: "must not contain line breaks".into(),
            });
        }
        Ok(v)
    };
    let opt = |name: &'static str| -> Result<Option<String>, EnvError> {
        env(name)
            .filter(|v| !v.is_empty())
            .map(|v| one_line(name, v))
            .transpose()
    };
    let var = |name: &'static str, default: Option<&str>| -> Result<String, EnvError> {
        match opt(name)? {
            Some(v) => Ok(v),
            None => default.map(str::to_string).ok_or(EnvError {
                name,
                message: "must be set".into(),
            }),
        }
    };
    let number = |name: &'static str, default: &str| -> Result<String, EnvError> {
        let v = var(name, Some(default))?;
        match v.parse::<u32>() {
            // Written back in plain decimal: the ini reads a leading 0 as octal, as PgBouncer
            // does, so `010` must not reach it as the operator's ten (found by the
            // operator_env fuzz target). A `+` sign goes the same way.
            Ok(n) => Ok(n.to_string()),
            Err(_) => Err(EnvError {
                name,
                message: format!("expected a non-negative integer, got {v:?}"),
            }),
        }
    };
    let host = var("PGHOST", None)?;
    let user = var("PGUSER", None)?;
    let port = number("PGPORT", "5432")?;
    let schema = var("PGSCHEMA", Some("pooler"))?;
    let mode = var("CONNECTION_POOLER_MODE", Some("transaction"))?;
    let listen_port = number("CONNECTION_POOLER_PORT", "5432")?;
    let default_size = number("CONNECTION_POOLER_DEFAULT_SIZE", "15")?;
    let reserve_size = number("CONNECTION_POOLER_RESERVE_SIZE", "7")?;
    let max_client_conn = number("CONNECTION_POOLER_MAX_CLIENT_CONN", "10000")?;
    let max_db_conn = number("CONNECTION_POOLER_MAX_DB_CONN", "30")?;
    let stats_users = opt("INFRASTRUCTURE_ROLES")?.unwrap_or_default();
    let client_tls = (
        opt("CONNECTION_POOLER_CLIENT_TLS_CRT")?,
        opt("CONNECTION_POOLER_CLIENT_TLS_KEY")?,
        opt("CONNECTION_POOLER_CLIENT_CA_FILE")?,
    );
    let include = opt("OLLYSCALE_INCLUDE")?;
    for (name, value) in [("PGHOST", &host), ("PGUSER", &user), ("PGSCHEMA", &schema)] {
        if value.contains(['\'', '"', ' ', '\n', '\r', '\0']) {
            return Err(EnvError {
                name,
                message: "must not contain quotes, spaces or line breaks".into(),
            });
        }
    }
    let userlist = if mounted_userlist {
        None
    } else {
        let password = var("PGPASSWORD", None)?;
        Some(format!(
            "\"{}\" \"{}\"\n",
            user.replace('"', "\"\""),
            password.replace('"', "\"\"")
        ))
    };

    // The template's lines in its order; what differs is said next to it.
    let mut ini = String::new();
    let w = &mut ini;
    let _ = writeln!(
        w,
        "; rendered by ollyscale-pooler from the Zalando operator's pooler environment"
    );
    let _ = writeln!(w, "[databases]");
    let _ = writeln!(w, "* = host={host} port={port} auth_user={user}");
    let _ = writeln!(w, "postgres = host={host} port={port} auth_user={user}");
    let _ = writeln!(w, "\n[pgbouncer]");
    let _ = writeln!(w, "pool_mode = {mode}");
    let _ = writeln!(w, "listen_port = {listen_port}");
    let _ = writeln!(w, "listen_addr = *");
    let _ = writeln!(w, "admin_users = {user}");
    let _ = writeln!(w, "stats_users = {stats_users}");
    let _ = writeln!(w, "auth_dbname = postgres");
    let _ = writeln!(w, "auth_file = {}", userlist_path.display());
    let _ = writeln!(w, "auth_query = SELECT * FROM {schema}.user_lookup($1)");
    let _ = writeln!(w, "auth_type = md5");
    // No logfile/pidfile: the log goes to stderr (kubectl logs) and the root filesystem may be
    // read-only; the operator's image writes /var/log/pgbouncer and /var/run/pgbouncer.
    let _ = writeln!(w, "server_tls_sslmode = require");
    let _ = writeln!(w, "server_tls_protocols = secure");
    // The operator's image makes a self-signed certificate when none is mounted; client TLS is set
    // here only when the operator passes one (CONNECTION_POOLER_CLIENT_TLS_CRT/_KEY).
    if let (Some(crt), Some(key), ca) = client_tls {
        let _ = writeln!(w, "client_tls_sslmode = require");
        let _ = writeln!(w, "client_tls_key_file = {key}");
        let _ = writeln!(w, "client_tls_cert_file = {crt}");
        if let Some(ca) = ca {
            let _ = writeln!(w, "client_tls_ca_file = {ca}");
        }
    }
    let _ = writeln!(w, "log_connections = 1");
    let _ = writeln!(w, "log_disconnections = 1");
    let _ = writeln!(w, "verbose = 1");
    let _ = writeln!(w, "max_prepared_statements = 200");
    let _ = writeln!(w, "default_pool_size = {default_size}");
    let _ = writeln!(w, "reserve_pool_size = {reserve_size}");
    let _ = writeln!(w, "max_client_conn = {max_client_conn}");
    let _ = writeln!(w, "max_db_connections = {max_db_conn}");
    let _ = writeln!(w, "idle_transaction_timeout = 600");
    let _ = writeln!(w, "server_login_retry = 5");
    let _ = writeln!(w, "ignore_startup_parameters = extra_float_digits,options");
    // Ours: a pod's SIGTERM closes each client after its transaction, within the operator's
    // grace period, instead of waiting for every client to leave (PgBouncer's SIGTERM).
    let _ = writeln!(w, "shutdown_drain = transaction");
    let _ = writeln!(w, "shutdown_timeout = 30");
    // Ours: probes and metrics.
    let _ = writeln!(w, "http_listen_addr = *");
    let _ = writeln!(w, "http_listen_port = {OPERATOR_HTTP_PORT}");
    // Ours: a fragment mounted beside (e.g. [peers], peer_id, or listen_addr for tests); its keys
    // win because they come last.
    if let Some(extra) = include {
        let _ = writeln!(w, "%include {extra}");
    }
    Ok(Rendered { ini, userlist })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn renders_the_operator_template_and_parses() {
        let env = env_of(&[
            ("PGHOST", "acid-db"),
            ("PGPORT", "5432"),
            ("PGUSER", "pooler"),
            ("PGPASSWORD", "pw\"x"),
            ("PGSCHEMA", "pooler"),
            ("CONNECTION_POOLER_PORT", "5432"),
            ("CONNECTION_POOLER_MODE", "transaction"),
            ("CONNECTION_POOLER_DEFAULT_SIZE", "20"),
            ("CONNECTION_POOLER_MIN_SIZE", "10"),
            ("CONNECTION_POOLER_RESERVE_SIZE", "10"),
            ("CONNECTION_POOLER_MAX_CLIENT_CONN", "10000"),
            ("CONNECTION_POOLER_MAX_DB_CONN", "40"),
        ]);
        assert!(detected(&env));
        let r = render(&env, Path::new("/run/u.txt"), false).expect("renders");
        assert_eq!(r.userlist.as_deref(), Some("\"pooler\" \"pw\"\"x\"\n"));
        let cfg = crate::config::parse_ini_str(&r.ini, Path::new("op.ini")).expect("parses");
        assert_eq!(cfg.general.default_pool_size, 20);
        assert_eq!(cfg.general.reserve_pool_size, 10);
        assert_eq!(cfg.general.max_db_connections, 40);
        assert_eq!(cfg.general.max_client_conn, 10000);
        assert_eq!(cfg.general.listen_port, 5432);
        assert_eq!(cfg.general.admin_users, vec!["pooler".to_string()]);
        // The pod's SIGTERM drains as before the default became PgBouncer's wait for clients.
        assert_eq!(
            cfg.general.shutdown_drain,
            crate::config::ShutdownDrain::Transaction
        );
        assert_eq!(
            cfg.general.shutdown_timeout,
            std::time::Duration::from_secs(30)
        );
        let fallback = cfg.fallback_database.expect("* entry");
        assert_eq!(fallback.port, 5432);
        for key in ["auth_query", "auth_dbname", "server_tls_sslmode"] {
            assert!(
                cfg.unimplemented_keys.iter().any(|k| k == key)
                    || cfg.raw_general.iter().any(|(k, _)| k == key),
                "{key}"
            );
        }
        assert!(r
            .ini
            .contains("auth_query = SELECT * FROM pooler.user_lookup($1)"));
    }

    #[test]
    fn missing_and_bad_variables_are_named() {
        let e = render(&env_of(&[("PGUSER", "p")]), Path::new("/u"), true).unwrap_err();
        assert_eq!(e.name, "PGHOST");
        let e = render(
            &env_of(&[
                ("PGHOST", "h"),
                ("PGUSER", "p"),
                ("CONNECTION_POOLER_DEFAULT_SIZE", "x"),
            ]),
            Path::new("/u"),
            true,
        )
        .unwrap_err();
        assert_eq!(e.name, "CONNECTION_POOLER_DEFAULT_SIZE");
        let e = render(
            &env_of(&[("PGHOST", "h"), ("PGUSER", "p")]),
            Path::new("/u"),
            false,
        )
        .unwrap_err();
        assert_eq!(e.name, "PGPASSWORD");
        // A line break in any value would add lines to the ini or the userlist (found by the
        // operator_env fuzz target).
        for name in ["OLLYSCALE_INCLUDE", "CONNECTION_POOLER_MODE", "PGPASSWORD"] {
            let e = render(
                &env_of(&[
                    ("PGHOST", "h"),
                    ("PGUSER", "p"),
                    (name, "x\nauth_type = trust"),
                ]),
                Path::new("/u"),
                false,
            )
            .unwrap_err();
            assert_eq!(e.name, name);
        }
        let ok = render(
            &env_of(&[("PGHOST", "h"), ("PGUSER", "p")]),
            Path::new("/u"),
            true,
        )
        .expect("defaults");
        assert!(ok.ini.contains("default_pool_size = 15\n"), "{}", ok.ini);
        let padded = render(
            &env_of(&[
                ("PGHOST", "h"),
                ("PGUSER", "p"),
                ("CONNECTION_POOLER_DEFAULT_SIZE", "010"),
            ]),
            Path::new("/u"),
            true,
        )
        .expect("a zero-padded number");
        assert!(
            padded.ini.contains("default_pool_size = 10\n"),
            "{}",
            padded.ini
        );
        assert!(ok.userlist.is_none());
    }
}
