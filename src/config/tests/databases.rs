//! Config unit tests: `[databases]` entries, `[users]` settings and their precedence over
//! `[pgbouncer]`.

use super::*;

// ---------------------------------------------------------------- [databases]

#[test]
fn database_names_may_be_quoted() {
    let cfg = parse("[databases]\n\"my db\" = dbname=real\n\"we\"\"ird\" = port=1\nplain_1 =\n");
    assert_eq!(cfg.databases["my db"].dbname.as_deref(), Some("real"));
    assert_eq!(cfg.databases["we\"ird"].port, 1);
    assert_eq!(cfg.databases["plain_1"], DatabaseConfig::new("plain_1"));
    assert!(one_error("[databases]\n\"\" = port=1\n")
        .message
        .contains("empty"));
}

#[test]
fn connection_string_keys_and_quoting() {
    let cfg = parse(
        r"[databases]
app = host=/var/run/postgresql port=5433 dbname='my app' user=svc password='it''s a \'secret\' \\ x' pool_size=5 min_pool_size=1 reserve_pool=2 pool_mode=statement max_db_connections=50 server_lifetime=0.5 connect_query='SET x = 1' client_encoding=UTF8 datestyle='ISO, MDY' timezone=UTC application_name=pooler
",
    );
    let db = &cfg.databases["app"];
    assert_eq!(
        db.host,
        Some(ServerHost::Unix("/var/run/postgresql".into()))
    );
    assert_eq!(db.port, 5433);
    assert_eq!(db.dbname.as_deref(), Some("my app"));
    assert_eq!(db.user.as_deref(), Some("svc"));
    assert_eq!(db.password.as_deref(), Some("it's a 'secret' \\ x"));
    assert_eq!(
        (db.pool_size, db.min_pool_size, db.reserve_pool_size),
        (Some(5), Some(1), Some(2))
    );
    assert_eq!(db.pool_mode, Some(PoolMode::Statement));
    assert_eq!(db.max_db_connections, Some(50));
    assert_eq!(db.server_lifetime, Some(Duration::from_millis(500)));
    assert_eq!(db.connect_query.as_deref(), Some("SET x = 1"));
    assert_eq!(db.client_encoding.as_deref(), Some("UTF8"));
    assert_eq!(db.datestyle.as_deref(), Some("ISO, MDY"));
    assert_eq!(db.timezone.as_deref(), Some("UTC"));
    assert_eq!(db.application_name.as_deref(), Some("pooler"));
    assert!(cfg.unimplemented_keys.is_empty());

    let db = &parse("[databases]\nx = host = db.example  reserve_pool_size=4 password=''\n")
        .databases["x"];
    assert_eq!(db.host, Some(ServerHost::Tcp("db.example".into())));
    assert_eq!(
        (db.reserve_pool_size, db.password.as_deref()),
        (Some(4), Some(""))
    );
}

#[test]
fn host_lists_pair_hosts_with_ports() {
    let cfg = parse(
        "[databases]\nlist = host=a,/run/pg,c port=5433 load_balance_hosts=disable\n\
         pairs = host=a,b port=1,2\nsingle = host=a port=7\n",
    );
    let list = &cfg.databases["list"];
    assert_eq!(
        list.host_list().unwrap(),
        &[
            (ServerHost::Tcp("a".into()), 5433),
            (ServerHost::Unix("/run/pg".into()), 5433),
            (ServerHost::Tcp("c".into()), 5433),
        ]
    );
    assert_eq!(
        list.load_balance_hosts,
        crate::config::LoadBalanceHosts::Disable
    );
    assert_eq!(
        (list.host.clone(), list.port),
        (Some(ServerHost::Tcp("a".into())), 5433)
    );
    let pairs = &cfg.databases["pairs"];
    assert_eq!(
        pairs.host_list().unwrap(),
        &[
            (ServerHost::Tcp("a".into()), 1),
            (ServerHost::Tcp("b".into()), 2)
        ]
    );
    assert_eq!(
        pairs.load_balance_hosts,
        crate::config::LoadBalanceHosts::RoundRobin
    );
    let single = &cfg.databases["single"];
    assert!(single.host_list().is_none());
    assert_eq!(single.port, 7);
}

