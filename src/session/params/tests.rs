//! Tests for the shared tracked-parameter sets.

use super::*;

fn welcome(pairs: &[(&str, &str)]) -> Arc<Welcome> {
    Arc::new(
        pairs
            .iter()
            .map(|(k, v)| (Arc::from(*k), Arc::from(*v)))
            .collect(),
    )
}

fn server_welcome() -> Arc<Welcome> {
    welcome(&[
        ("application_name", ""),
        ("client_encoding", "UTF8"),
        ("DateStyle", "ISO, MDY"),
        ("default_transaction_read_only", "off"),
        ("integer_datetimes", "on"),
        ("session_authorization", "olly"),
        ("standard_conforming_strings", "on"),
        ("TimeZone", "UTC"),
    ])
}

fn asked<'a>(pairs: &[(&'a str, &'a str)]) -> Vec<(Cow<'a, str>, Cow<'a, str>)> {
    pairs
        .iter()
        .map(|(k, v)| (Cow::Borrowed(*k), Cow::Borrowed(*v)))
        .collect()
}

fn values(p: &Params) -> Vec<(&str, &str)> {
    p.iter().map(|(k, v)| (&**k, &**v)).collect()
}

/// Logs one client in the way `link::login` does, keeping what it says to keep.
fn login(
    cfg: &Config,
    w: &Arc<Welcome>,
    kept: &mut Option<ParamSets>,
    a: &[(&str, &str)],
) -> Params {
    let (p, keep) = for_client(cfg, &asked(a), w, kept.clone());
    if keep.is_some() {
        *kept = keep;
    }
    p
}

#[test]
fn a_client_gets_its_values_then_the_welcome_then_the_server_default() {
    let mut cfg = Config::default();
    cfg.general.track_extra_parameters = vec!["search_path".into()];
    let w = server_welcome();
    let (p, keep) = for_client(
        &cfg,
        &asked(&[("datestyle", "German"), ("application_name", "app")]),
        &w,
        None,
    );
    assert_eq!(
        values(&p),
        [
            ("client_encoding", "UTF8"),
            ("DateStyle", "German"),
            ("TimeZone", "UTC"),
            ("standard_conforming_strings", "on"),
            ("application_name", "app"),
            ("default_transaction_read_only", "off"),
            ("session_authorization", "olly"),
            ("search_path", SERVER_DEFAULT),
        ]
    );
    // Names the server reports are the welcome's own strings (the welcome is written by
    // identity).
    assert!(Arc::ptr_eq(&p.as_slice()[1].0, &w[2].0));
    let keep = keep.expect("the first login keeps its sets");
    assert!(p.same(&keep.last));
    assert_eq!(keep.defaults[1].1.as_ref(), "ISO, MDY");
}

#[test]
fn clients_that_want_the_same_values_share_one_set() {
    let cfg = Config::default();
    let w = server_welcome();
    let mut kept = None;
    let plain = login(&cfg, &w, &mut kept, &[]);
    let plain2 = login(&cfg, &w, &mut kept, &[("TimeZone", "UTC")]);
    assert!(
        plain2.same(&plain.0),
        "asking for the default is the default"
    );
    let a = login(&cfg, &w, &mut kept, &[("application_name", "pgbench")]);
    assert!(!a.same(&plain.0));
    let b = login(&cfg, &w, &mut kept, &[("application_name", "pgbench")]);
    assert!(b.same(&a.0), "the second client shares the first one's set");
    let c = login(&cfg, &w, &mut kept, &[("application_name", "psql")]);
    assert!(!c.same(&a.0));
    assert_eq!(&**c.get("APPLICATION_NAME").expect("tracked"), "psql");
    let plain3 = login(&cfg, &w, &mut kept, &[]);
    assert!(plain3.same(&plain.0), "the defaults stay shared");
}

#[test]
fn sets_made_from_another_welcome_or_tracked_list_are_not_used() {
    let mut cfg = Config::default();
    let w = server_welcome();
    let mut kept = None;
    let a = login(&cfg, &w, &mut kept, &[("application_name", "x")]);
    // A RELOAD that changed the target: the pool learns a new welcome.
    let w2 = welcome(&[("application_name", ""), ("TimeZone", "Europe/Paris")]);
    let b = login(&cfg, &w2, &mut kept, &[("application_name", "x")]);
    assert!(!b.same(&a.0));
    assert_eq!(&**b.get("timezone").expect("tracked"), "Europe/Paris");
    assert!(Arc::ptr_eq(&kept.as_ref().expect("kept").welcome, &w2));
    // A RELOAD that tracks one more name.
    cfg.general.track_extra_parameters = vec!["search_path".into()];
    let c = login(&cfg, &w2, &mut kept, &[("application_name", "x")]);
    assert!(!c.same(&b.0));
    assert_eq!(c.iter().count(), 8);
}

#[test]
fn a_change_copies_a_shared_set_first() {
    let cfg = Config::default();
    let w = server_welcome();
    let mut kept = None;
    let a = login(&cfg, &w, &mut kept, &[("application_name", "app")]);
    let mut b = login(&cfg, &w, &mut kept, &[("application_name", "app")]);
    assert!(b.same(&a.0));
    assert!(!b.update("TimeZone", "UTC"), "the same value is no change");
    assert!(b.same(&a.0));
    assert!(!b.update("work_mem", "1MB"), "not tracked");
    assert!(b.update("timezone", "Asia/Tokyo"));
    assert!(!b.same(&a.0));
    assert_eq!(&**b.get("TimeZone").expect("tracked"), "Asia/Tokyo");
    assert_eq!(
        &**a.get("TimeZone").expect("tracked"),
        "UTC",
        "a is untouched"
    );
}

#[test]
fn literals_are_quoted() {
    assert_eq!(quote_literal("it's"), "'it''s'");
    assert_eq!(quote_literal(""), "''");
}
