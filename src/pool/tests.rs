//! The pool state machine through a scripted [`Connector`] and tokio's paused clock: no
//! PostgreSQL, no real waiting. Server connections are one end of a Unix socket pair whose other
//! end the fake keeps open, so they look healthy while idle.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::net::UnixStream;
use tokio_util::task::TaskTracker;

use super::*;
use crate::error::Error;
use crate::net::Stream;
use crate::proto::build::ErrorFields;
use crate::server::{CancelTarget, ServerConn};

/// A logged-in-looking server connection over a socket pair, for fake connectors: the pool sees
/// a live socket (the test keeps the other end) reporting `server_version`.
pub(crate) fn fake_conn(target: &ServerTarget, server_version: &str) -> (ServerConn, UnixStream) {
    let (ours, theirs) = UnixStream::pair().expect("socketpair");
    let mut conn = ServerConn::new(
        Stream::Unix(ours),
        CancelTarget {
            host: target.host.clone(),
            port: target.port,
            addr: None,
            pid: 1,
            key: 1,
            inflight: Default::default(),
        },
        ("unix".into(), 0),
    );
    conn.params
        .push(("server_version".into(), server_version.into()));
    (conn, theirs)
}

/// What one connect attempt of the fake does.
#[derive(Clone, Copy)]
enum Outcome {
    /// Logs in.
    Ok,
    /// Connection refused.
    Refused,
    /// The server refuses the login with this SQLSTATE.
    Login(&'static str),
    /// A bug in the connector: it panics.
    Panic,
}

/// A connector that follows a script (then succeeds) and counts its calls.
#[derive(Default)]
struct Fake {
    script: Mutex<VecDeque<Outcome>>,
    calls: AtomicUsize,
    /// The server ends of the socket pairs, kept open so idle connections stay healthy.
    peers: Mutex<Vec<UnixStream>>,
}

impl Fake {
    fn scripted(outcomes: &[Outcome]) -> Arc<Fake> {
        let f = Fake::default();
        f.script.lock().extend(outcomes.iter().copied());
        Arc::new(f)
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

fn login_error(code: &str) -> Error {
    Error::ServerLogin(Box::new(ErrorFields {
        severity: "FATAL".into(),
        code: code.into(),
        message: format!("refused with {code}"),
        detail: None,
        hint: None,
        all: vec![],
    }))
}

impl Connector for Fake {
    fn connect<'a>(
        &'a self,
        target: &'a ServerTarget,
        _cred: &'a ServerCredential,
        _max_packet: u32,
    ) -> connector::ConnectFuture<'a> {
        Box::pin(async move {
            self.calls.fetch_add(1, Ordering::SeqCst);
            // A login takes a little (virtual) time, like a real one.
            tokio::time::sleep(Duration::from_millis(1)).await;
            let outcome = self.script.lock().pop_front().unwrap_or(Outcome::Ok);
            match outcome {
                Outcome::Ok => {
                    let (conn, theirs) = fake_conn(target, "16.0");
                    self.peers.lock().push(theirs);
                    Ok(conn)
                }
                Outcome::Refused => Err(Error::ServerConnect {
                    addr: format!("{}:{}", target.host_text(), target.port),
                    source: std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
                }),
                Outcome::Login(code) => Err(login_error(code)),
                Outcome::Panic => panic!("fake connector bug"),
            }
        })
    }
}

fn settings(pool_size: u32) -> PoolSettings {
    let mut cfg = Config::default();
    cfg.general.default_pool_size = pool_size;
    cfg.general.query_wait_timeout = Duration::from_secs(10);
    PoolSettings::resolve(&cfg, &DatabaseConfig::new("db"), "u")
}

fn target(port: u16) -> ServerTarget {
    ServerTarget {
        host: ServerHost::Tcp("10.0.0.1".into()),
        port,
        dbname: "db".into(),
        user: "u".into(),
        startup_params: vec![],
        connect_query: None,
        target_session_attrs: crate::config::TargetSessionAttrs::Any,
        connect_timeout: Duration::from_secs(15),
        tcp: Default::default(),
        tls: Default::default(),
    }
}

fn links(fake: &Arc<Fake>) -> PoolLinks {
    PoolLinks {
        db_conns: Default::default(),
        user_conns: Default::default(),
        tasks: TaskTracker::new(),
        servers: Arc::new(Servers::default()),
        connector: fake.clone(),
        cap_starved: Default::default(),
    }
}

fn key() -> PoolKey {
    PoolKey {
        db: "db".into(),
        user: "u".into(),
    }
}

fn fixed_set(fake: &Arc<Fake>, s: PoolSettings, book: Arc<PauseBook>) -> Arc<PoolSet> {
    PoolSet::fixed(
        key(),
        Arc::new(s),
        Arc::new(target(5432)),
        ServerCredential::None,
        links(fake),
        book,
    )
}

fn one_pool(fake: &Arc<Fake>, s: PoolSettings) -> Arc<Pool> {
    fixed_set(fake, s, Arc::default()).pools()[0].clone()
}

/// True when `fut` is still pending after `d` of virtual time.
async fn pending_for<T>(fut: impl std::future::Future<Output = T>, d: Duration) -> bool {
    tokio::time::timeout(d, fut).await.is_err()
}

#[tokio::test(start_paused = true)]
async fn checkout_release_reuses_the_server_and_counts_assignments() {
    let fake = Arc::new(Fake::default());
    let pool = one_pool(&fake, settings(2));
    let lease = pool.checkout().await.expect("checkout");
    let id = lease.id;
    assert_eq!(pool.snapshot().active, 1);
    lease.release(true);
    assert_eq!(pool.snapshot().idle, 1);
    let (again, check) = pool
        .try_take_idle(std::time::Instant::now())
        .expect("idle server");
    assert!(!check, "just used: no server_check_query due");
    assert_eq!(again.id, id);
    assert_eq!(fake.calls(), 1);
    assert_eq!(pool.stats.snapshot().server_assignment_count, 2);
    assert!(pool.welcome().is_some());
    // A lease dropped without release closes its server and frees the slot.
    drop(again);
    assert_eq!(pool.total(), 0);
    assert_eq!(pool.snapshot().active, 0);
}

/// A connector that panics (a bug) ends only its launch task: the pool gives the launch's slot
/// back, the queued client keeps waiting and is served by the next launch (the janitor's pass),
/// and the pool works on. Without the slot given back, a pool of 1 stays full for ever.
#[tokio::test(start_paused = true)]
async fn a_panicking_connector_frees_its_launch_slot() {
    let fake = Fake::scripted(&[Outcome::Panic]);
    let pool = one_pool(&fake, settings(1));
    let waiter = tokio::spawn({
        let pool = pool.clone();
        async move { pool.checkout().await }
    });
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(fake.calls(), 1, "the launch ran and panicked");
    assert_eq!(pool.total(), 0, "the panicked launch's slot is given back");
    assert_eq!(pool.snapshot().login, 0);
    assert_eq!(pool.snapshot().waiting, 1, "the client still waits");
    pool.maintain();
    let lease = waiter.await.expect("join").expect("served after the panic");
    assert_eq!(fake.calls(), 2);
    lease.release(true);
    assert_eq!((pool.total(), pool.snapshot().idle), (1, 1));
}

/// The fast path judges server_check_delay and server_lifetime by the caller's clock read (the
/// session's one read per transaction), under the same lock that pops the server.
#[tokio::test]
async fn taking_an_idle_server_judges_check_delay_and_lifetime_by_the_callers_clock() {
    let fake = Arc::new(Fake::default());
    let mut s = settings(2);
    s.server_check_query = "select 1".into();
    s.server_check_delay = Duration::from_secs(30);
    s.server_lifetime = Duration::from_secs(3600);
    let pool = one_pool(&fake, s);
    pool.checkout().await.expect("checkout").release(true);
    let now = std::time::Instant::now();
    let (lease, check) = pool.try_take_idle(now).expect("idle server");
    assert!(!check, "used a moment ago");
    lease.release(true);
    let (lease, check) = pool
        .try_take_idle(now + Duration::from_secs(31))
        .expect("idle server");
    assert!(check, "idle past server_check_delay: test it first");
    lease.release(true);
    assert!(
        pool.try_take_idle(now + Duration::from_secs(3601))
            .is_none(),
        "past server_lifetime: closed, not handed out"
    );
    assert_eq!(pool.total(), 0, "the expired server was closed");
    assert_eq!(fake.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn waiters_are_served_in_arrival_order() {
    let fake = Arc::new(Fake::default());
    let pool = one_pool(&fake, settings(1));
    let first = pool.checkout().await.expect("checkout");
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for n in 0..3 {
        let (pool, order) = (pool.clone(), order.clone());
        tasks.push(tokio::spawn(async move {
            let lease = pool.checkout().await.expect("served");
            order.lock().push(n);
            tokio::time::sleep(Duration::from_millis(10)).await;
            lease.release(true);
        }));
        // Let it queue before the next one arrives.
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(pool.snapshot().waiting, 3);
    first.release(true);
    for t in tasks {
        t.await.expect("task");
    }
    assert_eq!(*order.lock(), vec![0, 1, 2]);
    assert_eq!(fake.calls(), 1, "one server served everyone");
    assert!(pool.stats.snapshot().wait_time_us > 0);
}

#[tokio::test(start_paused = true)]
async fn query_wait_timeout_ends_a_wait_and_frees_its_place() {
    let fake = Arc::new(Fake::default());
    let pool = one_pool(&fake, settings(1));
    let held = pool.checkout().await.expect("checkout");
    let started = tokio::time::Instant::now();
    let r = pool.checkout().await;
    assert!(matches!(r, Err(Error::QueryWaitTimeout)), "{:?}", r.err());
    assert_eq!(started.elapsed(), Duration::from_secs(10));
    assert_eq!(pool.snapshot().waiting, 0);
    held.release(true);
    assert_eq!(pool.snapshot().idle, 1, "no one took the released server");
}

/// Counts nudges and when they came (query_wait_notify's hook).
#[derive(Default)]
struct Nudges(Mutex<Vec<tokio::time::Instant>>);

impl Nudge for Nudges {
    fn nudge(&self) {
        self.0.lock().push(tokio::time::Instant::now());
    }
}

#[tokio::test(start_paused = true)]
async fn a_queued_checkout_is_nudged_once_at_its_time_and_not_after_being_served() {
    let fake = Arc::new(Fake::default());
    let pool = one_pool(&fake, settings(1));
    let held = pool.checkout().await.expect("checkout");
    let started = tokio::time::Instant::now();
    let nudges = Arc::new(Nudges::default());
    let nudge: Nudging = Some((started + Duration::from_secs(3), nudges.clone()));
    let waiter = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.checkout_nudged(nudge).await.map(|l| l.id) })
    };
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(*nudges.0.lock(), vec![started + Duration::from_secs(3)]);
    held.release(true);
    waiter.await.expect("task").expect("served");
    // A nudge due after the wait ended never comes.
    let held = pool.checkout().await.expect("checkout");
    let later = Arc::new(Nudges::default());
    let nudge: Nudging = Some((
        tokio::time::Instant::now() + Duration::from_secs(3),
        later.clone(),
    ));
    let waiter = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.checkout_nudged(nudge).await.map(|l| l.id) })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    held.release(true);
    waiter.await.expect("task").expect("served");
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(later.0.lock().is_empty());
    assert_eq!(nudges.0.lock().len(), 1, "told once");
}

