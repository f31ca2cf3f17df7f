//! Unit tests of the config model and its parsers (`ini.rs`, `keys.rs`, `userlist.rs`).
//!
//! Pure: the only I/O is the `%include` tests, which write into a fresh directory under the
//! system temp dir and remove it afterwards.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

mod clusters;
mod databases;
mod include;
mod report;
mod userlist;

fn parse(text: &str) -> Config {
    match parse_ini_str(text, Path::new("test.ini")) {
        Ok(cfg) => cfg,
        Err(e) => panic!("expected a valid config, got {e}"),
    }
}

fn errors(text: &str) -> Vec<ConfigIssue> {
    match parse_ini_str(text, Path::new("test.ini")) {
        Ok(_) => panic!("expected errors for:\n{text}"),
        Err(e) => e.0,
    }
}

/// The single error of `text`.
fn one_error(text: &str) -> ConfigIssue {
    let mut errs = errors(text);
    assert_eq!(errs.len(), 1, "{errs:#?}");
    errs.remove(0)
}

fn general(lines: &str) -> General {
    parse(&format!("[pgbouncer]\n{lines}\n")).general
}

fn general_error(line: &str) -> String {
    one_error(&format!("[pgbouncer]\n{line}\n")).message
}

// ---------------------------------------------------------------- defaults and the key table

#[test]
fn empty_file_gives_defaults() {
    for text in ["", "\n\n", "; only a comment\n# another\n", "[pgbouncer]\n"] {
        let cfg = parse(text);
        assert_eq!(cfg.general, General::default());
        assert!(cfg.databases.is_empty() && cfg.users.is_empty());
        assert!(cfg.fallback_database.is_none());
        assert!(cfg.unimplemented_keys.is_empty() && cfg.raw_general.is_empty());
        assert_eq!(cfg.path, PathBuf::from("test.ini"));
    }
}

#[test]
fn key_table_is_sorted_and_unique() {
    for pair in GENERAL_KEYS.windows(2) {
        assert!(
            pair[0].name < pair[1].name,
            "{} / {}",
            pair[0].name,
            pair[1].name
        );
    }
    for k in GENERAL_KEYS {
        assert_eq!(keys::find_key(k.name), Some(k));
        assert_eq!(k.name, k.name.to_ascii_lowercase());
    }
    assert_eq!(keys::find_key("no_such_key"), None);
}

#[test]
fn key_table_reload_flags_match_pgbouncer() {
    let mut no_reload: Vec<&str> = GENERAL_KEYS
        .iter()
        .filter(|k| !k.reloadable)
        .map(|k| k.name)
        .collect();
    no_reload.sort_unstable();
    let expected = [
        "disable_pqexec",
        "http_listen_addr",
        "http_listen_port",
        "job_name",
        "listen_addr",
        "listen_backlog",
        "listen_port",
        "pidfile",
        "pkt_buf",
        "resolv_conf",
        "service_name",
        "so_reuseport",
        "track_extra_parameters",
        "unix_socket_dir",
        "unix_socket_group",
        "unix_socket_mode",
        "user",
    ];
    assert_eq!(no_reload, expected);
}

#[test]
fn key_table_defaults_as_show_config_prints_them() {
    let default_of = |name: &str| keys::find_key(name).map(|k| k.default);
    assert_eq!(default_of("server_idle_timeout"), Some("600"));
    assert_eq!(default_of("server_reset_query"), Some("DISCARD ALL"));
    assert_eq!(default_of("auth_type"), Some("md5"));
    assert_eq!(default_of("pool_mode"), Some("session"));
    assert_eq!(default_of("server_tls_sslmode"), Some("prefer"));
    assert_eq!(default_of("max_prepared_statements"), Some("200"));
    assert_eq!(default_of("auth_file"), Some(""));
    assert_eq!(default_of("unix_socket_mode"), Some("0777"));
}

