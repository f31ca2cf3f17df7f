//! The HBA allow/deny matrix on parsed text (no files: `@file` comes from a closure).

use super::*;

fn parse(text: &str) -> Hba {
    Hba::parse(text, &|f| match f {
        "admins.txt" => Ok("alice, bob\n# comment\ncarol".to_string()),
        "dbs.txt" => Ok("app1 app2".to_string()),
        "groups.txt" => Ok("dave\n+ops".to_string()),
        other => Err(format!("no file {other}")),
    })
    .unwrap()
}

fn peer<'a>(addr: Option<&str>, tls: bool, database: &'a str, user: &'a str) -> Peer<'a> {
    Peer {
        addr: addr.map(|a| a.parse().unwrap()),
        tls,
        database,
        user,
    }
}

const FILE: &str = r#"
# TYPE     DATABASE   USER        ADDRESS            METHOD
local      all        all                            trust
hostssl    all        @admins.txt 0.0.0.0/0          cert
host       @dbs.txt   app         10.1.0.0/16        md5
host       "Mixed"    all         10.2.0.0 255.255.0.0 password
hostnossl  all        app         192.168.0.0/24     reject
host       sameuser   all         ::1/128            scram-sha-256
host       all        +staff      all                trust
host       all        bob,+staff  10.9.0.0/16        trust
host       +ops       all         10.9.0.0/16        trust
hostssl    all        @groups.txt 10.9.0.0/16        trust
host       all        "+staff"    10.9.0.0/16        password
host       all        all         fe80::/10          scram-sha-256
host       all        all         all                md5
"#;

/// (client address, TLS, database, user, expected method).
type Case<'a> = (Option<&'a str>, bool, &'a str, &'a str, Option<HbaMethod>);

#[test]
fn first_match_wins_across_the_matrix() {
    let h = parse(FILE);
    use HbaMethod::*;
    let cases: &[Case] = &[
        (None, false, "db", "anyone", Some(Trust)),
        (Some("1.2.3.4"), true, "db", "bob", Some(Cert)),
        (Some("1.2.3.4"), false, "db", "bob", Some(Md5)),
        (Some("10.1.5.5"), false, "app2", "app", Some(Md5)),
        (Some("10.2.9.9"), false, "Mixed", "x", Some(Password)),
        (Some("10.2.9.9"), false, "mixed", "x", Some(Md5)),
        (Some("192.168.0.7"), false, "db", "app", Some(Reject)),
        (Some("192.168.0.7"), true, "db", "app", Some(Md5)),
        (Some("::1"), false, "u1", "u1", Some(ScramSha256)),
        (Some("::1"), false, "other", "u1", Some(Md5)),
        (Some("fe80::1"), false, "db", "x", Some(ScramSha256)),
        (Some("::ffff:10.1.2.3"), false, "app1", "app", Some(Md5)),
        // Every line naming an unquoted +group is skipped whole, as PgBouncer does: bob, dave
        // and a database called "+ops" fall through to the last line.
        (Some("10.9.0.1"), false, "db", "bob", Some(Md5)),
        (Some("10.9.0.1"), false, "+ops", "x", Some(Md5)),
        (Some("10.9.0.1"), true, "db", "dave", Some(Md5)),
        // Quoted, it is a plain name.
        (Some("10.9.0.1"), false, "db", "+staff", Some(Password)),
    ];
    for (addr, tls, db, user, want) in cases {
        assert_eq!(
            h.method(&peer(*addr, *tls, db, user)),
            *want,
            "{addr:?} tls={tls} {db} {user}"
        );
    }
}

#[test]
fn group_lines_are_skipped_not_refused() {
    let h = parse("host all +g all trust\nhost all all all reject\n");
    assert_eq!(h.lines.len(), 1);
    assert_eq!(
        h.warnings(),
        ["could not parse hba config line 1: group names (+group) are not supported, the line is ignored"]
    );
    assert_eq!(
        h.method(&peer(Some("1.2.3.4"), false, "d", "g")),
        Some(HbaMethod::Reject)
    );
}

#[test]
fn no_line_means_no_method() {
    let h = parse("host all all 127.0.0.1/32 trust\n");
    assert_eq!(h.method(&peer(Some("127.0.0.2"), false, "d", "u")), None);
    assert_eq!(h.method(&peer(None, false, "d", "u")), None);
    assert_eq!(
        h.method(&peer(Some("127.0.0.1"), false, "d", "u")),
        Some(HbaMethod::Trust)
    );
}

