//! Fuzz target for what discovery reads from a Patroni REST API: the `/cluster` JSON
//! (`discovery::parse_cluster`) and the members' `api_url`s (`config::PatroniUrl::parse`).
//!
//! Input: the whole input is a `/cluster` body; when it is UTF-8 it is also tried as a URL.
//!
//! Invariants checked:
//! - parsing never panics and is deterministic;
//! - an accepted answer has members sorted by name without duplicates, and its leader (if any)
//!   is one of them with a leader role;
//! - the change log lines (a diff from nothing, and back to nothing) never contain a control
//!   character, so network text cannot forge log lines;
//! - an accepted URL prints as `http://host:port` and parses back to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ollyscale_pooler::config::PatroniUrl;
use ollyscale_pooler::discovery::{diff, parse_cluster, ClusterState};

fuzz_target!(|data: &[u8]| {
    let first = parse_cluster(data);
    let again = parse_cluster(data);
    assert_eq!(first.is_ok(), again.is_ok(), "not deterministic");
    if let (Ok(state), Ok(again)) = (first, again) {
        assert_eq!(state, again, "not deterministic");
        for pair in state.members.windows(2) {
            assert!(pair[0].name < pair[1].name, "members not sorted and unique");
        }
        if let Some(leader) = &state.leader {
            let m = state
                .members
                .iter()
                .find(|m| &m.name == leader)
                .expect("the leader is a member");
            assert!(m.role.is_leader());
        }
        let empty = ClusterState::default();
        for change in diff(&empty, &state).iter().chain(&diff(&state, &empty)) {
            let line = change.to_string();
            assert!(
                !line.chars().any(char::is_control),
                "control character in a log line: {line:?}"
            );
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(url) = PatroniUrl::parse(text) {
            let shown = url.to_string();
            assert_eq!(
                PatroniUrl::parse(&shown),
                Ok(url),
                "{shown} does not re-parse"
            );
        }
    }
});