#[test]
fn connection_string_errors() {
    let err = |connstr: &str| one_error(&format!("[databases]\nd = {connstr}\n")).message;
    // PgBouncer's words first: its suite greps the log for them.
    assert!(err("host=a,b port=1,2,3").contains("invalid number of ports: 3 ports for 2 hosts"));
    assert!(err("host=a port=1,2").contains("invalid number of ports: 2 ports for 1 hosts"));
    assert!(err("port=1,2").contains("invalid number of ports (a port list needs a host list"));
    assert!(err("host=a,b load_balance_hosts=random").contains("round-robin or disable"));
    assert!(err("host=@abstract").contains("not supported"));
    assert!(err("port=0").contains("port number"));
    assert!(err("port=65536").contains("port number"));
    assert!(err("pool_mode=fast").contains("session, transaction or statement"));
    assert!(err("server_lifetime=-3").contains("seconds"));
    assert_eq!(
        err("sslmode=require"),
        "unrecognized connection parameter: sslmode"
    );
    assert!(err("host=").contains("empty value"));
}

#[test]
fn connection_string_errors_never_show_the_password() {
    for connstr in [
        "password='hunter2 and more",
        "password=hunter2 tail7",
        "password=hunter2 x y",
    ] {
        let errs = errors(&format!("[databases]\nd = host=h {connstr}\n"));
        let shown = ConfigErrors(errs).to_string();
        assert!(
            !shown.contains("hunter2") && !shown.contains("tail7"),
            "{shown}"
        );
    }
}

#[test]
fn connection_keys_of_newer_pgbouncers_are_implemented() {
    let cfg = parse(
        "[databases]\nd = auth_user=a auth_query='SELECT 1' auth_dbname=x \
         max_db_client_connections=1 load_balance_hosts=disable query_wait_timeout=3\n",
    );
    assert!(
        cfg.unimplemented_keys.is_empty(),
        "{:?}",
        cfg.unimplemented_keys
    );
    let d = &cfg.databases["d"];
    assert_eq!(d.max_db_client_connections, Some(1));
    assert_eq!(d.query_wait_timeout, Some(Duration::from_secs(3)));
    assert_eq!(
        (
            d.auth_user.as_deref(),
            d.auth_query.as_deref(),
            d.auth_dbname.as_deref()
        ),
        (Some("a"), Some("SELECT 1"), Some("x"))
    );
}

#[test]
fn fallback_database() {
    let cfg = parse("[databases]\nexact = host=h1 dbname=other\n* = host=h2 port=6000\n");
    let exact = cfg.database("exact").expect("exact entry");
    assert_eq!(
        (exact.name.as_str(), exact.dbname.as_deref()),
        ("exact", Some("other"))
    );
    let auto = cfg.database("anything").expect("fallback");
    assert_eq!(auto.name, "anything");
    assert_eq!(
        (auto.host, auto.port),
        (Some(ServerHost::Tcp("h2".into())), 6000)
    );
    assert!(!cfg.databases.contains_key("*"));
    assert_eq!(
        parse("[databases]\nexact = host=h\n").database("other"),
        None
    );
}

// ---------------------------------------------------------------- [users] and precedence

#[test]
fn users_section() {
    let cfg = parse(
        "[users]\nbob = pool_mode=session pool_size=3 reserve_pool_size=1 max_user_connections=9 \
         query_timeout=30 idle_transaction_timeout=1.5 client_idle_timeout=60\n\
         \"carol@corp\" = transaction_timeout=5 max_user_client_connections=2 query_wait_timeout=1\n",
    );
    let bob = &cfg.users["bob"];
    assert_eq!(bob.pool_mode, Some(PoolMode::Session));
    assert_eq!((bob.pool_size, bob.reserve_pool_size), (Some(3), Some(1)));
    assert_eq!(bob.max_user_connections, Some(9));
    assert_eq!(bob.query_timeout, Some(Duration::from_secs(30)));
    assert_eq!(
        bob.idle_transaction_timeout,
        Some(Duration::from_millis(1500))
    );
    assert_eq!(bob.client_idle_timeout, Some(Duration::from_secs(60)));
    let carol = &cfg.users["carol@corp"];
    assert_eq!(carol.name, "carol@corp");
    assert_eq!(carol.transaction_timeout, Some(Duration::from_secs(5)));
    assert_eq!(carol.max_user_client_connections, Some(2));
    assert_eq!(carol.query_wait_timeout, Some(Duration::from_secs(1)));
    assert!(cfg.unimplemented_keys.is_empty());
    // PgBouncer's "unset" spelling for the per-level query_wait_timeout.
    let cfg = parse(
        "[users]
dan = query_wait_timeout=-1
",
    );
    assert_eq!(cfg.users["dan"].query_wait_timeout, None);
    let e = one_error("[users]\nbob = pool_size=2 password=x\n");
    assert_eq!(
        (e.key.as_str(), e.message.as_str()),
        ("bob", "unrecognized user parameter: password")
    );
}