/// Each key written with its table default parses, and gives `General::default()` (implemented)
/// or an unimplemented warning naming it (not implemented).
#[test]
fn every_key_accepts_its_default() {
    for k in GENERAL_KEYS {
        let cfg = parse(&format!("[pgbouncer]\n{} = {}\n", k.name, k.default));
        assert_eq!(
            cfg.raw_general,
            vec![(k.name.to_string(), k.default.to_string())]
        );
        if k.implemented {
            assert_eq!(cfg.general, General::default(), "key {}", k.name);
            if keys::NO_EFFECT_YET.contains(&k.name) {
                assert_eq!(cfg.unimplemented_keys, vec![k.name.to_string()]);
            } else {
                assert!(cfg.unimplemented_keys.is_empty(), "key {}", k.name);
            }
        } else {
            assert_eq!(cfg.unimplemented_keys, vec![k.name.to_string()]);
        }
    }
}

/// A non-default value for each implemented key changes `General`: every key is wired to a field.
#[test]
fn every_implemented_key_sets_its_field() {
    let sample = |name: &str| match name {
        "listen_addr" | "admin_users" | "stats_users" | "ignore_startup_parameters" => "a,b",
        "track_extra_parameters" => "search_path",
        "unix_socket_dir" | "auth_file" | "logfile" | "pidfile" => "/x",
        "unix_socket_mode" => "0700",
        "auth_type" => "scram-sha-256",
        "client_tls_sslmode" | "server_tls_sslmode" => "verify-full",
        "pool_mode" => "transaction",
        "replica_fallback" => "none",
        "shutdown_drain" => "transaction",
        "server_reset_query" | "server_check_query" => "SELECT 1",
        "user" => "postgres",
        "max_packet_size" => "4096",
        "server_round_robin"
        | "server_reset_query_always"
        | "application_name_add_host"
        | "server_fast_close"
        | "so_reuseport"
        | "syslog" => "1",
        "syslog_facility" => "local3",
        "client_tls_ecdhcurve" => "secp384r1",
        "tcp_keepalive" | "log_connections" | "log_disconnections" | "log_pooler_errors"
        | "log_stats" => "0",
        _ => "7",
    };
    // conffile sets Config::path, not a General field (see conffile_names_the_file_reload_reads).
    let implemented: Vec<_> = GENERAL_KEYS
        .iter()
        .filter(|k| k.implemented && k.name != "conffile")
        .collect();
    assert_eq!(
        implemented.len(),
        102,
        "one implemented key per General field"
    );
    for k in implemented {
        let g = general(&format!("{} = {}", k.name, sample(k.name)));
        assert_ne!(
            g,
            General::default(),
            "key {} did not change General",
            k.name
        );
    }
}

/// `conffile` is PgBouncer's cf_config_file: a line in the file, or SET, names the file the next
/// RELOAD reads (SHOW CONFIG prints `Config::path`).
#[test]
fn conffile_names_the_file_reload_reads() {
    let cfg = parse("[pgbouncer]\nconffile = /etc/other.ini\n");
    assert_eq!(cfg.path, std::path::PathBuf::from("/etc/other.ini"));
    assert!(cfg.unimplemented_keys.is_empty());
    let mut cfg = parse("[pgbouncer]\n");
    crate::config::ini::set_general(&mut cfg, "conffile", "/tmp/next.ini").unwrap();
    assert_eq!(cfg.path, std::path::PathBuf::from("/tmp/next.ini"));
    assert_eq!(cfg.general, General::default());
}

// ---------------------------------------------------------------- value types

#[test]
fn durations_are_seconds_with_fractions() {
    let g = general("query_timeout = 0.5\nserver_lifetime = 1800\nreserve_pool_timeout = 0");
    assert_eq!(g.query_timeout, Duration::from_millis(500));
    assert_eq!(g.server_lifetime, Duration::from_secs(1800));
    assert_eq!(g.reserve_pool_timeout, Duration::ZERO);
    assert_eq!(
        general_error("query_timeout = abc"),
        "expected a number of seconds, got \"abc\""
    );
    for bad in ["-1", "5s", "NaN", "inf", "1e400", ""] {
        let line = format!("server_idle_timeout = {bad}");
        assert!(errors(&format!("[pgbouncer]\n{line}")).len() == 1, "{bad}");
    }
}

