//! Fuzz target for the configuration files: `config::parse_ini_str` (pgbouncer.ini) and
//! `config::parse_userlist` (auth_file), which read files an operator (or a config generator)
//! wrote.
//!
//! Input layout: byte 0 picks the mode, the rest is the file text (invalid UTF-8 is replaced,
//! as the target is about text). Mode 0-1: the text is a pgbouncer.ini and a userlist. Mode 2: the
//! text is appended to a `[databases]` entry whose `password=` holds a sentinel, to check it is
//! never repeated in a message.
//!
//! The filesystem: the ini is "at" a path that does not exist, and every line that mentions
//! `%include` is replaced by an include of a file that does not exist (an absolute path, so it is
//! not looked up anywhere else). The parser reads nothing else, so the target reads no file and
//! its result does not depend on the machine. (Without that, `%include /dev/zero` would hang.)
//!
//! Invariants checked:
//! - deterministic: parsing the same text twice gives the same result;
//! - an error lists at least one problem, each at a real line of the file;
//! - a `[databases]` password never appears in a message;
//! - userlist roundtrip: the accepted users, written back as `"user" "secret"` lines, parse to the
//!   same list.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use ollyscale_pooler::config::{parse_ini_str, parse_userlist, ConfigErrors};

const INI_PATH: &str = "/nonexistent/ollyscale-pooler-fuzz/pgbouncer.ini";
const USERLIST_PATH: &str = "/nonexistent/ollyscale-pooler-fuzz/userlist.txt";
const SAFE_INCLUDE: &str = "%include /nonexistent/ollyscale-pooler-fuzz/included.ini";

/// A password value made of two parts, each checked on its own (the unquoted form with a space
/// is split by the tokenizer, and neither part may be echoed).
const SENTINEL_PARTS: [&str; 2] = ["Zq9xKsecret", "Wv7yJsecret"];

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    match mode % 3 {
        0 | 1 => {
            ini(&text);
            userlist(&text);
        }
        _ => password_never_echoed(&text, mode),
    }
});

/// Replaces every line that mentions `%include` (anywhere, whatever the parser would make of
/// it) with an include of a file that does not exist. A BOM is kept, so its handling is fuzzed.
fn without_includes(text: &str) -> String {
    let (bom, body) = match text.strip_prefix('\u{feff}') {
        Some(body) => ("\u{feff}", body),
        None => ("", text),
    };
    let mut out = String::with_capacity(text.len());
    out.push_str(bom);
    for line in body.lines() {
        out.push_str(if line.contains("%include") {
            SAFE_INCLUDE
        } else {
            line
        });
        out.push('\n');
    }
    // The only include the parser can see is ours (checked, not just built that way).
    for line in out.trim_start_matches('\u{feff}').lines() {
        assert!(!line.contains("%include") || line == SAFE_INCLUDE);
    }
    out
}

fn ini(raw: &str) {
    let text = without_includes(raw);
    let path = Path::new(INI_PATH);
    let result = parse_ini_str(&text, path);
    assert_eq!(
        parse_ini_str(&text, path),
        result,
        "parse is not deterministic"
    );
    let lines = text.lines().count();
    match result {
        Ok(cfg) => {
            assert_eq!(cfg.path, path);
            assert!(
                !cfg.databases.contains_key("pgbouncer"),
                "the admin db name was taken"
            );
            assert!(
                !cfg.databases.contains_key("*"),
                "the fallback is not a database"
            );
        }
        Err(ConfigErrors(issues)) => {
            assert!(!issues.is_empty(), "an error without a problem");
            for issue in &issues {
                // Includes never resolve, so every problem is in the main file.
                assert_eq!(issue.file, INI_PATH);
                assert!(
                    issue.line >= 1 && issue.line <= lines,
                    "line {} of {lines}",
                    issue.line
                );
            }
        }
    }
}

fn password_never_echoed(tail: &str, mode: u8) {
    if SENTINEL_PARTS.iter().any(|p| tail.contains(p)) {
        return; // The fuzzer wrote the sentinel itself; it may be echoed as a name.
    }
    let [a, b] = SENTINEL_PARTS;
    let password = match mode % 4 {
        0 => format!("password={a}{b}"),
        1 => format!("password='{a} {b}'"),
        2 => format!("password={a} {b}"),
        _ => format!("password='{a}\\' {b}"),
    };
    // The ini reader ends a line at `\n` only (`str::lines`): a bare `\r` stays inside the line,
    // where the connection-string tokenizer, like PgBouncer's, takes it as part of a token. So
    // the split is at `\n`, or text after a `\r` would glue onto the password's last part.
    let line_end = tail.find('\n').unwrap_or(tail.len());
    // The tail goes on the entry's line, before or after the password; the rest of the text
    // (other lines) follows.
    let (on_line, after) = tail.split_at(line_end);
    let entry = if mode & 0x80 == 0 {
        format!("db = {password} {on_line}")
    } else {
        format!("db = {on_line} {password}")
    };
    // `password=A B =x` makes B a key (libpq syntax): then only A is the password.
    let b_is_a_key = mode % 4 == 2
        && mode & 0x80 == 0
        && on_line.trim_start_matches([' ', '\t']).starts_with('=');
    let secret_parts = if b_is_a_key {
        &SENTINEL_PARTS[..1]
    } else {
        &SENTINEL_PARTS[..]
    };
    let text = without_includes(&format!("[databases]\n{entry}{after}"));
    let Err(ConfigErrors(issues)) = parse_ini_str(&text, Path::new(INI_PATH)) else {
        return;
    };
    for issue in &issues {
        for part in secret_parts {
            assert!(
                !issue.message.contains(part) && !issue.key.contains(part),
                "a password was repeated in {issue:?}"
            );
        }
    }
}

fn userlist(text: &str) {
    let path = Path::new(USERLIST_PATH);
    let result = parse_userlist(text, path);
    let lines = text.lines().count();
    match result {
        Ok(list) => {
            assert!(list.len() <= lines);
            let mut written = String::new();
            for (user, secret) in list.iter() {
                assert!(!user.is_empty(), "an empty user name was accepted");
                written.push_str(&format!(
                    "\"{}\" \"{}\"\n",
                    user.replace('"', "\"\""),
                    secret.as_str().replace('"', "\"\"")
                ));
            }
            assert_eq!(
                parse_userlist(&written, path),
                Ok(list),
                "userlist roundtrip"
            );
        }
        Err(ConfigErrors(issues)) => {
            assert!(!issues.is_empty(), "an error without a problem");
            for issue in &issues {
                assert_eq!(issue.file, USERLIST_PATH);
                assert!(issue.line >= 1 && issue.line <= lines);
            }
        }
    }
}
