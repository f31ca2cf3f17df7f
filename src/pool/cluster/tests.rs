//! The cluster router through a scripted connector and tokio's paused clock: confirmation, the
//! failover hold (leader change, leader gone, node in recovery, timeout, role-change signal),
//! the drain onto the new leader, and the routing plan (replica filter, lag, noloadbalance,
//! fallback, sync, bans). No PostgreSQL, no Patroni: topologies are built by hand.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::net::UnixStream;
use tokio::sync::watch;
use tokio_util::task::TaskTracker;

use super::*;
use crate::config::{DatabaseConfig, ReplicaFallback};
use crate::discovery::{ClusterState, Lag, Member, Tags};
use crate::error::Error;
use crate::pool::connector::{ConnectFuture, RecoveryFuture};
use crate::pool::{PauseBook, PoolKey, PoolLinks, PoolSettings};
use crate::server::{ServerConn, ServerCredential, ServerTarget, Servers};

/// How a member answers the fake.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Node {
    Primary,
    InRecovery,
    Refused,
}

/// A connector whose answer depends on the port: a scripted cluster.
#[derive(Default)]
struct FakeCluster {
    nodes: Mutex<HashMap<u16, Node>>,
    peers: Mutex<Vec<UnixStream>>,
    connects: AtomicUsize,
}

impl FakeCluster {
    fn set(&self, port: u16, node: Node) {
        self.nodes.lock().insert(port, node);
    }
    fn node(&self, port: u16) -> Node {
        self.nodes
            .lock()
            .get(&port)
            .copied()
            .unwrap_or(Node::Refused)
    }
}

impl Connector for FakeCluster {
    fn connect<'a>(
        &'a self,
        target: &'a ServerTarget,
        _cred: &'a ServerCredential,
        _max_packet: u32,
    ) -> ConnectFuture<'a> {
        Box::pin(async move {
            self.connects.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(1)).await;
            if self.node(target.port) == Node::Refused {
                return Err(Error::ServerConnect {
                    addr: format!("{}:{}", target.host_text(), target.port),
                    source: std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
                });
            }
            let (conn, theirs) = crate::pool::tests::fake_conn(target, "15.0");
            self.peers.lock().push(theirs);
            Ok(conn)
        })
    }

    fn in_recovery<'a>(&'a self, conn: &'a mut ServerConn, _max: u32) -> RecoveryFuture<'a> {
        let port = conn.cancel.port;
        Box::pin(async move { Ok(self.node(port) != Node::Primary) })
    }
}

fn member(name: &str, role: &str, state: &str, port: u16, lag: Option<Lag>) -> Member {
    Member {
        name: name.into(),
        role: MemberRole::from_patroni(role),
        state: state.into(),
        host: Some("10.0.0.1".into()),
        port: Some(port),
        timeline: Some(1),
        lag,
        tags: Tags::default(),
        api_url: None,
    }
}

fn topology(members: Vec<Member>) -> Topology {
    let leader = members
        .iter()
        .find(|m| m.role.is_leader())
        .map(|m| m.name.clone());
    Topology {
        state: ClusterState {
            members,
            leader,
            ..Default::default()
        },
        ..Default::default()
    }
}

/// node1 leader on port 1, node2 sync standby on port 2.
fn healthy() -> Topology {
    topology(vec![
        member("node1", "leader", "running", 1, None),
        member("node2", "sync_standby", "streaming", 2, Some(Lag::Bytes(0))),
    ])
}

fn addr(port: u16) -> Addr {
    (ServerHost::Tcp("10.0.0.1".into()), port)
}

const KNOBS: Knobs = Knobs {
    max_replica_lag: 1000,
    fallback: ReplicaFallback::Primary,
};

struct Lab {
    fake: Arc<FakeCluster>,
    router: Arc<ClusterRouter>,
    pokes: Arc<AtomicUsize>,
    tasks: TaskTracker,
}