#[test]
fn bad_lines_are_reported_with_their_number() {
    let inc = |_: &str| Err("none".to_string());
    for (text, needle) in [
        ("host all all samenet md5", "line 1: unsupported address"),
        ("\nhost all all 1.2.3.4/33 md5", "line 2: bad prefix"),
        ("host all all all radius", "unsupported method"),
        (
            "host all all all md5 clientcert=1",
            "not supported for this method",
        ),
        ("host all all all peer", "only supported on local sockets"),
        ("local all all peer map", "name=value"),
        ("local all all trust map=x", "not supported for this method"),
        ("hostgssenc all all all md5", "connection type"),
        ("host all all", "too few fields"),
        ("host all @missing all md5", "none"),
    ] {
        let e = Hba::parse(text, &inc).unwrap_err();
        assert!(e.contains(needle), "{text}: {e}");
    }
}

#[test]
fn map_option_on_cert_and_peer_lines() {
    let h = parse(
        "local all all peer map=ops\n\
         hostssl all all all cert map=\"my map\"\n\
         host all all all md5\n",
    );
    let local = h.rule(&peer(None, false, "d", "u")).unwrap();
    assert_eq!(
        (local.method, local.map.as_deref()),
        (HbaMethod::Peer, Some("ops"))
    );
    let tls = h.rule(&peer(Some("10.0.0.1"), true, "d", "u")).unwrap();
    assert_eq!(
        (tls.method, tls.map.as_deref()),
        (HbaMethod::Cert, Some("my map"))
    );
    let plain = h.rule(&peer(Some("10.0.0.1"), false, "d", "u")).unwrap();
    assert_eq!((plain.method, plain.map.as_deref()), (HbaMethod::Md5, None));
    assert!(h.uses_maps());
    assert!(!parse("local all all peer\n").uses_maps());
}

#[test]
fn ldap_lines_carry_their_options() {
    let h = parse(
        "host all all all ldap ldapserver=127.0.0.1 ldapport=3890 ldapprefix=\"cn=\" ldapsuffix=\",dc=x\"\n",
    );
    let r = h.rule(&peer(Some("10.0.0.1"), false, "d", "u")).unwrap();
    assert_eq!(r.method, HbaMethod::Ldap);
    let o = r.ldap.as_ref().unwrap();
    assert_eq!(o.urls(), vec!["ldap://127.0.0.1:3890"]);
    let inc = |_: &str| Err("none".to_string());
    let e = Hba::parse("host all all all ldap ldapserver=h\n", &inc).unwrap_err();
    assert!(
        e.contains("line 1: authentication method \"ldap\" requires"),
        "{e}"
    );
    let e = Hba::parse("host all all all ldap map=x ldapserver=h\n", &inc).unwrap_err();
    assert!(e.contains("not supported for this method"), "{e}");
}

/// PgBouncer's own hba_test.rules: lists with blanks around their commas are one list, and a
/// `gss` line loads but refuses (no GSSAPI here), so nothing below it is reached by its clients.
#[test]
fn comma_lists_across_blanks_and_gss_lines() {
    let h = parse(
        "host tmp1,all user1,user2 , user3 16.0.0.0/8 md5\n\
         host d1 , d2 all 17.0.0.0/8 password\n\
         host gssdb all 20.0.0.0/8 gss include_realm=0\n\
         host all all 20.0.0.0/8 trust\n",
    );
    for u in ["user1", "user2", "user3"] {
        assert_eq!(
            h.method(&peer(Some("16.1.1.1"), false, "x", u)),
            Some(HbaMethod::Md5),
            "{u}"
        );
    }
    assert_eq!(h.method(&peer(Some("16.1.1.1"), false, "x", "user4")), None);
    assert_eq!(
        h.method(&peer(Some("17.1.1.1"), false, "d2", "u")),
        Some(HbaMethod::Password)
    );
    assert_eq!(
        h.method(&peer(Some("20.1.1.1"), false, "gssdb", "u")),
        Some(HbaMethod::Reject)
    );
    assert_eq!(
        h.method(&peer(Some("20.1.1.1"), false, "other", "u")),
        Some(HbaMethod::Trust)
    );
    assert!(h
        .warnings()
        .iter()
        .any(|w| w.contains("line 3") && w.contains("gss")));
}