#[tokio::test(start_paused = true)]
async fn a_shorter_wait_queued_behind_a_longer_one_still_ends_on_time() {
    // One sweeper per pool sleeps until the earliest deadline: a waiter queued later with an
    // earlier deadline (query_wait_timeout lowered by a reload) must wake it early.
    let fake = Arc::new(Fake::default());
    let pool = one_pool(&fake, settings(1));
    let _held = pool.checkout().await.expect("checkout");
    let long = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.checkout().await.map(|l| l.id) })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut s = settings(1);
    s.query_wait_timeout = Duration::from_secs(2);
    pool.reconfigure(Arc::new(s), pool.target(), ServerCredential::None);
    let started = tokio::time::Instant::now();
    let r = pool.checkout().await;
    assert!(matches!(r, Err(Error::QueryWaitTimeout)), "{:?}", r.err());
    assert_eq!(started.elapsed(), Duration::from_secs(2));
    assert!(!long.is_finished(), "the first waiter keeps its own 10 s");
    let r = long.await.expect("task");
    assert!(matches!(r, Err(Error::QueryWaitTimeout)));
    assert_eq!(started.elapsed(), Duration::from_secs(9));
}

#[tokio::test(start_paused = true)]
async fn reserve_pool_opens_after_reserve_pool_timeout() {
    let fake = Arc::new(Fake::default());
    let mut s = settings(1);
    s.reserve_pool_size = 1;
    s.reserve_pool_timeout = Duration::from_secs(2);
    let pool = one_pool(&fake, s);
    let _held = pool.checkout().await.expect("checkout");
    let started = tokio::time::Instant::now();
    let second = pool.checkout().await.expect("a reserve server");
    assert!(started.elapsed() >= Duration::from_secs(2));
    assert_eq!(fake.calls(), 2);
    assert_eq!(pool.total(), 2);
    // The reserve is the limit: a third client waits until query_wait_timeout.
    assert!(matches!(
        pool.checkout().await,
        Err(Error::QueryWaitTimeout)
    ));
    drop(second);
}

