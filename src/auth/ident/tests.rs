//! The ident map parser and matcher on text (no files).

use super::*;

const FILE: &str = r#"
# MAPNAME   SYSTEM-USERNAME        DATABASE-USERNAME
ops         alice                  app
ops         alice                  reporting   # a second target for the same OS user
ops         "bob smith"            app
ops         root                   all
certs       /^(.*)@example\.com$   \1
certs       /^svc-                 service
certs       /^admin-(.*)$          "all"
any         /x                     all
"#;

#[test]
fn exact_names_and_several_targets() {
    let m = IdentMap::parse(FILE).unwrap();
    assert!(m.allows("ops", "alice", "app"));
    assert!(m.allows("ops", "alice", "reporting"));
    assert!(!m.allows("ops", "alice", "other"));
    assert!(m.allows("ops", "bob smith", "app"));
    assert!(!m.allows("ops", "bob", "app"));
    // Case matters, as in PostgreSQL.
    assert!(!m.allows("ops", "Alice", "app"));
    // Another map's lines do not apply.
    assert!(!m.allows("certs", "alice", "app"));
    assert!(!m.allows("nomap", "alice", "app"));
}

#[test]
fn all_allows_any_user() {
    let m = IdentMap::parse(FILE).unwrap();
    assert!(m.allows("ops", "root", "anything"));
    assert!(m.allows("any", "xyz", "whoever"));
    assert!(!m.allows("any", "abc", "whoever"));
    // Quoted "all" is the user named all.
    assert!(m.allows("certs", "admin-jo", "all"));
    assert!(!m.allows("certs", "admin-jo", "jo"));
}

#[test]
fn regex_with_substitution() {
    let m = IdentMap::parse(FILE).unwrap();
    assert!(m.allows("certs", "jane@example.com", "jane"));
    assert!(!m.allows("certs", "jane@example.com", "john"));
    assert!(!m.allows("certs", "jane@example.org", "jane"));
    // Unanchored at the end: `^svc-` matches any name starting so.
    assert!(m.allows("certs", "svc-billing", "service"));
    assert!(!m.allows("certs", "my-svc-billing", "service"));
}

#[test]
fn a_backreference_without_a_group_never_matches() {
    let m = IdentMap::parse("m /^abc \\1\n").unwrap();
    assert!(!m.allows("m", "abc", "\\1"));
    assert!(!m.allows("m", "abc", ""));
}

#[test]
fn quotes_and_comments() {
    let m = IdentMap::parse("m \"a \"\"q\"\" b\" \"u#1\" # trailing\n# m x y\n").unwrap();
    assert!(m.allows("m", "a \"q\" b", "u#1"));
    assert!(!m.allows("m", "x", "y"));
}

#[test]
fn bad_lines_are_refused_with_their_number() {
    for (text, needle) in [
        ("m a\n", "line 1: expected"),
        ("\nm a b c\n", "line 2: expected"),
        ("m /([ x\n", "invalid regular expression"),
        ("m a +grp\n", "group names"),
        ("m a /x\n", "regular expressions as database user"),
        ("include other.conf x\n", "includes"),
        ("m \"a b\n", "unterminated"),
    ] {
        let e = IdentMap::parse(text).unwrap_err();
        assert!(e.contains(needle), "{text:?}: {e}");
    }
}

#[test]
fn empty_and_comment_only_files_are_empty_maps() {
    let m = IdentMap::parse("# nothing\n\n   \n").unwrap();
    assert!(!m.allows("m", "a", "a"));
}