#[test]
fn booleans() {
    for (text, want) in [
        ("1", true),
        ("yes", true),
        ("ON", true),
        ("true", true),
        ("2", true),
        ("0", false),
        ("no", false),
        ("off", false),
        ("False", false),
    ] {
        assert_eq!(
            general(&format!("server_round_robin = {text}")).server_round_robin,
            want
        );
    }
    assert!(general_error("tcp_keepalive = maybe").starts_with("expected a boolean"));
}

#[test]
fn integers_follow_c_strtol() {
    let g = general("max_client_conn = 1000\ndefault_pool_size = 0x10\nmin_pool_size = 010");
    assert_eq!(
        (g.max_client_conn, g.default_pool_size, g.min_pool_size),
        (1000, 16, 8)
    );
    assert_eq!(general("tcp_user_timeout = 30000").tcp_user_timeout, 30000);
    for bad in ["-1", "ten", "12abc", "08", "4294967296", "1.5"] {
        assert_eq!(
            errors(&format!("[pgbouncer]\nmax_client_conn = {bad}")).len(),
            1,
            "{bad}"
        );
    }
    assert_eq!(
        general_error("default_pool_size = -5"),
        "expected a non-negative integer, got \"-5\""
    );
}

#[test]
fn ports_and_packet_size_are_range_checked() {
    assert_eq!(general("listen_port = 5432").listen_port, 5432);
    assert!(general_error("listen_port = 0").contains("port number"));
    assert!(general_error("listen_port = 70000").contains("too large"));
    assert_eq!(
        general("max_packet_size = 1048576").max_packet_size,
        1048576
    );
    assert!(general_error("max_packet_size = 15").contains("at least"));
}

#[test]
fn lists_are_trimmed_and_split() {
    assert_eq!(general("listen_addr = *").listen_addr, vec!["*"]);
    let g = general("listen_addr = 127.0.0.1, ::1 ,,\nadmin_users = admin , ops,");
    assert_eq!(g.listen_addr, vec!["127.0.0.1", "::1"]);
    assert_eq!(g.admin_users, vec!["admin", "ops"]);
    let g = general("ignore_startup_parameters = Extra_Float_Digits, OPTIONS");
    assert_eq!(
        g.ignore_startup_parameters,
        vec!["extra_float_digits", "options"]
    );
    let g = general("track_extra_parameters = IntervalStyle, search_path");
    assert_eq!(
        g.track_extra_parameters,
        vec!["IntervalStyle", "search_path"]
    );
    assert!(general("stats_users =").stats_users.is_empty());
}

#[test]
fn unix_socket_mode_is_octal() {
    for (text, want) in [("0777", 0o777), ("700", 0o700), ("0o600", 0o600), ("0", 0)] {
        assert_eq!(
            general(&format!("unix_socket_mode = {text}")).unix_socket_mode,
            want
        );
    }
    assert!(general_error("unix_socket_mode = 0999").contains("octal"));
    assert!(general_error("unix_socket_mode = 77777").contains("larger"));
}

#[test]
fn auth_types() {
    for (text, want) in [
        ("any", AuthType::Any),
        ("trust", AuthType::Trust),
        ("plain", AuthType::Plain),
        ("md5", AuthType::Md5),
        ("SCRAM-SHA-256", AuthType::ScramSha256),
        ("peer", AuthType::Peer),
        ("cert", AuthType::Cert),
        ("hba", AuthType::Hba),
        ("ldap", AuthType::Ldap),
    ] {
        assert_eq!(general(&format!("auth_type = {text}")).auth_type, want);
    }
    let msg = general_error("auth_type = pam");
    assert!(msg.starts_with("auth_type pam is not supported"), "{msg}");
    assert!(general_error("auth_type = password").starts_with("expected one of"));
}

