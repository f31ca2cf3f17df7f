//! Fuzz target for the `[peers]` section of pgbouncer.ini (`config::ini::peers`: the other
//! pooler processes that cancel requests carrying their id are forwarded to).
//!
//! Input: the text after a `[peers]` header (invalid UTF-8 replaced; it may open other sections).
//! Lines that mention `%include` become an include of a file that does not exist, so the target
//! reads no file.
//!
//! Invariants checked:
//! - deterministic: parsing the same text twice gives the same result;
//! - an error lists at least one problem, none past the end of the file;
//! - every accepted peer has an id from 1 to 16383, a non-empty host that is not abstract
//!   (`@name`), and a port from 1 to 65535;
//! - roundtrip: the accepted peers, written back as `id = host='...' port=... pool_size=...`
//!   lines (quoted, with `\'` and `\\` escapes), parse to the same peers.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use ollyscale_pooler::config::{parse_ini_str, Config, ConfigErrors, ServerHost};

const INI_PATH: &str = "/nonexistent/ollyscale-pooler-fuzz/pgbouncer.ini";
const SAFE_INCLUDE: &str = "%include /nonexistent/ollyscale-pooler-fuzz/included.ini";

fuzz_target!(|data: &[u8]| {
    let body = String::from_utf8_lossy(data);
    let mut text = String::from("[peers]\n");
    for line in body.lines() {
        text.push_str(if line.contains("%include") {
            SAFE_INCLUDE
        } else {
            line
        });
        text.push('\n');
    }
    let path = Path::new(INI_PATH);
    let result = parse_ini_str(&text, path);
    assert_eq!(parse_ini_str(&text, path), result, "not deterministic");
    match result {
        Ok(cfg) => check_peers(&cfg),
        Err(ConfigErrors(issues)) => {
            assert!(!issues.is_empty(), "an error without a problem");
            let lines = text.lines().count();
            for issue in &issues {
                assert!(issue.line <= lines, "line {} of {lines}", issue.line);
            }
        }
    }
});

fn host_text(h: &ServerHost) -> String {
    match h {
        ServerHost::Tcp(s) => s.clone(),
        ServerHost::Unix(p) => p.to_str().expect("a host came from text").to_string(),
    }
}

/// A libpq connection-string value, single-quoted.
fn quote(v: &str) -> String {
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
}

fn check_peers(cfg: &Config) {
    let mut written = String::from("[peers]\n");
    for (id, peer) in &cfg.peers {
        assert!((1..=16383).contains(id), "peer id {id}");
        assert!(peer.port != 0);
        let host = host_text(&peer.host);
        assert!(!host.is_empty() && !host.starts_with('@'), "host {host:?}");
        written.push_str(&format!("{id} = host={} port={}", quote(&host), peer.port));
        if let Some(n) = peer.pool_size {
            written.push_str(&format!(" pool_size={n}"));
        }
        written.push('\n');
    }
    let again = parse_ini_str(&written, Path::new(INI_PATH))
        .unwrap_or_else(|e| panic!("written back, the peers do not parse: {e:?}\n{written}"));
    assert_eq!(again.peers, cfg.peers, "peers roundtrip\n{written}");
}