impl Lab {
    fn new() -> Lab {
        let fake = Arc::new(FakeCluster::default());
        let pokes = Arc::new(AtomicUsize::new(0));
        let p = pokes.clone();
        let (_tx, rx) = watch::channel(Arc::new(Topology::default()));
        let router = ClusterRouter::new(
            "c",
            rx,
            Box::new(move || {
                p.fetch_add(1, Ordering::SeqCst);
            }),
            fake.clone(),
            KNOBS,
        );
        Lab {
            fake,
            router,
            pokes,
            tasks: TaskTracker::new(),
        }
    }

    fn set(&self, role: Role, hold: Duration) -> Arc<PoolSet> {
        let mut cfg = crate::config::Config::default();
        cfg.general.failover_hold_timeout = hold;
        cfg.general.query_wait_timeout = Duration::from_secs(120);
        let settings = PoolSettings::resolve(&cfg, &DatabaseConfig::new("db"), "u");
        let target = ServerTarget {
            host: ServerHost::Unix("/nonexistent".into()),
            port: 5432,
            dbname: "db".into(),
            user: "u".into(),
            startup_params: vec![],
            connect_query: None,
            target_session_attrs: crate::config::TargetSessionAttrs::Any,
            connect_timeout: Duration::from_secs(15),
            tcp: Default::default(),
            tls: Default::default(),
        };
        let set = PoolSet::new(
            PoolKey {
                db: format!("db_{}", role.as_str()),
                user: "u".into(),
            },
            Arc::new(settings),
            Arc::new(target),
            ServerCredential::None,
            PoolLinks {
                db_conns: Default::default(),
                user_conns: Default::default(),
                tasks: self.tasks.clone(),
                servers: Arc::new(Servers::default()),
                connector: self.fake.clone(),
                cap_starved: Default::default(),
            },
            Arc::new(PauseBook::default()),
        );
        self.router.add_set(&set, role);
        set
    }
}

fn picked_port(set: &Arc<PoolSet>, role: Role) -> Option<u16> {
    set.pick(role).map(|p| p.target().port)
}