#[test]
fn pool_modes_and_strings() {
    let g = general("pool_mode = Transaction\nserver_reset_query =\nserver_check_query = <empty>");
    assert_eq!(g.pool_mode, PoolMode::Transaction);
    assert_eq!(g.server_reset_query, "");
    // `<empty>` (the default) sends an empty query; only an empty value turns the check off.
    assert_eq!(g.server_check_query, "<empty>");
    assert_eq!(General::default().server_check_query, "<empty>");
    assert_eq!(general("server_check_query =").server_check_query, "");
    assert_eq!(
        general("server_check_query = select 1").server_check_query,
        "select 1"
    );
    assert!(general_error("pool_mode = sometimes").contains("session, transaction or statement"));
    let g = general("auth_file = userlist.txt\nlogfile =\nuser = postgres");
    assert_eq!(g.auth_file, Some(PathBuf::from("userlist.txt")));
    assert_eq!((g.logfile, g.user), (None, Some("postgres".to_string())));
}

#[test]
fn raw_general_keeps_values_as_written() {
    let cfg = parse("[pgbouncer]\nLISTEN_PORT = 7000\nquery_timeout = 0.5\nlisten_port = 7001\n");
    assert_eq!(
        cfg.raw_general,
        vec![
            ("listen_port".to_string(), "7001".to_string()),
            ("query_timeout".to_string(), "0.5".to_string()),
        ]
    );
    assert_eq!(cfg.general.listen_port, 7001);
}

// ---------------------------------------------------------------- file syntax

/// The Zalando postgres-operator pooler template, with its variables filled in (minus the
/// downstream-only `stats_users_prefix`, which vanilla PgBouncer rejects too).
const ZALANDO_INI: &str = r#"# vim: set ft=dosini:

[databases]
* = host=acid-minimal-cluster port=5432 auth_user=pooler
postgres = host=acid-minimal-cluster port=5432 auth_user=pooler

[pgbouncer]
pool_mode = transaction
listen_port = 5432
listen_addr = *
auth_type = md5
auth_file = /etc/pgbouncer/auth_file.txt
auth_dbname = postgres
admin_users = pooler
auth_query = SELECT * FROM pooler.user_lookup($1)
logfile = /var/log/pgbouncer/pgbouncer.log
pidfile = /var/run/pgbouncer/pgbouncer.pid

server_tls_sslmode = require
server_tls_ca_file = /etc/ssl/certs/pgbouncer.crt
server_tls_protocols = secure
client_tls_sslmode = require
client_tls_key_file = /etc/ssl/certs/pgbouncer.key
client_tls_cert_file = /etc/ssl/certs/pgbouncer.crt

log_connections = 0
log_disconnections = 0

# How many server connections to allow per user/database pair.
default_pool_size = 10
# min_pool_size = 5
reserve_pool_size = 3
max_client_conn = 10000
max_db_connections = 60
idle_transaction_timeout = 600
server_login_retry = 5
ignore_startup_parameters = extra_float_digits,options
"#;

#[test]
fn zalando_operator_config() {
    let cfg = parse(ZALANDO_INI);
    let g = &cfg.general;
    assert_eq!(g.pool_mode, PoolMode::Transaction);
    assert_eq!(
        (g.listen_addr.clone(), g.listen_port),
        (vec!["*".to_string()], 5432)
    );
    assert_eq!(g.auth_type, AuthType::Md5);
    assert_eq!(
        g.auth_file,
        Some(PathBuf::from("/etc/pgbouncer/auth_file.txt"))
    );
    assert_eq!(g.admin_users, vec!["pooler"]);
    assert!(!g.log_connections && !g.log_disconnections);
    assert_eq!((g.default_pool_size, g.reserve_pool_size), (10, 3));
    assert_eq!((g.max_client_conn, g.max_db_connections), (10000, 60));
    assert_eq!(g.idle_transaction_timeout, Duration::from_secs(600));
    assert_eq!(g.server_login_retry, Duration::from_secs(5));
    assert_eq!(
        g.ignore_startup_parameters,
        vec!["extra_float_digits", "options"]
    );
    assert_eq!(g.min_pool_size, 0);

    let fallback = cfg.fallback_database.as_ref().expect("* entry");
    assert_eq!(
        fallback.host,
        Some(ServerHost::Tcp("acid-minimal-cluster".into()))
    );
    assert_eq!(cfg.databases["postgres"].port, 5432);
    // TLS and auth_query are implemented: nothing of theirs is reported.
    assert!(
        cfg.unimplemented_keys.is_empty(),
        "{:?}",
        cfg.unimplemented_keys
    );
    let sec = &g.security;
    assert_eq!(sec.server_tls.sslmode, SslMode::Require);
    assert_eq!(sec.client_tls.sslmode, SslMode::Require);
    assert_eq!(sec.auth_dbname.as_deref(), Some("postgres"));
    assert_eq!(sec.auth_query, "SELECT * FROM pooler.user_lookup($1)");
    assert_eq!(
        cfg.databases["postgres"].auth_user.as_deref(),
        Some("pooler")
    );
    assert_eq!(cfg.raw_general.len(), 25);
}

