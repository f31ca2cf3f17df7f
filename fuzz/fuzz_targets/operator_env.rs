//! Fuzz target for operator image mode (`config::operator::render`): the pgbouncer.ini and
//! userlist.txt built from the Zalando operator's pooler environment (`PGHOST`, `PGPORT`,
//! `PGUSER`, `PGPASSWORD`, `PGSCHEMA`, `CONNECTION_POOLER_*`, ...), then parsed like any config.
//!
//! Input: byte 0 bit 0 says whether the operator mounted a userlist; the rest is split at 0xFF
//! into the values of [`VARS`] in order (lossy UTF-8, as `std::env::var` only yields text); a
//! value that is the single byte 0xFE, or missing, is unset. `OLLYSCALE_INCLUDE`'s `%include`
//! line is replaced by an include of a file that does not exist before parsing (no file is read).
//!
//! Invariants checked:
//! - deterministic, and an error names one of the variables;
//! - no variable can add, split or reorder a line: the rendered ini has the same lines, up to
//!   each line's key, as the one rendered with every set variable replaced by a plain value; no
//!   line holds a carriage return or a NUL;
//! - a rendered userlist parses to exactly (`PGUSER`, `PGPASSWORD`);
//! - with plain values (names of letters, digits, `._-`; numbers in range; a known pool mode;
//!   no TLS files, no include) the ini parses, and says what the variables said;
//! - the password never appears in the ini, and the ini (so any parse error) does not depend on it.
#![no_main]

use std::collections::HashMap;
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use ollyscale_pooler::config::operator::render;
use ollyscale_pooler::config::{parse_ini_str, parse_userlist};

const INI_PATH: &str = "/nonexistent/ollyscale-pooler-fuzz/pgbouncer.ini";
const USERLIST_PATH: &str = "/nonexistent/ollyscale-pooler-fuzz/userlist.txt";
const SAFE_INCLUDE: &str = "%include /nonexistent/ollyscale-pooler-fuzz/included.ini";

const VARS: [&str; 16] = [
    "PGHOST",
    "PGPORT",
    "PGUSER",
    "PGPASSWORD",
    "PGSCHEMA",
    "CONNECTION_POOLER_MODE",
    "CONNECTION_POOLER_PORT",
    "CONNECTION_POOLER_DEFAULT_SIZE",
    "CONNECTION_POOLER_RESERVE_SIZE",
    "CONNECTION_POOLER_MAX_CLIENT_CONN",
    "CONNECTION_POOLER_MAX_DB_CONN",
    "INFRASTRUCTURE_ROLES",
    "CONNECTION_POOLER_CLIENT_TLS_CRT",
    "CONNECTION_POOLER_CLIENT_TLS_KEY",
    "CONNECTION_POOLER_CLIENT_CA_FILE",
    "OLLYSCALE_INCLUDE",
];

