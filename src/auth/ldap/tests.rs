//! LDAP option parsing: both modes, ldapurl, PgBouncer's refusals.

use super::*;

fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
    p.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[test]
fn simple_bind_mode() {
    let o = LdapOptions::parse("ldapserver=127.0.0.1 ldapport=3890 ldapprefix=\"uid=\", ldapsuffix=\",ou=people,dc=example,dc=net\"").unwrap();
    assert_eq!(o.urls(), vec!["ldap://127.0.0.1:3890"]);
    assert_eq!(
        o.mode,
        Mode::Simple {
            prefix: "uid=".into(),
            suffix: ",ou=people,dc=example,dc=net".into()
        }
    );
}

#[test]
fn search_bind_mode_with_defaults() {
    let o = LdapOptions::from_pairs(&pairs(&[
        ("ldapserver", "a.example b.example"),
        ("ldapbasedn", "dc=example,dc=net"),
        ("ldapbinddn", "cn=admin,dc=example,dc=net"),
        ("ldapbindpasswd", "secret"),
    ]))
    .unwrap();
    assert_eq!(
        o.urls(),
        vec!["ldap://a.example:389", "ldap://b.example:389"]
    );
    let Mode::Search { filter, scope, .. } = &o.mode else {
        panic!("{o:?}")
    };
    assert_eq!((filter.as_str(), *scope), ("(uid=$username)", Scope::Sub));
    assert!(!format!("{o:?}").contains("secret"), "{o:?}");
    let o = LdapOptions::from_pairs(&pairs(&[
        ("ldapserver", "h"),
        ("ldapbasedn", "dc=x"),
        ("ldapsearchfilter", "(|(uid=$username)(mail=$username))"),
    ]))
    .unwrap();
    let Mode::Search { filter, .. } = &o.mode else {
        panic!()
    };
    assert_eq!(filter_for(filter, "jo"), "(|(uid=jo)(mail=jo))".to_string());
}

#[test]
fn ldapurl_sets_server_port_base_attribute_scope_filter() {
    let o =
        LdapOptions::parse("ldapurl=\"ldap://127.0.0.1:12345/dc=example,dc=net?cn?sub\"").unwrap();
    assert_eq!(o.urls(), vec!["ldap://127.0.0.1:12345"]);
    assert_eq!(
        o.mode,
        Mode::Search {
            base_dn: "dc=example,dc=net".into(),
            bind_dn: String::new(),
            bind_password: String::new(),
            filter: "(cn=$username)".into(),
            scope: Scope::Sub,
        }
    );
    // No scope: base, as OpenLDAP parses the URL; a filter is percent-decoded.
    let o = LdapOptions::parse("ldapurl=ldap://h/ou=p%2Cdc=x??one?(uid=$username)").unwrap();
    let Mode::Search {
        base_dn,
        filter,
        scope,
        ..
    } = &o.mode
    else {
        panic!()
    };
    assert_eq!(
        (base_dn.as_str(), filter.as_str(), *scope),
        ("ou=p,dc=x", "(uid=$username)", Scope::One)
    );
    let o = LdapOptions::parse("ldapurl=ldap://h/dc=x").unwrap();
    assert!(matches!(
        o.mode,
        Mode::Search {
            scope: Scope::Base,
            ..
        }
    ));
}

#[test]
fn refusals_with_pgbouncer_texts() {
    for (text, needle) in [
        (
            "ldapserver=h ldapprefix=a ldapbasedn=b",
            "together with ldapprefix",
        ),
        ("ldapserver=h", "requires argument \"ldapbasedn\""),
        (
            "ldapserver=h ldapbasedn=b ldapsearchattribute=a ldapsearchfilter=(x)",
            "ldapsearchattribute together with ldapsearchfilter",
        ),
        (
            "ldapserver=h ldapprefix=a ldapport=0",
            "invalid LDAP port number",
        ),
        (
            "ldapserver=h ldapprefix=a ldapscheme=http",
            "invalid ldapscheme",
        ),
        (
            "ldapserver=h ldapprefix=a ldapfoo=1",
            "invalid LDAP key parameter",
        ),
        ("ldapurl=http://h/dc=x", "unsupported LDAP URL scheme"),
        ("ldapurl=ldap://h/dc=x?a?deep", "bad scope"),
        ("ldapprefix=a", "ldapserver is required"),
        ("ldapserver=h ldapprefix=", "has no value"),
        ("ldapserver=h ldapprefix=\"a", "unterminated"),
    ] {
        let e = LdapOptions::parse(text).unwrap_err();
        assert!(e.contains(needle), "{text}: {e}");
    }
}

#[test]
fn tls_by_scheme_or_starttls() {
    let o = LdapOptions::parse("ldapserver=h ldapprefix=a ldapscheme=ldaps").unwrap();
    assert_eq!(
        (o.urls(), o.uses_tls()),
        (vec!["ldaps://h:636".to_string()], true)
    );
    let o = LdapOptions::parse("ldapserver=h ldapprefix=a ldaptls=1").unwrap();
    assert_eq!(
        (o.urls(), o.starttls),
        (vec!["ldap://h:389".to_string()], true)
    );
    let o = LdapOptions::parse("ldapurl=ldaps://h/dc=x").unwrap();
    assert_eq!(o.urls(), vec!["ldaps://h:636".to_string()]);
    let o = LdapOptions::parse("ldapserver=h ldapprefix=a ldaptls=0").unwrap();
    assert!(!o.uses_tls());
}

#[test]
fn user_names_that_would_change_a_filter() {
    assert!(user_fits_filter("jo.smith@example.com"));
    for bad in ["*", "a)(uid=*", "a\\29", "a/b"] {
        assert!(!user_fits_filter(bad), "{bad}");
    }
}
