//! Host lists: fall-through past refused hosts and load_balance_hosts.

use super::*;

/// Refuses every connection to `down` ports; the rest go to the fake.
struct ByPort {
    fake: Arc<Fake>,
    down: Vec<u16>,
}

impl Connector for ByPort {
    fn connect<'a>(
        &'a self,
        target: &'a ServerTarget,
        cred: &'a ServerCredential,
        max_packet: u32,
    ) -> connector::ConnectFuture<'a> {
        if self.down.contains(&target.port) {
            return Box::pin(async move {
                Err(Error::ServerConnect {
                    addr: format!("{}:{}", target.host_text(), target.port),
                    source: std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
                })
            });
        }
        self.fake.connect(target, cred, max_packet)
    }
}

fn host_list_set(down: &[u16], balance: crate::config::LoadBalanceHosts) -> Arc<PoolSet> {
    let fake = Fake::scripted(&[]);
    let mut l = links(&fake);
    l.connector = Arc::new(ByPort {
        fake,
        down: down.to_vec(),
    });
    let host = ServerHost::Tcp("10.0.0.1".into());
    let set = PoolSet::host_list(
        key(),
        Arc::new(settings(2)),
        Arc::new(target(1)),
        ServerCredential::None,
        l,
        Arc::new(PauseBook::default()),
    );
    set.set_host_list(&[(host.clone(), 1), (host, 2)], balance);
    set
}

#[tokio::test(start_paused = true)]
async fn host_list_client_falls_through_to_the_next_host() {
    let set = host_list_set(&[1], crate::config::LoadBalanceHosts::Disable);
    let mut route = set.route(Role::Any);
    let lease = route.checkout().await.expect("served by the second host");
    assert_eq!(lease.pool().target().port, 2);
    let members = set.members();
    assert!(
        members[0].down_until.is_some(),
        "the first host is set aside"
    );
    assert!(members[1].down_until.is_none());
    // New routes go straight to the working host while the first one is set aside.
    assert_eq!(set.pick(Role::Any).unwrap().target().port, 2);
    drop(lease);
    // After server_login_retry the first host is tried again (disable: first that works).
    tokio::time::sleep(Duration::from_secs(16)).await;
    assert_eq!(set.pick(Role::Any).unwrap().target().port, 1);
}

#[tokio::test(start_paused = true)]
async fn host_list_never_sets_aside_its_last_host() {
    let set = host_list_set(&[1, 2], crate::config::LoadBalanceHosts::RoundRobin);
    let mut route = set.route(Role::Any);
    let Err(err) = route.checkout().await else {
        panic!("no host works, yet a server was given");
    };
    // The client waited on the last host (retried like a single host) until query_wait_timeout.
    assert!(matches!(err, Error::QueryWaitTimeout), "{err:?}");
    let down = set
        .members()
        .iter()
        .filter(|m| m.down_until.is_some())
        .count();
    assert_eq!(down, 1);
}

#[tokio::test(start_paused = true)]
async fn host_list_round_robin_takes_turns() {
    let set = host_list_set(&[], crate::config::LoadBalanceHosts::RoundRobin);
    let ports: Vec<u16> = (0..4)
        .map(|_| set.pick(Role::Any).unwrap().target().port)
        .collect();
    assert_eq!(ports, vec![1, 2, 1, 2]);
    assert_eq!(
        set.load_balance_hosts(),
        Some(crate::config::LoadBalanceHosts::RoundRobin)
    );
}