const NUMBERS: [&str; 6] = [
    "PGPORT",
    "CONNECTION_POOLER_PORT",
    "CONNECTION_POOLER_DEFAULT_SIZE",
    "CONNECTION_POOLER_RESERVE_SIZE",
    "CONNECTION_POOLER_MAX_CLIENT_CONN",
    "CONNECTION_POOLER_MAX_DB_CONN",
];

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let mounted = flags & 1 == 1;
    let mut env = HashMap::new();
    for (name, value) in VARS.iter().zip(rest.split(|b| *b == 0xFF)) {
        if value != [0xFE] {
            env.insert(*name, String::from_utf8_lossy(value).into_owned());
        }
    }
    let lookup = |k: &str| env.get(k).cloned();
    let userlist_path = Path::new(USERLIST_PATH);
    let result = render(&lookup, userlist_path, mounted);
    let again = render(&lookup, userlist_path, mounted);
    assert_eq!(
        result.as_ref().map(|r| (&r.ini, &r.userlist)),
        again.as_ref().map(|r| (&r.ini, &r.userlist)),
        "not deterministic"
    );
    let rendered = match result {
        Ok(r) => r,
        Err(e) => {
            assert!(VARS.contains(&e.name), "{e}");
            return;
        }
    };
    // The same variables, each with a plain value (an empty one stays empty: unset to render).
    let plain: HashMap<&str, String> = env
        .iter()
        .map(|(k, v)| {
            let v = match (v.is_empty(), NUMBERS.contains(k)) {
                (true, _) => "",
                (false, true) => "1",
                (false, false) => "x",
            };
            (*k, v.to_string())
        })
        .collect();
    let plain_lookup = |k: &str| plain.get(k).cloned();
    let base = render(&plain_lookup, userlist_path, mounted).expect("plain values render");
    let got: Vec<&str> = rendered.ini.lines().collect();
    let want: Vec<&str> = base.ini.lines().collect();
    assert_eq!(
        got.len(),
        want.len(),
        "a value added lines:\n{}",
        rendered.ini
    );
    for (g, w) in got.iter().zip(&want) {
        assert!(!g.contains(['\r', '\0']), "control character in {g:?}");
        fn key_of(l: &str) -> &str {
            l.split(" = ").next().unwrap_or(l)
        }
        if w.starts_with('%') {
            assert!(g.starts_with("%include "), "{g:?}");
        } else {
            assert_eq!(key_of(g), key_of(w), "a value changed a line's key: {g:?}");
        }
    }
    if let Some(list) = &rendered.userlist {
        let parsed = parse_userlist(list, userlist_path)
            .unwrap_or_else(|e| panic!("the written userlist does not parse: {e:?}"));
        let entries: Vec<(String, String)> = parsed
            .iter()
            .map(|(u, s)| (u.to_string(), s.as_str().to_string()))
            .collect();
        assert_eq!(
            entries,
            vec![(env["PGUSER"].clone(), env["PGPASSWORD"].clone())],
            "userlist roundtrip"
        );
    }
    let ini: String = rendered
        .ini
        .lines()
        .map(|l| {
            if l.starts_with("%include") {
                SAFE_INCLUDE
            } else {
                l
            }
        })
        .flat_map(|l| [l, "\n"])
        .collect();
    // The password never reaches the ini: rendered with another password of the same length
    // it is the same text, so no parse error can show the password either. (Looking for the
    // password's text gave false alarms: "session" is part of the fixed message "expected
    // session, transaction or statement", and other values can spell it next to each other.)
    if let Some(p) = env.get("PGPASSWORD") {
        let mut other = env.clone();
        other.insert("PGPASSWORD", "Q".repeat(p.chars().count()));
        let other_lookup = |k: &str| other.get(k).cloned();
        let o = render(&other_lookup, userlist_path, mounted).expect("a plain password renders");
        assert_eq!(o.ini, rendered.ini, "the ini depends on the password");
    }
    let parsed = parse_ini_str(&ini, Path::new(INI_PATH));
    if plain_values(&env) {
        let cfg = parsed.unwrap_or_else(|e| panic!("plain values do not parse: {e:?}\n{ini}"));
        let num = |k: &str, d: u32| env.get(k).map_or(d, |v| v.parse().expect("plain number"));
        assert_eq!(
            cfg.general.default_pool_size,
            num("CONNECTION_POOLER_DEFAULT_SIZE", 15)
        );
        assert_eq!(
            cfg.general.reserve_pool_size,
            num("CONNECTION_POOLER_RESERVE_SIZE", 7)
        );
        assert_eq!(
            cfg.general.max_db_connections,
            num("CONNECTION_POOLER_MAX_DB_CONN", 30)
        );
        assert_eq!(
            cfg.general.max_client_conn,
            num("CONNECTION_POOLER_MAX_CLIENT_CONN", 10000)
        );
        assert_eq!(
            u32::from(cfg.general.listen_port),
            num("CONNECTION_POOLER_PORT", 5432)
        );
        assert_eq!(cfg.general.admin_users, vec![env["PGUSER"].clone()]);
        let fallback = cfg.fallback_database.expect("the * entry");
        assert_eq!(u32::from(fallback.port), num("PGPORT", 5432));
    }
});

/// Values the operator really passes: names of letters, digits and `._-`, numbers that fit,
/// a pool mode PgBouncer knows, no TLS files and no include.
fn plain_values(env: &HashMap<&str, String>) -> bool {
    let name = |v: &str| {
        !v.is_empty()
            && v.len() <= 63
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    };
    // Leading zeros and signs are fine too: render writes the number in plain decimal.
    let number_ok = |k: &str, v: &str| {
        let max = if k.ends_with("PORT") { 65535 } else { 100_000 };
        v.bytes().all(|b| b.is_ascii_digit())
            && v.parse::<u32>()
                .is_ok_and(|n| n <= max && (n > 0 || !k.ends_with("PORT")))
    };
    env.iter().all(|(k, v)| match *k {
        "PGHOST" | "PGUSER" | "PGSCHEMA" => name(v),
        "PGPASSWORD" => true,
        "CONNECTION_POOLER_MODE" => ["session", "transaction", "statement"].contains(&v.as_str()),
        "INFRASTRUCTURE_ROLES" => v.split(',').all(name),
        k if NUMBERS.contains(&k) => number_ok(k, v),
        // TLS files and the include (which never exists here): only unset (empty is unset).
        _ => v.is_empty(),
    })
}