#[tokio::test(start_paused = true)]
async fn leader_is_confirmed_before_it_serves_the_primary_role() {
    let lab = Lab::new();
    let primary = lab.set(Role::Primary, Duration::from_secs(30));
    let replica = lab.set(Role::Replica, Duration::from_secs(30));
    // The template's host is never a member: nothing serves until the topology says so.
    assert!(primary.members().is_empty());
    lab.fake.set(1, Node::Primary);
    lab.fake.set(2, Node::InRecovery);
    lab.router.step(&healthy()).await;
    assert_eq!(picked_port(&primary, Role::Primary), Some(1));
    assert_eq!(picked_port(&replica, Role::Replica), Some(2));
    assert_eq!(lab.router.view().confirmed.as_deref(), Some("node1"));
    assert!(lab.router.view().hold.is_none());
    // Every member of the topology has a pool; only the leader's checks new connections.
    let members = primary.members();
    assert_eq!(members.len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_leader_in_recovery_is_never_confirmed() {
    let lab = Lab::new();
    let primary = lab.set(Role::Primary, Duration::from_secs(30));
    // Patroni says node1 leads, but node1 answers as a standby: hold, never guess.
    lab.fake.set(1, Node::InRecovery);
    lab.fake.set(2, Node::InRecovery);
    for _ in 0..3 {
        lab.router.step(&healthy()).await;
    }
    assert_eq!(picked_port(&primary, Role::Primary), None);
    let view = lab.router.view();
    assert_eq!(view.confirmed, None);
    assert!(view
        .last_confirm_error
        .is_some_and(|e| e.contains("in recovery")));
    assert!(
        lab.pokes.load(Ordering::SeqCst) >= 3,
        "polls faster while unconfirmed"
    );
}

#[tokio::test(start_paused = true)]
async fn leader_change_holds_then_drains_the_queue_onto_the_new_leader() {
    let lab = Lab::new();
    let primary = lab.set(Role::Primary, Duration::from_secs(30));
    lab.fake.set(1, Node::Primary);
    lab.fake.set(2, Node::InRecovery);
    lab.router.step(&healthy()).await;
    let old = primary.pick(Role::Primary).expect("node1 serves");

    // Switchover: node1 shuts down, Patroni names node2, which is still promoting.
    lab.fake.set(1, Node::Refused);
    let switched = topology(vec![
        member("node1", "replica", "stopped", 1, None),
        member("node2", "leader", "running", 2, None),
    ]);
    lab.router.step(&switched).await;
    assert_eq!(picked_port(&primary, Role::Primary), None, "held");
    let view = lab.router.view();
    assert!(view.hold.is_some());
    assert_eq!(view.holds_total, 1);

    // A client between transactions queues: latency, not an error.
    let mut route = primary.route(Role::Primary);
    let waiter =
        tokio::spawn(async move { route.checkout().await.map(|l| l.pool().target().port) });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(primary.held_clients(), 1);
    assert!(!waiter.is_finished());

    // node2 finishes promoting: confirmed, the hold ends, the queue drains onto it.
    lab.fake.set(2, Node::Primary);
    lab.router.step(&switched).await;
    let port = waiter.await.expect("join").expect("served after the hold");
    assert_eq!(port, 2);
    let view = lab.router.view();
    assert_eq!(view.confirmed.as_deref(), Some("node2"));
    assert!(view.hold.is_none());
    assert!(view.last_hold.is_some());
    // The old leader's generation was retired: its servers close as they come back.
    assert!(old.target().port == 1);
    assert_eq!(primary.held_clients(), 0);
}

#[tokio::test(start_paused = true)]
async fn leader_vanishing_holds_until_the_timeout() {
    let lab = Lab::new();
    let primary = lab.set(Role::Primary, Duration::from_secs(5));
    lab.fake.set(1, Node::Primary);
    lab.router.step(&healthy()).await;
    assert_eq!(picked_port(&primary, Role::Primary), Some(1));
    // kill -9 and the lease expired: no leader at all.
    lab.fake.set(1, Node::Refused);
    let leaderless = topology(vec![member("node2", "sync_standby", "running", 2, None)]);
    lab.router.step(&leaderless).await;
    assert!(lab.router.view().hold.is_some());
    let mut route = primary.route(Role::Primary);
    let started = tokio::time::Instant::now();
    let err = route.checkout().await.err().expect("no leader came");
    assert!(matches!(err, Error::FailoverHoldTimeout), "{err:?}");
    assert_eq!(started.elapsed(), Duration::from_secs(5));
    assert_eq!(
        err.to_response().2,
        "failover_hold_timeout",
        "PgBouncer-style text"
    );
}

#[tokio::test(start_paused = true)]
async fn role_change_signal_rechecks_the_leader() {
    let lab = Lab::new();
    let primary = lab.set(Role::Primary, Duration::from_secs(30));
    lab.fake.set(1, Node::Primary);
    lab.fake.set(2, Node::InRecovery);
    lab.router.step(&healthy()).await;
    let pool = primary.pick(Role::Primary).expect("node1 serves");

    // A 57P01 on one backend (pg_terminate_backend): the leader re-confirms at once.
    pool.report(Signal::Sqlstate);
    lab.router.step(&healthy()).await;
    assert_eq!(picked_port(&primary, Role::Primary), Some(1));
    assert_eq!(lab.router.view().last_hold.map(|_| ()), Some(()));

    // The leader's connections are refused while Patroni still lists it (the stale /cluster
    // after a kill -9): hold, and keep holding.
    lab.fake.set(1, Node::Refused);
    pool.report(Signal::Refused);
    let pokes = lab.pokes.load(Ordering::SeqCst);
    lab.router.step(&healthy()).await;
    lab.router.step(&healthy()).await;
    assert_eq!(picked_port(&primary, Role::Primary), None);
    assert!(lab.router.view().hold.is_some());
    assert!(lab.pokes.load(Ordering::SeqCst) > pokes, "discovery poked");
    // A queued client moves to node2 once Patroni promotes it.
    let mut route = primary.route(Role::Primary);
    let waiter =
        tokio::spawn(async move { route.checkout().await.map(|l| l.pool().target().port) });
    tokio::time::sleep(Duration::from_secs(10)).await;
    lab.fake.set(2, Node::Primary);
    let promoted = topology(vec![member("node2", "leader", "running", 2, None)]);
    lab.router.step(&promoted).await;
    assert_eq!(waiter.await.expect("join").expect("served"), 2);
    // node1 left the topology: its pool is gone from the set.
    assert_eq!(primary.members().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn new_primary_connections_are_checked_while_serving() {
    let lab = Lab::new();
    let primary = lab.set(Role::Primary, Duration::from_secs(30));
    lab.fake.set(1, Node::Primary);
    lab.router.step(&healthy()).await;
    // node1 was demoted behind Patroni's back: the next new connection finds it in recovery,
    // is never handed out, and the router holds.
    lab.fake.set(1, Node::InRecovery);
    let mut route = primary.route(Role::Primary);
    let waiter =
        tokio::spawn(async move { route.checkout().await.map(|l| l.pool().target().port) });
    tokio::time::sleep(Duration::from_millis(50)).await;
    lab.router.step(&healthy()).await;
    assert!(lab.router.view().hold.is_some());
    assert_eq!(picked_port(&primary, Role::Primary), None);
    assert!(
        !waiter.is_finished(),
        "the client waits; nothing was sent anywhere"
    );
    lab.fake.set(1, Node::Primary);
    lab.router.step(&healthy()).await;
    assert_eq!(waiter.await.expect("join").expect("served"), 1);
}

#[tokio::test(start_paused = true)]
async fn hold_does_not_block_replica_reads() {
    let lab = Lab::new();
    let primary = lab.set(Role::Primary, Duration::from_secs(30));
    let replica = lab.set(Role::Replica, Duration::from_secs(30));
    lab.fake.set(1, Node::Refused);
    lab.fake.set(2, Node::InRecovery);
    lab.router.step(&healthy()).await;
    assert_eq!(picked_port(&primary, Role::Primary), None);
    let mut route = replica.route(Role::Replica);
    let lease = route
        .checkout()
        .await
        .expect("replica read during the hold");
    assert_eq!(lease.pool().target().port, 2);
}

#[tokio::test(start_paused = true)]
async fn failing_replica_is_banned_but_never_the_last_server() {
    let lab = Lab::new();
    let replica = lab.set(Role::Replica, Duration::from_secs(30));
    let three = topology(vec![
        member("node1", "leader", "running", 1, None),
        member("node2", "sync_standby", "streaming", 2, Some(Lag::Bytes(0))),
        member("node3", "replica", "streaming", 3, Some(Lag::Bytes(10))),
    ]);
    lab.fake.set(1, Node::Primary);
    lab.router.step(&three).await;
    let serving = |set: &Arc<PoolSet>| -> HashSet<u16> {
        set.members()
            .iter()
            .filter(|m| m.serves.serves(Role::Replica))
            .map(|m| m.port)
            .collect()
    };
    assert_eq!(serving(&replica), HashSet::from([2, 3]));
    let node3 = replica
        .members()
        .into_iter()
        .find(|m| m.port == 3)
        .expect("member");
    node3.pool.report(Signal::Refused);
    lab.router.step(&three).await;
    assert_eq!(serving(&replica), HashSet::from([2]));
    assert_eq!(lab.router.view().bans.len(), 1);
    // After the ban time node3 is back.
    tokio::time::advance(BAN_TIME + Duration::from_millis(1)).await;
    lab.router.step(&three).await;
    assert_eq!(serving(&replica), HashSet::from([2, 3]));
}

/// A plan for one role with `banned` members.
fn serving(
    t: &Topology,
    confirmed: Option<u16>,
    banned: &[u16],
    role: Role,
    knobs: Knobs,
) -> Vec<u16> {
    let banned: HashSet<Addr> = banned.iter().map(|p| addr(*p)).collect();
    let confirmed = confirmed.map(addr);
    let mut v: Vec<u16> = plan(t, confirmed.as_ref(), &banned, role, knobs)
        .into_iter()
        .filter(|(_, s)| s.serves(role))
        .map(|(a, _)| a.1)
        .collect();
    v.sort();
    v
}

#[test]
fn plan_filters_replicas_by_state_lag_and_tags() {
    let mut lagging = member("n3", "replica", "streaming", 3, Some(Lag::Bytes(5000)));
    lagging.tags = Tags::default();
    let mut nolb = member("n4", "replica", "streaming", 4, Some(Lag::Bytes(0)));
    nolb.tags.noloadbalance = true;
    let t = topology(vec![
        member("n1", "leader", "running", 1, None),
        member("n2", "sync_standby", "streaming", 2, Some(Lag::Bytes(0))),
        lagging,
        nolb,
        member("n5", "replica", "starting", 5, Some(Lag::Bytes(0))),
        member("n6", "replica", "running", 6, Some(Lag::Unknown)),
    ]);
    // Lag under the limit, running, load-balanced: n2 only (n6's lag is unknown).
    assert_eq!(serving(&t, Some(1), &[], Role::Replica, KNOBS), [2]);
    // No limit: n3 too.
    let unlimited = Knobs {
        max_replica_lag: 0,
        ..KNOBS
    };
    assert_eq!(serving(&t, Some(1), &[], Role::Replica, unlimited), [2, 3]);
    assert_eq!(serving(&t, Some(1), &[], Role::Sync, KNOBS), [2]);
    assert_eq!(serving(&t, Some(1), &[], Role::Primary, KNOBS), [1]);
    assert_eq!(
        serving(&t, None, &[], Role::Primary, KNOBS),
        Vec::<u16>::new()
    );
    assert_eq!(serving(&t, Some(1), &[], Role::Any, KNOBS), [1, 2]);
}

#[test]
fn plan_uses_unknown_lag_only_when_nothing_better_then_falls_back() {
    let t = topology(vec![
        member("n1", "leader", "running", 1, None),
        member("n2", "replica", "running", 2, Some(Lag::Unknown)),
    ]);
    assert_eq!(serving(&t, Some(1), &[], Role::Replica, KNOBS), [2]);
    let t = topology(vec![
        member("n1", "leader", "running", 1, None),
        member("n2", "replica", "stopped", 2, None),
    ]);
    // No usable replica: the confirmed leader, or nobody with replica_fallback = none.
    assert_eq!(serving(&t, Some(1), &[], Role::Replica, KNOBS), [1]);
    assert_eq!(
        serving(&t, None, &[], Role::Replica, KNOBS),
        Vec::<u16>::new()
    );
    let none = Knobs {
        fallback: ReplicaFallback::None,
        ..KNOBS
    };
    assert_eq!(
        serving(&t, Some(1), &[], Role::Replica, none),
        Vec::<u16>::new()
    );
    // role=sync never falls back.
    assert_eq!(
        serving(&t, Some(1), &[], Role::Sync, KNOBS),
        Vec::<u16>::new()
    );
}

#[test]
fn plan_bans_never_remove_the_last_server() {
    let t = healthy();
    // The banned sync standby: with the leader as fallback, reads go there.
    assert_eq!(serving(&t, Some(1), &[2], Role::Replica, KNOBS), [1]);
    // Without a fallback the last replica stays, banned or not.
    let none = Knobs {
        fallback: ReplicaFallback::None,
        ..KNOBS
    };
    assert_eq!(serving(&t, Some(1), &[2], Role::Replica, none), [2]);
    assert_eq!(serving(&t, Some(1), &[2], Role::Sync, KNOBS), [2]);
    // With two replicas, one banned: the other.
    let t = topology(vec![
        member("n1", "leader", "running", 1, None),
        member("n2", "replica", "streaming", 2, Some(Lag::Bytes(0))),
        member("n3", "replica", "streaming", 3, Some(Lag::Bytes(0))),
    ]);
    assert_eq!(serving(&t, Some(1), &[3], Role::Replica, KNOBS), [2]);
}

#[test]
fn plan_ignores_members_without_address_and_standby_leaders_for_writes() {
    let mut unknown = member("n3", "replica", "streaming", 3, Some(Lag::Bytes(0)));
    unknown.host = None;
    let t = topology(vec![
        member("n1", "standby_leader", "running", 1, None),
        unknown,
    ]);
    assert_eq!(plan(&t, None, &HashSet::new(), Role::Any, KNOBS).len(), 1);
    // A standby leader is read-only: it serves reads, never writes.
    assert_eq!(serving(&t, None, &[], Role::Replica, KNOBS), [1]);
    assert_eq!(
        serving(&t, None, &[], Role::Primary, KNOBS),
        Vec::<u16>::new()
    );
}
