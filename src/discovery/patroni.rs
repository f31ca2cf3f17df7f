//! Patroni's `GET /cluster` answer: JSON in, [`ClusterState`] out.
//!
//! Tolerates both major shapes (3.x `running` replicas, 4.x `streaming` replicas with `lsn`,
//! `receive_lag`, `replay_lag` and a top-level `scope`), `lag` as a number, `"unknown"` or absent,
//! missing optional fields and unknown fields. Anything that is not a `/cluster` document (no
//! `members` list, a field of the wrong type, invalid JSON) is an error, never a panic. No I/O.

use serde::Deserialize;
use serde_json::Value;

use super::topology::{ClusterState, Lag, Member, MemberRole, Tags};

/// The top level of `/cluster`; unknown fields (`scheduled_switchover`, `failsafe`, ...) are
/// ignored.
#[derive(Deserialize)]
struct ClusterDoc {
    members: Vec<MemberDoc>,
    #[serde(default)]
    pause: Option<bool>,
    #[serde(default)]
    scope: Option<String>,
}

/// One `members[]` entry; only `name` is required.
#[derive(Deserialize)]
struct MemberDoc {
    name: String,
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    api_url: Option<String>,
    #[serde(default)]
    host: Option<String>,
    #[serde(default)]
    port: Option<u16>,
    #[serde(default)]
    timeline: Option<u64>,
    #[serde(default)]
    lag: Option<Value>,
    #[serde(default)]
    tags: Option<serde_json::Map<String, Value>>,
}

/// Parses a `/cluster` body.
pub fn parse_cluster(body: &[u8]) -> Result<ClusterState, serde_json::Error> {
    let doc: ClusterDoc = serde_json::from_slice(body)?;
    let mut members: Vec<Member> = doc.members.into_iter().map(member).collect();
    // Patroni sorts by name already; sorting here makes diffs and views independent of that,
    // and a (never expected) duplicate name keeps its first entry.
    members.sort_by(|a, b| a.name.cmp(&b.name));
    members.dedup_by(|b, a| a.name == b.name);
    let leader = members
        .iter()
        .find(|m| m.role == MemberRole::Leader)
        .or_else(|| members.iter().find(|m| m.role.is_leader()))
        .map(|m| m.name.clone());
    Ok(ClusterState {
        members,
        leader,
        paused: doc.pause.unwrap_or(false),
        scope: doc.scope,
    })
}

fn member(m: MemberDoc) -> Member {
    Member {
        role: MemberRole::from_patroni(m.role.as_deref().unwrap_or("")),
        state: m.state.unwrap_or_default(),
        host: m.host.filter(|h| !h.is_empty()),
        port: m.port.filter(|p| *p != 0),
        timeline: m.timeline,
        lag: m.lag.as_ref().and_then(lag),
        tags: m.tags.map(tags).unwrap_or_default(),
        api_url: m.api_url,
        name: m.name,
    }
}

/// `lag`: bytes as a number (negative clamps to 0), `"unknown"` (or any text that is not a
/// number), `null` = absent.
fn lag(v: &Value) -> Option<Lag> {
    match v {
        Value::Null => None,
        Value::Number(n) => Some(match (n.as_u64(), n.as_i64(), n.as_f64()) {
            (Some(u), _, _) => Lag::Bytes(u),
            (None, Some(_), _) => Lag::Bytes(0),
            (None, None, Some(f)) if f.is_finite() && f >= 0.0 => Lag::Bytes(f as u64),
            _ => Lag::Unknown,
        }),
        Value::String(s) => Some(s.trim().parse().map_or(Lag::Unknown, Lag::Bytes)),
        _ => Some(Lag::Unknown),
    }
}

/// Patroni's truthiness of a tag value (`parse_bool`): true, "true"/"yes"/"on"/"1", non-zero.
fn truthy(v: &Value) -> bool {
    match v {
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => matches!(
            s.trim().to_ascii_lowercase().as_str(),
            "true" | "yes" | "on" | "1" | "y" | "t"
        ),
        _ => false,
    }
}

fn tags(map: serde_json::Map<String, Value>) -> Tags {
    let mut t = Tags::default();
    for (k, v) in map {
        match k.as_str() {
            "nofailover" => t.nofailover = truthy(&v),
            "noloadbalance" => t.noloadbalance = truthy(&v),
            "nosync" => t.nosync = truthy(&v),
            _ => {
                let text = match v {
                    Value::String(s) => s,
                    Value::Null | Value::Bool(false) => continue,
                    other => other.to_string(),
                };
                t.other.insert(k, text);
            }
        }
    }
    t
}
