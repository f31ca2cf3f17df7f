//! Fuzz target for host-list `[databases]` entries: `host=a,b,c` with `port=p` or
//! `port=p1,p2,p3` and `load_balance_hosts=` (`config::ini::entries`), PgBouncer 1.22's form.
//!
//! Input: byte 0 picks where the fuzzed text goes; the rest is text (invalid UTF-8 replaced).
//! Even: the text is the whole connection string of `db = ...`. Odd: it follows
//! `db = host=` (so most inputs are host lists). Its later lines follow the entry. Lines that
//! mention `%include` become an include of a file that does not exist.
//!
//! Invariants checked:
//! - deterministic;
//! - an accepted entry with a host list has at least two (host, port) pairs, the first of which
//!   is its `host`/`port`; an entry without one has an empty list;
//! - no host of a list is empty, contains a comma or has blanks at either end;
//! - roundtrip: the accepted list written back as `host='h1,h2' port=p1,p2
//!   load_balance_hosts=...` parses to the same pairs and balance mode.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use ollyscale_pooler::config::{parse_ini_str, DatabaseConfig, ServerHost};

const INI_PATH: &str = "/nonexistent/ollyscale-pooler-fuzz/pgbouncer.ini";
const SAFE_INCLUDE: &str = "%include /nonexistent/ollyscale-pooler-fuzz/included.ini";

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let body = String::from_utf8_lossy(rest);
    let prefix = if mode % 2 == 0 { "db = " } else { "db = host=" };
    let mut text = String::from("[databases]\n");
    for (i, line) in body.lines().enumerate() {
        if line.contains("%include") {
            text.push_str(SAFE_INCLUDE);
        } else {
            if i == 0 {
                text.push_str(prefix);
            }
            text.push_str(line);
        }
        text.push('\n');
    }
    let path = Path::new(INI_PATH);
    let result = parse_ini_str(&text, path);
    assert_eq!(parse_ini_str(&text, path), result, "not deterministic");
    if let Ok(cfg) = result {
        if let Some(db) = cfg.databases.get("db") {
            check(db);
        }
    }
});

fn host_text(h: &ServerHost) -> String {
    match h {
        ServerHost::Tcp(s) => s.clone(),
        ServerHost::Unix(p) => p.to_str().expect("a host came from text").to_string(),
    }
}

fn quote(v: &str) -> String {
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
}

fn check(db: &DatabaseConfig) {
    let Some(list) = db.host_list() else {
        assert!(db.hosts.is_empty(), "a one-host list: {:?}", db.hosts);
        return;
    };
    assert!(list.len() >= 2);
    assert_eq!(db.host.as_ref(), Some(&list[0].0), "host is the first of the list");
    assert_eq!(db.port, list[0].1, "port is the first of the list");
    let hosts: Vec<String> = list.iter().map(|(h, _)| host_text(h)).collect();
    for h in &hosts {
        assert!(
            !h.is_empty() && !h.contains(',') && h.trim() == h,
            "host {h:?} of {hosts:?}"
        );
    }
    let ports: Vec<String> = list.iter().map(|(_, p)| p.to_string()).collect();
    let written = format!(
        "[databases]\ndb = host={} port={} load_balance_hosts={}\n",
        quote(&hosts.join(",")),
        ports.join(","),
        db.load_balance_hosts.as_str()
    );
    let again = parse_ini_str(&written, Path::new(INI_PATH))
        .unwrap_or_else(|e| panic!("written back, the list does not parse: {e:?}\n{written}"));
    let back = &again.databases["db"];
    assert_eq!(back.hosts, db.hosts, "host list roundtrip\n{written}");
    assert_eq!(back.load_balance_hosts, db.load_balance_hosts);
}
