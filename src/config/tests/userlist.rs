//! Unit tests of the auth_file (userlist.txt) parser.

use std::path::Path;

use crate::config::*;

// ---------------------------------------------------------------- userlist.txt

const SCRAM: &str = "SCRAM-SHA-256$4096:c2FsdA==$c3RvcmVkLWtleQ==:c2VydmVyLWtleQ==";

#[test]
fn userlist_classifies_secrets() {
    let text = format!(
        "; comment\n\n\"plain\" \"secret pw\"\n\"admin\" \"md545f2603610af569b6155c45067268c6b\" extra\n\
         \"scram\" \"{SCRAM}\"\n\"short\" \"md5abc\"\n\"q\"\"uote\" \"a\"\"b\"\n"
    );
    let list = parse_userlist(&text, Path::new("u.txt")).expect("valid");
    assert_eq!(list.len(), 5);
    assert!(!list.is_empty());
    assert_eq!(list.get("plain"), Some(&Secret::Plain("secret pw".into())));
    assert_eq!(
        list.get("admin"),
        Some(&Secret::Md5("md545f2603610af569b6155c45067268c6b".into()))
    );
    assert_eq!(list.get("scram"), Some(&Secret::Scram(SCRAM.into())));
    assert_eq!(list.get("short"), Some(&Secret::Plain("md5abc".into())));
    assert_eq!(list.get("q\"uote"), Some(&Secret::Plain("a\"b".into())));
    assert_eq!(list.get("nobody"), None);
    assert_eq!(list.iter().count(), 5);
    assert_eq!(list.get("scram").map(Secret::as_str), Some(SCRAM));
}

#[test]
fn userlist_reports_malformed_lines_without_secrets() {
    let text = "\"ok\" \"fine\"\nbare secret1\n\"bob\" unquoted-secret2\n\"eve\" \"open-secret3\n";
    let errs = parse_userlist(text, Path::new("u.txt"))
        .expect_err("malformed")
        .0;
    let lines: Vec<usize> = errs.iter().map(|e| e.line).collect();
    assert_eq!(lines, vec![2, 3, 4]);
    assert_eq!((errs[1].key.as_str(), errs[2].key.as_str()), ("bob", "eve"));
    let shown = format!("{} {:?}", ConfigErrors(errs.clone()), errs);
    assert!(!shown.contains("secret1") && !shown.contains("secret2") && !shown.contains("secret3"));
    assert_eq!(
        parse_userlist("", Path::new("u.txt")),
        Ok(UserList::default())
    );
}

#[test]
fn secret_debug_is_redacted() {
    let list = parse_userlist("\"u\" \"topsecret\"\n", Path::new("u.txt")).expect("valid");
    let shown = format!("{list:?}");
    assert!(
        !shown.contains("topsecret") && shown.contains("Plain(<redacted>)"),
        "{shown}"
    );
}

// ---------------------------------------------------------------- robustness

/// Arbitrary bytes never panic either parser (a small deterministic generator; no extra deps).
#[test]
fn arbitrary_input_never_panics() {
    let alphabet: Vec<char> = "[]=\"' \\\t\n\r;#%*,/@abcpgbouncerdatabasesusersport0x9é\u{feff}"
        .chars()
        .collect();
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let prefixes = ["", "[pgbouncer]\n", "[databases]\n", "[users]\n", "\""];
    for round in 0..3000 {
        let len = (next() % 80) as usize;
        let mut text = prefixes[round % prefixes.len()].to_string();
        for _ in 0..len {
            text.push(alphabet[(next() % alphabet.len() as u64) as usize]);
        }
        let _ = parse_ini_str(&text, Path::new("fuzz.ini"));
        let _ = parse_userlist(&text, Path::new("fuzz.txt"));
    }
}