#[test]
fn pool_mode_and_size_precedence() {
    let cfg = parse(
        "[pgbouncer]\npool_mode = session\ndefault_pool_size = 20\nreserve_pool_size = 1\n\
         [databases]\ntx = pool_mode=transaction pool_size=10 reserve_pool=2\nplain =\n\
         [users]\nbob = pool_mode=statement pool_size=3 reserve_pool_size=4\nann = max_user_connections=1\n",
    );
    let (tx, plain) = (
        cfg.database("tx").expect("tx"),
        cfg.database("plain").expect("plain"),
    );
    assert_eq!(cfg.pool_mode(&tx, "bob"), PoolMode::Statement);
    assert_eq!(cfg.pool_mode(&tx, "ann"), PoolMode::Transaction);
    assert_eq!(cfg.pool_mode(&plain, "ann"), PoolMode::Session);
    assert_eq!(cfg.pool_size(&tx, "bob"), 3);
    assert_eq!(cfg.pool_size(&tx, "ann"), 10);
    assert_eq!(cfg.pool_size(&plain, "nobody"), 20);
    assert_eq!(cfg.reserve_pool_size(&tx, "bob"), 4);
    assert_eq!(cfg.reserve_pool_size(&tx, "ann"), 2);
    assert_eq!(cfg.reserve_pool_size(&plain, "ann"), 1);
}

#[test]
fn target_session_attrs_takes_pgbouncers_values() {
    let cfg = parse(
        "[databases]\nd = host=a,b target_session_attrs=primary\n\
         s = target_session_attrs=standby\nw = target_session_attrs=read-write\n\
         r = target_session_attrs=read-only\na = target_session_attrs=any\nn = port=1\n",
    );
    let tsa = |name: &str| cfg.databases[name].target_session_attrs;
    assert_eq!(tsa("d"), TargetSessionAttrs::Primary);
    assert_eq!(tsa("s"), TargetSessionAttrs::Standby);
    assert_eq!(tsa("w"), TargetSessionAttrs::ReadWrite);
    assert_eq!(tsa("r"), TargetSessionAttrs::ReadOnly);
    assert_eq!(tsa("a"), TargetSessionAttrs::Any);
    assert_eq!(tsa("n"), TargetSessionAttrs::Any, "the default");
    let err = |connstr: &str| one_error(&format!("[databases]\nd = {connstr}\n")).message;
    // PgBouncer's text; it has no prefer-standby, and the values are exact.
    assert!(err("target_session_attrs=prefer-standby")
        .contains("invalid target_session_attrs: prefer-standby"));
    assert!(err("target_session_attrs=Primary").contains("invalid target_session_attrs: Primary"));
    // Patroni-routed databases pick servers by role= already.
    let clustered = one_error(
        "[clusters]\nc = patroni=http://127.0.0.1:8008\n\
         [databases]\nd = cluster=c target_session_attrs=primary\n",
    );
    assert!(
        clustered.message.contains("use role= instead"),
        "{clustered:?}"
    );
}

#[test]
fn target_session_attrs_judges_the_reported_parameters() {
    use TargetSessionAttrs::*;
    let (on, off) = (Some("on"), Some("off"));
    assert!(Primary.accepts(off, on) && Primary.accepts(None, None));
    assert!(!Primary.accepts(on, on));
    assert!(Standby.accepts(on, off) && !Standby.accepts(off, on) && !Standby.accepts(None, None));
    assert!(ReadWrite.accepts(on, off) && !ReadWrite.accepts(off, on));
    assert!(ReadOnly.accepts(off, on) && !ReadOnly.accepts(on, None));
    assert!(Any.accepts(on, on) && Any.accepts(None, None));
}