#[test]
fn sections_and_keys_are_case_insensitive_and_crlf_is_fine() {
    let cfg = parse("[PgBouncer]\r\n  Listen_Port = 7432 \r\n[DATABASES]\r\nmain = port=6000\r\n");
    assert_eq!(cfg.general.listen_port, 7432);
    assert_eq!(cfg.databases["main"].port, 6000);
}

#[test]
fn several_errors_are_reported_at_once_with_line_numbers() {
    let text = "\
[pgbouncer]
listen_port = 0
; comment
pool_mode = sessions
no_such_setting = 1
query_timeout = abc

[databases]
pgbouncer = host=localhost
app = host=db pool_size=many frobnicate=1
";
    let errs = errors(text);
    let got: Vec<(usize, &str)> = errs.iter().map(|e| (e.line, e.key.as_str())).collect();
    assert_eq!(
        got,
        vec![
            (2, "listen_port"),
            (4, "pool_mode"),
            (5, "no_such_setting"),
            (6, "query_timeout"),
            (9, "pgbouncer"),
            (10, "app"),
            (10, "app"),
        ]
    );
    assert!(errs.iter().all(|e| e.file == "test.ini"));
    assert_eq!(errs[2].message, "unknown setting");
    assert!(errs[4].message.contains("reserved"));
    assert_eq!(
        errs[5].message,
        "pool_size: expected a non-negative integer, got \"many\""
    );
    assert_eq!(
        errs[6].message,
        "unrecognized connection parameter: frobnicate"
    );
    let shown = ConfigErrors(errs).to_string();
    assert!(
        shown.contains("test.ini:5: no_such_setting: unknown setting"),
        "{shown}"
    );
}

#[test]
fn syntax_errors() {
    assert!(one_error("listen_port = 1\n")
        .message
        .contains("outside of any section"));
    assert!(one_error("[nope]\nx = 1\n")
        .message
        .contains("unknown section"));
    assert!(one_error("[pgbouncer\n").message.contains("closing ']'"));
    assert!(one_error("[pgbouncer]\nlisten_port 5432\n")
        .message
        .contains("expected '='"));
    assert!(one_error("[pgbouncer]\n= 5\n")
        .message
        .contains("expected a name"));
    assert!(one_error("[databases]\n\"open = x\n")
        .message
        .contains("unterminated"));
    assert!(one_error("[pgbouncer]\n%include\n")
        .message
        .contains("needs a file name"));
    // A `;` after a value is part of the value, as in PgBouncer.
    assert!(general_error("listen_port = 5432 ; main port").contains("expected"));
}

#[test]
fn peers_and_peer_id() {
    let cfg = parse(
        "[pgbouncer]\npeer_id = 2\n[peers]\n1 = host=/tmp/a\n2 = host=b port=7000 pool_size=3\n",
    );
    assert!(
        cfg.unimplemented_keys.is_empty(),
        "{:?}",
        cfg.unimplemented_keys
    );
    assert_eq!(cfg.general.peer_id, 2);
    let one = &cfg.peers[&1];
    assert_eq!(one.host, ServerHost::Unix("/tmp/a".into()));
    assert_eq!((one.port, one.pool_size), (6432, None));
    let two = &cfg.peers[&2];
    assert_eq!(two.host, ServerHost::Tcp("b".into()));
    assert_eq!((two.port, two.pool_size), (7000, Some(3)));

    let errors = parse_ini_str(
        "[pgbouncer]\npeer_id = 16384\n[peers]\n0 = host=a\nx = host=a\n3 = port=1\n4 = host=a color=red\n",
        Path::new("p.ini"),
    )
    .expect_err("invalid");
    let shown: Vec<String> = errors.0.iter().map(|i| i.to_string()).collect();
    assert_eq!(shown.len(), 5, "{shown:#?}");
    assert!(shown[0].starts_with("p.ini:2: peer_id: "), "{shown:#?}");
    assert!(
        shown[1].starts_with("p.ini:4: 0: peer id must be a number"),
        "{shown:#?}"
    );
    assert!(
        shown[2].starts_with("p.ini:5: x: peer id must be a number"),
        "{shown:#?}"
    );
    assert_eq!(shown[3], "p.ini:6: 3: host: a peer needs host=");
    assert_eq!(
        shown[4],
        "p.ini:7: 4: color: unrecognized peer parameter: color"
    );
}