#[tokio::test(start_paused = true)]
async fn each_pause_reason_is_lifted_only_by_its_owner() {
    let fake = Arc::new(Fake::default());
    let book = Arc::new(PauseBook::default());
    let set = fixed_set(&fake, settings(2), book.clone());
    let pool = set.pools()[0].clone();
    pool.checkout().await.expect("warm").release(true);

    set.set_booked(PauseReasons::ADMIN);
    set.hold(PauseReasons::FAILOVER_HOLD);
    assert!(
        pool.try_take_idle(std::time::Instant::now()).is_none(),
        "paused pools hand out nothing"
    );
    let waiter = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.checkout().await.map(|l| l.id) })
    };
    tokio::time::sleep(Duration::from_millis(5)).await;
    // RESUME lifts the admin reason only: the failover hold still holds.
    set.set_booked(PauseReasons::NONE);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!waiter.is_finished());
    assert_eq!(pool.pause_reasons(), PauseReasons::FAILOVER_HOLD);
    assert!(pool.snapshot().paused);
    set.release_hold(PauseReasons::FAILOVER_HOLD);
    waiter
        .await
        .expect("task")
        .expect("served once nothing holds it");
    assert!(pool.pause_reasons().is_empty());
    assert_eq!(fake.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn new_members_start_with_the_booked_and_held_reasons() {
    let fake = Arc::new(Fake::default());
    let book = Arc::new(PauseBook::default());
    book.insert(Some("db"), PauseReasons::ADMIN);
    let set = fixed_set(&fake, settings(2), book.clone());
    assert_eq!(set.pools()[0].pause_reasons(), PauseReasons::ADMIN);
    set.hold(PauseReasons::FAILOVER_HOLD);
    let added = set.add_member(ServerHost::Tcp("10.0.0.2".into()), 5432, Serves::REPLICA);
    assert_eq!(
        added.pause_reasons(),
        PauseReasons::ADMIN.union(PauseReasons::FAILOVER_HOLD)
    );
    // The book's owner cannot lift the hold.
    set.set_booked(PauseReasons::NONE);
    assert_eq!(added.pause_reasons(), PauseReasons::FAILOVER_HOLD);
    assert!(pending_for(added.checkout(), Duration::from_secs(1)).await);
}

#[tokio::test(start_paused = true)]
async fn a_refused_login_fails_the_queue_and_is_cached_for_server_login_retry() {
    let fake = Fake::scripted(&[Outcome::Login("28P01")]);
    let pool = one_pool(&fake, settings(2));
    let r = pool.checkout().await;
    assert!(matches!(&r, Err(Error::ServerLogin(f)) if f.code == "28P01"));
    // Within server_login_retry (15 s) the cached failure answers without a new login.
    let r = pool.checkout().await;
    assert!(
        matches!(r, Err(Error::ServerLoginRetry(_))),
        "{:?}",
        r.err()
    );
    assert_eq!(fake.calls(), 1);
    tokio::time::advance(Duration::from_secs(16)).await;
    pool.checkout()
        .await
        .expect("retried after server_login_retry");
    assert_eq!(fake.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn refused_connections_are_retried_while_a_client_waits() {
    let fake = Fake::scripted(&[Outcome::Refused, Outcome::Refused]);
    let pool = one_pool(&fake, settings(1));
    let lease = pool.checkout().await.expect("third attempt logs in");
    assert_eq!(fake.calls(), 3);
    assert_eq!(pool.total(), 1);
    lease.release(true);
}

#[tokio::test(start_paused = true)]
async fn a_lease_returns_to_the_member_it_came_from() {
    let fake = Arc::new(Fake::default());
    let set = PoolSet::new(
        key(),
        Arc::new(settings(2)),
        Arc::new(target(5432)),
        ServerCredential::None,
        links(&fake),
        Arc::default(),
    );
    let primary = set.add_member(ServerHost::Tcp("10.0.0.1".into()), 5432, Serves::PRIMARY);
    let replica = set.add_member(ServerHost::Tcp("10.0.0.2".into()), 5432, Serves::REPLICA);
    let mut to_replica = set.route(Role::Replica);
    let lease = to_replica.checkout().await.expect("replica server");
    assert!(Arc::ptr_eq(lease.pool(), &replica));
    assert_eq!(lease.cancel.host, ServerHost::Tcp("10.0.0.2".into()));
    lease.release(true);
    assert_eq!(replica.snapshot().idle, 1);
    assert_eq!(primary.snapshot().idle, 0);
    // No member serves sync: in a discovered set the client waits for one (a failover hold),
    // bounded by failover_hold_timeout and the normal queue limit (query_wait_timeout, 10 s
    // here, comes first), and never guesses.
    let started = tokio::time::Instant::now();
    let r = set.route(Role::Sync).checkout().await;
    assert!(matches!(r, Err(Error::QueryWaitTimeout)));
    assert_eq!(started.elapsed(), Duration::from_secs(10));
}

#[tokio::test(start_paused = true)]
async fn a_route_follows_the_primary_when_the_set_changes() {
    let fake = Arc::new(Fake::default());
    let set = fixed_set(&fake, settings(2), Arc::default());
    let old = set.pools()[0].clone();
    let mut route = set.route(Role::Primary);
    assert!(Arc::ptr_eq(route.pool().expect("a primary"), &old));
    let new_host = ServerHost::Tcp("10.0.0.2".into());
    let new = set.add_member(new_host.clone(), 5432, Serves::PRIMARY);
    set.add_member(ServerHost::Tcp("10.0.0.1".into()), 5432, Serves::REPLICA);
    assert!(Arc::ptr_eq(route.pool().expect("a primary"), &new));
    // A removed member's queued clients are told, and the route stops using it.
    set.remove_member(&new_host, 5432).expect("was a member");
    assert!(matches!(
        route.pool(),
        Err(Error::NoServerForRole("primary"))
    ));
    assert_eq!(set.members().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_server_starting_up_keeps_clients_queued_and_is_not_cached() {
    // 57P03 "the database system is starting up": every restart and switchover shows it.
    let fake = Fake::scripted(&[Outcome::Login("57P03"), Outcome::Login("57P03")]);
    let pool = one_pool(&fake, settings(1));
    let lease = pool.checkout().await.expect("served once the server is up");
    assert_eq!(fake.calls(), 3);
    lease.release(true);
    // Nothing was cached: a client that finds no idle server gets a new login at once.
    let _held = pool.checkout().await.expect("idle server");
    let mut s = settings(2);
    s.query_wait_timeout = Duration::from_secs(1);
    let fake = Fake::scripted(&[Outcome::Login("57P03")]);
    let pool = one_pool(&fake, s);
    pool.checkout().await.expect("retried");
    assert_eq!(fake.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn query_timeout_also_bounds_the_wait_for_a_server() {
    let fake = Arc::new(Fake::default());
    let mut s = settings(1);
    s.query_timeout = Duration::from_secs(3);
    let pool = one_pool(&fake, s);
    let _held = pool.checkout().await.expect("checkout");
    let started = tokio::time::Instant::now();
    let r = pool.checkout().await;
    assert!(
        matches!(r, Err(Error::QueryTimeoutWaiting)),
        "{:?}",
        r.err()
    );
    assert_eq!(started.elapsed(), Duration::from_secs(3));
    // The shorter of the two wins: here query_wait_timeout.
    let mut s = settings(1);
    s.query_timeout = Duration::from_secs(30);
    let pool = one_pool(&fake, s);
    let _held = pool.checkout().await.expect("checkout");
    assert!(matches!(
        pool.checkout().await,
        Err(Error::QueryWaitTimeout)
    ));
}

#[tokio::test(start_paused = true)]
async fn min_pool_size_is_filled_within_pool_size_and_the_user_cap() {
    let fake = Arc::new(Fake::default());
    let mut s = settings(2);
    s.min_pool_size = 5;
    s.forced_user = true;
    let pool = one_pool(&fake, s.clone());
    pool.maintain();
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!((pool.total(), fake.calls()), (2, 2), "capped at pool_size");

    let fake = Arc::new(Fake::default());
    s.pool_size = 10;
    s.max_user_connections = 1;
    let pool = one_pool(&fake, s);
    pool.maintain();
    pool.maintain();
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(
        (pool.total(), fake.calls()),
        (1, 1),
        "capped at max_user_connections"
    );
}

#[tokio::test(start_paused = true)]
async fn forced_user_pools_are_filled_before_any_client() {
    let fake = Arc::new(Fake::default());
    let pools = Pools::with_connector(TaskTracker::new(), fake.clone());
    let mut cfg = Config::default();
    let mut db = DatabaseConfig::new("forced");
    db.host = Some(ServerHost::Tcp("10.0.0.1".into()));
    db.user = Some("owner".into());
    db.min_pool_size = Some(2);
    cfg.databases.insert("forced".into(), db);
    // Without a forced user, a database gets pools only when clients come.
    let mut per_client = DatabaseConfig::new("per_client");
    per_client.min_pool_size = Some(2);
    cfg.databases.insert("per_client".into(), per_client);
    pools.open_forced_user_pools(&cfg);
    let all = pools.all();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].key.user, "owner");
    all[0].maintain();
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(all[0].snapshot().idle, 2);
    assert_eq!(fake.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn max_user_connections_evicts_an_idle_server_of_the_users_other_pool() {
    let fake = Arc::new(Fake::default());
    let pools = Pools::with_connector(TaskTracker::new(), fake.clone());
    let mut cfg = Config::default();
    cfg.general.max_user_connections = 1;
    cfg.general.query_wait_timeout = Duration::from_secs(10);
    let mut a = DatabaseConfig::new("a");
    a.host = Some(ServerHost::Tcp("10.0.0.1".into()));
    let mut b = a.clone();
    b.name = "b".into();
    let pool_a = pools.get_or_create(&cfg, &a, "u").pools()[0].clone();
    let pool_b = pools.get_or_create(&cfg, &b, "u").pools()[0].clone();
    pool_a.checkout().await.expect("a's server").release(true);
    let waiter = tokio::spawn(async move { pool_b.checkout().await.map(|l| l.id) });
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert!(
        !waiter.is_finished(),
        "the user's only slot is idle in pool a"
    );
    pools.janitor_step();
    let served = tokio::time::timeout(Duration::from_secs(1), waiter).await;
    served
        .expect("served before query_wait_timeout")
        .expect("task")
        .expect("a server of b");
    assert_eq!(pool_a.total(), 0, "a's idle server made room");
    assert_eq!(fake.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_client_queued_on_max_db_connections_is_served_before_the_next_janitor_tick() {
    let fake = Arc::new(Fake::default());
    let pools = Arc::new(Pools::with_connector(TaskTracker::new(), fake.clone()));
    let mut cfg = Config::default();
    cfg.general.max_db_connections = 1;
    cfg.general.query_wait_timeout = Duration::from_secs(10);
    let mut a = DatabaseConfig::new("a");
    a.host = Some(ServerHost::Tcp("10.0.0.1".into()));
    let pool_1 = pools.get_or_create(&cfg, &a, "u1").pools()[0].clone();
    let pool_2 = pools.get_or_create(&cfg, &a, "u2").pools()[0].clone();
    pool_1.checkout().await.expect("u1's server").release(true);
    let shutdown = tokio_util::sync::CancellationToken::new();
    let cfg = Arc::new(cfg);
    let janitor = tokio::spawn(
        pools
            .clone()
            .run_janitor(shutdown.clone(), Box::new(move || cfg.clone())),
    );
    // The janitor's first tick is immediate; let it pass with nobody starved.
    tokio::task::yield_now().await;
    let waiter = tokio::spawn(async move { pool_2.checkout().await.map(|l| l.id) });
    // Virtual time: the next tick is 250 ms away; the queued client is served before it, as
    // PgBouncer evicts when it launches.
    let served = tokio::time::timeout(Duration::from_millis(100), waiter).await;
    served
        .expect("served without waiting for the next tick")
        .expect("task")
        .expect("a server of u2");
    assert_eq!(pool_1.total(), 0, "u1's idle server made room");
    shutdown.cancel();
    janitor.await.expect("janitor");
}

/// A release at the caller's clock reading (the session's last ReadyForQuery) books that reading
/// as the server's last use, and a queued checkout hands back the reading that ended its wait,
/// which the session starts its transaction's clocks with: neither reads the clock again.
#[tokio::test]
async fn clock_readings_travel_with_the_lease() {
    let fake = Arc::new(Fake::default());
    let pool = one_pool(&fake, settings(1));
    let first = pool.checkout().await.expect("checkout");
    let waiter = tokio::spawn({
        let pool = pool.clone();
        async move { pool.checkout().await }
    });
    while pool.snapshot().waiting == 0 {
        tokio::task::yield_now().await;
    }
    let quiet = std::time::Instant::now()
        .checked_sub(Duration::from_millis(5))
        .expect("a moment ago");
    first.release_at(true, quiet);
    let lease = waiter.await.expect("join").expect("served");
    assert_eq!(
        lease.last_used, quiet,
        "the caller's reading is the last use"
    );
    let ended = lease
        .taken_at()
        .expect("a queued checkout's end comes with it");
    assert!(ended >= quiet);
    lease.release(true);
    let (idle, _) = pool
        .try_take_idle(std::time::Instant::now())
        .expect("idle server");
    assert!(
        idle.taken_at().is_none(),
        "taken at once: the caller has its own reading"
    );
    idle.release(true);
}

/// A queued checkout waits on a seat the pool keeps for the next one, so a wait allocates
/// nothing; a client that gives up leaves its seat closed, and nothing is handed to it.
#[tokio::test]
async fn queued_checkouts_reuse_their_hand_off_seat() {
    let fake = Arc::new(Fake::default());
    let pool = one_pool(&fake, settings(1));
    let mut lease = pool.checkout().await.expect("checkout");
    assert_eq!(
        pool.spare_seats(),
        1,
        "the first wait (a launch) kept its seat"
    );
    for _ in 0..3 {
        let waiter = tokio::spawn({
            let pool = pool.clone();
            async move { pool.checkout().await }
        });
        while pool.snapshot().waiting == 0 {
            tokio::task::yield_now().await;
        }
        assert_eq!(
            pool.spare_seats(),
            0,
            "the queued client sits on the kept seat"
        );
        lease.release(true);
        lease = waiter.await.expect("join").expect("served");
        assert_eq!(pool.spare_seats(), 1, "and gives it back");
    }
    let gone = tokio::spawn({
        let pool = pool.clone();
        async move { pool.checkout().await }
    });
    while pool.snapshot().waiting == 0 {
        tokio::task::yield_now().await;
    }
    gone.abort();
    let _ = gone.await;
    assert_eq!(
        pool.snapshot().waiting,
        0,
        "the gone client no longer counts"
    );
    lease.release(true);
    assert_eq!(
        pool.snapshot().idle,
        1,
        "the server went idle, not to the client that gave up"
    );
    assert_eq!(fake.calls(), 1);
}

mod hosts;
