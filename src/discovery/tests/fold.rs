//! The topology diff, its log lines, and the notify rule of `poll::apply`.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use super::*;
use crate::discovery::poll::{apply, Log};
use crate::discovery::{diff, parse_cluster, Change, ClusterState, Topology};

fn state(json: &str) -> ClusterState {
    parse_cluster(json.as_bytes()).expect("fixture parses")
}

fn addr() -> SocketAddr {
    "127.0.0.1:28008".parse().expect("addr")
}

fn lines(changes: &[Change]) -> Vec<String> {
    changes.iter().map(ToString::to_string).collect()
}

#[test]
fn first_answer_lists_leader_and_members() {
    let c = diff(&ClusterState::default(), &state(HEALTHY_3));
    assert_eq!(
        lines(&c),
        [
            "leader changed: none -> node1",
            "member added: node1 role=leader state=running host=127.0.0.1:25432 timeline=1",
            "member added: node2 role=sync_standby state=running host=127.0.0.1:25433 timeline=1",
        ]
    );
}

#[test]
fn failover_switchover_and_tags() {
    let c = diff(&state(HEALTHY_3), &state(AFTER_FAILOVER_3));
    assert_eq!(
        lines(&c),
        [
            "leader changed: node1 -> node2",
            "member removed: node1 role=leader state=running host=127.0.0.1:25432 timeline=1",
            "member changed: node2 role sync_standby -> leader, timeline 1 -> 4",
        ]
    );
    let c = diff(&state(HEALTHY_3), &state(NO_LEADER_3));
    assert_eq!(c[0].to_string(), "leader changed: node1 -> none");
    let c = diff(&state(HEALTHY_3), &state(WITH_TAGS_3));
    assert_eq!(
        lines(&c),
        ["member changed: node2 tags '' -> 'nofailover,noloadbalance,dc=lab'"]
    );
    // The switchover sequence of the lab: node1 demotes while node2 takes over.
    let mid = HEALTHY_3
        .replace(
            r#""role": "leader", "state": "running""#,
            r#""role": "replica", "state": "stopping""#,
        )
        .replace(r#""role": "sync_standby""#, r#""role": "leader""#);
    let c = diff(&state(HEALTHY_3), &state(&mid));
    assert_eq!(
        lines(&c),
        [
            "leader changed: node1 -> node2",
            "member changed: node1 role leader -> replica, state running -> stopping",
            "member changed: node2 role sync_standby -> leader",
        ]
    );
}

#[test]
fn lag_alone_is_no_change_and_maintenance_mode_is() {
    let more_lag = HEALTHY_3.replace(r#""lag": 0"#, r#""lag": 4096"#);
    assert!(diff(&state(HEALTHY_3), &state(&more_lag)).is_empty());
    let paused = HEALTHY_3.replacen('{', r#"{"pause": true, "#, 1);
    assert_eq!(
        lines(&diff(&state(HEALTHY_3), &state(&paused))),
        ["maintenance mode on (Patroni paused)"]
    );
}

#[test]
fn control_characters_from_the_network_are_escaped_in_log_lines() {
    let evil = r#"{"members":[{"name":"a\nINFO fake","role":"leader","state":"run\u001b[31m"}]}"#;
    let c = diff(&ClusterState::default(), &state(evil));
    for line in lines(&c) {
        assert!(!line.contains('\n') && !line.contains('\u{1b}'), "{line:?}");
    }
    assert_eq!(c[0].to_string(), "leader changed: none -> a\\nINFO fake");
}

#[test]
fn apply_notifies_on_data_changes_and_health_flips_only() {
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
    let mut t = Topology::default();
    let mut logs = Vec::new();
    assert!(!t.is_known());

    // First answer: notify, changed_at and leader_changed_at set, no leader change counted.
    assert!(apply(&mut t, Ok((state(HEALTHY_3), addr())), t0, &mut logs));
    assert!(t.is_known());
    assert_eq!(t.changed_at, Some(t0));
    assert_eq!(t.leader_changed_at, Some(t0));
    assert_eq!(t.leader_changes, 0);
    assert_eq!(t.leader().map(|m| m.name.as_str()), Some("node1"));
    assert_eq!(t.health.answered_by.as_deref(), Some("127.0.0.1:28008"));
    assert_eq!(
        logs[0],
        Log::Info("first answer from 127.0.0.1:28008: leader node1, 2 members".into())
    );
    assert_eq!(logs.len(), 4);

    // The same answer: timestamps move, nobody is woken, nothing is logged.
    logs.clear();
    let t1 = t0 + Duration::from_secs(1);
    assert!(!apply(
        &mut t,
        Ok((state(HEALTHY_3), addr())),
        t1,
        &mut logs
    ));
    assert!(logs.is_empty());
    assert_eq!(t.health.last_success, Some(t1));
    assert_eq!(t.changed_at, Some(t0));
    assert_eq!(t.health.polls_total, 2);

    // Lag moved: receivers are woken (routing uses it) but nothing is logged.
    let more_lag = HEALTHY_3.replace(r#""lag": 0"#, r#""lag": 4096"#);
    assert!(apply(&mut t, Ok((state(&more_lag), addr())), t1, &mut logs));
    assert!(logs.is_empty());
    assert_eq!(t.changed_at, Some(t0));

    // Failures: the first wakes and warns, the next ones do neither; the topology is kept.
    let t2 = t1 + Duration::from_secs(1);
    assert!(apply(&mut t, Err(Vec::new()), t2, &mut logs));
    assert!(!apply(&mut t, Err(Vec::new()), t2, &mut logs));
    assert_eq!(t.health.consecutive_failures, 2);
    assert_eq!(t.health.errors_total, 2);
    assert_eq!(t.health.last_success, Some(t1));
    assert_eq!(t.state.members.len(), 2);
    assert_eq!(
        logs,
        [Log::Warn(
            "poll failed (1 in a row, keeping the last known topology): no Patroni endpoint to ask"
                .into()
        )]
    );

    // Recovery with a failover: wakes, logs, counts one leader change.
    logs.clear();
    let t3 = t2 + Duration::from_secs(1);
    assert!(apply(
        &mut t,
        Ok((state(AFTER_FAILOVER_3), addr())),
        t3,
        &mut logs
    ));
    assert_eq!(t.health.consecutive_failures, 0);
    assert_eq!(t.leader_changes, 1);
    assert_eq!(t.leader_changed_at, Some(t3));
    assert_eq!(t.changed_at, Some(t3));
    assert_eq!(
        logs[0],
        Log::Info("Patroni answers again (from 127.0.0.1:28008) after 2 failed polls".into())
    );
    assert_eq!(logs[1], Log::Info("leader changed: node1 -> node2".into()));
}