#[test]
fn set_changes_reloadable_keys_and_keeps_restart_only_ones() {
    let mut cfg = parse("[pgbouncer]\nlisten_port = 7000\n");
    cfg.set_general("transaction_timeout", "2.5").unwrap();
    assert_eq!(cfg.general.transaction_timeout, Duration::from_millis(2500));
    cfg.set_general("max_db_client_connections", "3").unwrap();
    cfg.set_general("query_wait_notify", "0").unwrap();
    cfg.set_general("server_fast_close", "1").unwrap();
    cfg.set_general("syslog_facility", "local0").unwrap();
    assert_eq!(cfg.general.max_db_client_connections, 3);
    assert!(cfg.general.query_wait_notify.is_zero() && cfg.general.server_fast_close);
    assert!(cfg
        .raw_general
        .contains(&("transaction_timeout".to_string(), "2.5".to_string())));
    // PgBouncer's cf_set: a restart-only key is accepted and left as it was, even a bad value.
    cfg.set_general("listen_port", "7001").unwrap();
    cfg.set_general("so_reuseport", "nonsense").unwrap();
    assert_eq!(cfg.general.listen_port, 7000);
    assert!(!cfg.general.so_reuseport);
    assert!(cfg
        .raw_general
        .contains(&("listen_port".to_string(), "7000".to_string())));
    assert!(cfg.set_general("no_such_key", "1").is_err());
    assert!(cfg.set_general("transaction_timeout", "soon").is_err());
    assert!(cfg.set_general("syslog_facility", "kern").is_err());
}

/// SIGTERM waits like PgBouncer's (every client, no limit) unless the file asks for our drain
/// at transaction end; SET changes it like any reloadable key.
#[test]
fn shutdown_drain_defaults_to_pgbouncers_wait_for_clients() {
    let g = general("");
    assert_eq!(g.shutdown_drain, ShutdownDrain::Clients);
    assert_eq!(g.shutdown_timeout, Duration::ZERO);
    let g = general("shutdown_drain = Transaction\nshutdown_timeout = 40");
    assert_eq!(g.shutdown_drain, ShutdownDrain::Transaction);
    assert_eq!(g.shutdown_timeout, Duration::from_secs(40));
    assert_eq!(
        general_error("shutdown_drain = now"),
        "expected clients or transaction, got \"now\""
    );
    let mut cfg = parse("");
    cfg.set_general("shutdown_drain", "transaction").unwrap();
    assert_eq!(cfg.general.shutdown_drain, ShutdownDrain::Transaction);
    assert!(cfg.set_general("shutdown_drain", "later").is_err());
    assert_eq!(cfg.general.shutdown_drain, ShutdownDrain::Transaction);
}

#[test]
fn client_caps_resolve_entry_over_global() {
    let cfg = parse(
        "[databases]\ncapped = host=h max_db_client_connections=2\nopen = host=h\n\
         [pgbouncer]\nmax_db_client_connections = 5\nmax_user_client_connections = 4\n\
         [users]\nbob = max_user_client_connections=1\n",
    );
    assert_eq!(cfg.max_db_client_connections(&cfg.databases["capped"]), 2);
    assert_eq!(cfg.max_db_client_connections(&cfg.databases["open"]), 5);
    assert_eq!(cfg.max_user_client_connections("bob"), 1);
    assert_eq!(cfg.max_user_client_connections("alice"), 4);
}

