//! `parse_cluster` on the shapes Patroni 3.x and 4.x really send, and on garbage.

use super::*;
use crate::discovery::{parse_cluster, Lag, MemberRole};

#[test]
fn healthy_3_0_2() {
    let s = parse_cluster(HEALTHY_3.as_bytes()).expect("parses");
    assert_eq!(s.leader.as_deref(), Some("node1"));
    assert!(!s.paused);
    assert_eq!(s.scope, None);
    assert_eq!(s.members.len(), 2);
    let (l, r) = (&s.members[0], &s.members[1]);
    assert_eq!(l.name, "node1");
    assert_eq!(l.role, MemberRole::Leader);
    assert_eq!(l.state, "running");
    assert_eq!(l.host.as_deref(), Some("127.0.0.1"));
    assert_eq!(l.port, Some(25432));
    assert_eq!(l.timeline, Some(1));
    assert_eq!(l.lag, None, "the leader has no lag field");
    assert!(l.tags.is_empty());
    assert_eq!(l.api_url.as_deref(), Some("http://127.0.0.1:28008/patroni"));
    assert_eq!(l.address().as_deref(), Some("127.0.0.1:25432"));
    assert!(l.is_running());
    assert_eq!(r.role, MemberRole::SyncStandby);
    assert_eq!(r.lag, Some(Lag::Bytes(0)));
    assert!(r.role.is_replica() && !r.role.is_leader());
}

#[test]
fn after_failover_and_without_leader() {
    let s = parse_cluster(AFTER_FAILOVER_3.as_bytes()).expect("parses");
    assert_eq!(s.leader.as_deref(), Some("node2"));
    assert_eq!(s.members[0].timeline, Some(4));
    let s = parse_cluster(NO_LEADER_3.as_bytes()).expect("parses");
    assert_eq!(s.leader, None);
    assert_eq!(s.members.len(), 1);
    let s = parse_cluster(br#"{"members": []}"#).expect("an empty cluster parses");
    assert!(s.members.is_empty() && s.leader.is_none());
}

#[test]
fn tags() {
    let s = parse_cluster(WITH_TAGS_3.as_bytes()).expect("parses");
    let t = &s.members[1].tags;
    assert!(t.nofailover && t.noloadbalance && !t.nosync);
    assert_eq!(t.other.get("dc").map(String::as_str), Some("lab"));
    assert_eq!(t.to_string(), "nofailover,noloadbalance,dc=lab");
}

#[test]
fn patroni_4_shape() {
    let s = parse_cluster(PATRONI_4.as_bytes()).expect("parses");
    assert_eq!(s.scope.as_deref(), Some("demo"));
    assert!(s.paused);
    assert_eq!(s.leader.as_deref(), Some("patroni1"));
    let r = &s.members[1];
    assert_eq!(r.state, "streaming");
    assert!(r.is_running(), "4.x replicas stream");
    assert_eq!(r.lag, Some(Lag::Bytes(0)));
    assert_eq!(s.members[0].tags.to_string(), "clonefrom=true");
    let q = &s.members[2];
    assert_eq!(q.role, MemberRole::QuorumStandby);
    assert_eq!(q.lag, Some(Lag::Unknown));
    assert!(!q.is_running(), "in archive recovery is not streaming");
    assert!(q.tags.nosync && !q.tags.nofailover);
    assert!(!q.tags.other.contains_key("nofailover"));
}

#[test]
fn standby_cluster_leader_and_unknown_roles() {
    let s = parse_cluster(
        br#"{"members":[{"name":"b","role":"standby_leader","state":"running"},
                        {"name":"a","role":"witness","state":"running"}]}"#,
    )
    .expect("parses");
    assert_eq!(s.leader.as_deref(), Some("b"));
    assert_eq!(s.members[0].name, "a", "sorted by name");
    assert_eq!(s.members[0].role, MemberRole::Other("witness".into()));
    assert_eq!(s.members[0].role.as_str(), "witness");
}

#[test]
fn missing_optional_fields_and_odd_values() {
    let s = parse_cluster(
        br#"{"members":[
            {"name":"n1"},
            {"name":"n2","role":"replica","host":null,"port":null,"timeline":null,"lag":null,
             "tags":null,"state":"starting","pending_restart":true},
            {"name":"n3","role":"replica","lag":-5,"host":"","port":0},
            {"name":"n4","role":"replica","lag":"123"},
            {"name":"n5","role":"replica","lag":12.7},
            {"name":"n1","role":"leader"}
        ],"unknown_top":{"x":[1,2]}}"#,
    )
    .expect("parses");
    assert_eq!(s.members.len(), 5, "the duplicate n1 is dropped");
    let n1 = &s.members[0];
    assert_eq!(n1.role, MemberRole::Other(String::new()));
    assert_eq!(n1.state, "");
    assert_eq!(
        (n1.host.as_deref(), n1.port, n1.address()),
        (None, None, None)
    );
    assert_eq!(
        s.leader, None,
        "the duplicate that claimed leader was dropped"
    );
    assert_eq!(s.members[1].lag, None);
    assert_eq!(s.members[2].lag, Some(Lag::Bytes(0)), "negative clamps");
    assert_eq!(
        (s.members[2].host.as_deref(), s.members[2].port),
        (None, None)
    );
    assert_eq!(s.members[3].lag, Some(Lag::Bytes(123)));
    assert_eq!(s.members[4].lag, Some(Lag::Bytes(12)));
}

#[test]
fn ipv6_member_address() {
    let s =
        parse_cluster(br#"{"members":[{"name":"a","role":"leader","host":"::1","port":5432}]}"#)
            .expect("parses");
    assert_eq!(s.members[0].address().as_deref(), Some("[::1]:5432"));
}

#[test]
fn garbage_is_an_error_not_a_panic() {
    for body in [
        &b""[..],
        b"null",
        b"[]",
        b"{}",
        b"{\"members\": null}",
        b"{\"members\": {}}",
        b"{\"members\": [{\"role\": \"leader\"}]}",
        b"{\"members\": [{\"name\": 5}]}",
        b"{\"members\": [{\"name\": \"a\", \"port\": 70000}]}",
        b"{\"members\": [{\"name\": \"a\", \"port\": \"5432\"}]}",
        b"{\"members\": [{\"name\": \"a\", \"timeline\": -1}]}",
        b"{\"members\": [], \"pause\": \"yes\"}",
        b"{\"members\": [",
        b"<html>502 Bad Gateway</html>",
        b"\xff\xfe\x00",
    ] {
        assert!(
            parse_cluster(body).is_err(),
            "{:?} should not parse",
            String::from_utf8_lossy(body)
        );
    }
    // Arbitrary bytes never panic.
    let alphabet = b"{}[]\":,0123456789membrsnalrotu \\-.";
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for len in 0..400 {
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                alphabet[(seed % alphabet.len() as u64) as usize]
            })
            .collect();
        let _ = parse_cluster(&bytes);
    }
}