/// auth_ident_file is read with the HBA file (only for auth_type hba, as PgBouncer), SET re-reads
/// it, and a bad file fails the SET and keeps the loaded map.
#[test]
fn ident_file_is_read_with_hba() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hba = dir.path().join("hba.conf");
    let ident = dir.path().join("ident.conf");
    std::fs::write(&hba, "local all all peer map=m\n").expect("write");
    std::fs::write(&ident, "m root olly\n").expect("write");
    let text = format!(
        "[pgbouncer]\nauth_hba_file = {}\nauth_ident_file = {}\n",
        hba.display(),
        ident.display()
    );
    let mut cfg = parse(&text);
    assert!(cfg.ident.is_none(), "read only for auth_type hba");
    cfg.set_general("auth_type", "hba").expect("SET auth_type");
    assert!(cfg
        .ident
        .as_ref()
        .is_some_and(|m| m.allows("m", "root", "olly")));
    assert!(cfg.warnings().is_empty(), "{:?}", cfg.warnings());
    std::fs::write(&ident, "m root alice\n").expect("write");
    cfg.set_general("auth_ident_file", &ident.display().to_string())
        .expect("SET auth_ident_file");
    assert!(cfg
        .ident
        .as_ref()
        .is_some_and(|m| m.allows("m", "root", "alice")));
    let bad = dir.path().join("bad.conf");
    std::fs::write(&bad, "m /([ x\n").expect("write");
    let e = cfg
        .set_general("auth_ident_file", &bad.display().to_string())
        .unwrap_err();
    assert!(e.contains("invalid regular expression"), "{e}");
    assert!(cfg
        .ident
        .as_ref()
        .is_some_and(|m| m.allows("m", "root", "alice")));
    cfg.set_general("auth_ident_file", "").expect("unset");
    assert!(cfg.ident.is_none());
    assert!(
        cfg.warnings()
            .iter()
            .any(|w| w.contains("auth_ident_file is not set")),
        "{:?}",
        cfg.warnings()
    );
}

/// auth_type ldap needs valid auth_ldap_options: checked at load and by SET, which keeps the
/// previous options on a bad value.
#[test]
fn ldap_options_are_checked_with_auth_type_ldap() {
    let mut cfg = parse("[pgbouncer]\nauth_ldap_options = ldapserver=h ldapprefix=uid=\n");
    assert!(cfg.ldap.is_none(), "parsed only for auth_type ldap");
    cfg.set_general("auth_type", "ldap").expect("SET auth_type");
    assert!(cfg.ldap.is_some());
    let e = cfg
        .set_general("auth_ldap_options", "ldapserver=h")
        .unwrap_err();
    assert!(e.contains("requires argument \"ldapbasedn\""), "{e}");
    assert!(cfg.ldap.is_some());
    cfg.set_general("auth_type", "md5").expect("SET auth_type");
    assert!(cfg.ldap.is_none());
    let e = cfg.set_general("auth_type", "ldap");
    assert!(e.is_ok(), "{e:?}");
    let mut bare = parse("[pgbouncer]\n");
    assert!(bare.set_general("auth_type", "ldap").is_err());
}

/// SET auth_type = hba / auth_hba_file reads the HBA file; a bad file fails the SET and leaves the
/// config as it was.
#[test]
fn set_hba_reads_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hba = dir.path().join("hba.conf");
    std::fs::write(&hba, "host all all 127.0.0.1/32 trust\n").expect("write");
    let mut cfg = parse(&format!("[pgbouncer]\nauth_hba_file = {}\n", hba.display()));
    assert!(cfg.hba.is_none());
    cfg.set_general("auth_type", "hba").expect("SET auth_type");
    assert_eq!(cfg.general.auth_type, AuthType::Hba);
    assert!(cfg.hba.is_some());
    let before = cfg.clone();
    let missing = dir.path().join("missing.conf").display().to_string();
    assert!(cfg.set_general("auth_hba_file", &missing).is_err());
    assert_eq!(cfg, before);
    cfg.set_general("auth_type", "md5").expect("SET auth_type");
    assert!(cfg.hba.is_none());
}
