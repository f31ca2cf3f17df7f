//! A client's tracked parameters (PgBouncer's client_encoding, DateStyle, TimeZone,
//! standard_conforming_strings, application_name, default_transaction_read_only,
//! session_authorization, plus track_extra_parameters): the set it gets
//! at login, shared copy-on-write with the other clients of its pool that want the same values,
//! and the SET batch that makes a server match it at a checkout. Does no I/O but that SET.
//!
//! Why shared: each client used to own a Vec of its own (192 bytes kept by every idle client,
//! two allocations per login) although almost every client of a pool wants the same values. A
//! server synced to a shared set then matches the next client that holds it by one pointer
//! comparison.

use std::borrow::Cow;
use std::sync::Arc;

use super::startup;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::logsafe::Clean;
use crate::pool::{ParamSets, Welcome};
use crate::server::{ParamSet, ServerConn};

/// The value of a tracked parameter the server does not report and the client did not ask
/// for: whatever the server's own default is (`RESET`). A NUL cannot be in a startup value.
pub const SERVER_DEFAULT: &str = "\0";

/// A client's tracked parameters: (canonical name, value), in the config's tracked order.
#[derive(Clone, Debug)]
pub struct Params(ParamSet);

impl Default for Params {
    fn default() -> Params {
        Params(Arc::from([]))
    }
}

impl Params {
    /// The pairs.
    pub fn iter(&self) -> std::slice::Iter<'_, (Arc<str>, Arc<str>)> {
        self.0.iter()
    }

    /// The pairs as a slice.
    pub fn as_slice(&self) -> &[(Arc<str>, Arc<str>)] {
        &self.0
    }

    /// The value of `name` (any case), if it is tracked.
    pub fn get(&self, name: &str) -> Option<&Arc<str>> {
        self.0
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// A server reported `name = value`: the client's value of a tracked parameter follows it.
    /// True when that changed the client's value (its set is copied first when shared).
    pub fn update(&mut self, name: &str, value: &str) -> bool {
        let Some(i) = self
            .0
            .iter()
            .position(|(k, _)| k.eq_ignore_ascii_case(name))
        else {
            return false;
        };
        if &*self.0[i].1 == value {
            return false;
        }
        Arc::make_mut(&mut self.0)[i].1 = Arc::from(value);
        true
    }

    /// True when both are the same shared set.
    pub fn same(&self, set: &ParamSet) -> bool {
        Arc::ptr_eq(&self.0, set)
    }

    /// The shared set.
    pub fn shared(&self) -> &ParamSet {
        &self.0
    }
}

/// The set a client logs in with: for each tracked name, what it asked for in its startup
/// packet, else the value the pool's servers report (the welcome), else the server's default
/// ([`SERVER_DEFAULT`]). A name the welcome reports is the welcome's own `Arc` (the welcome is
/// written by identity, see `link`). `kept` are the sets the pool's last login handed out:
/// one of them is taken as it is when it holds the same values. Returns the sets to keep for
/// the next login when they changed.
pub fn for_client(
    cfg: &Config,
    asked: &[(Cow<'_, str>, Cow<'_, str>)],
    welcome: &Arc<Welcome>,
    kept: Option<ParamSets>,
) -> (Params, Option<ParamSets>) {
    let names = startup::tracked_names(cfg);
    // Kept sets made from another welcome or another tracked list (a RELOAD) are not used.
    let kept = kept.filter(|s| {
        Arc::ptr_eq(&s.welcome, welcome)
            && s.defaults.len() == names.clone().count()
            && s.defaults
                .iter()
                .zip(names.clone())
                .all(|((k, _), n)| k.eq_ignore_ascii_case(n))
    });
    let asked_for = |name: &str| {
        asked
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| &**v)
    };
    let (defaults, last) = match kept {
        Some(s) => (s.defaults, Some(s.last)),
        None => (defaults_of(names, welcome), None),
    };
    // Whether `set` holds what the client wants at each position: its own value, or the
    // default.
    let wants = |set: &ParamSet| {
        defaults
            .iter()
            .zip(set.iter())
            .all(|((k, d), (_, v))| &**v == asked_for(k).unwrap_or(d))
    };
    if asked.is_empty() || wants(&defaults) {
        let keep = last.is_none().then(|| ParamSets {
            welcome: welcome.clone(),
            defaults: defaults.clone(),
            last: defaults.clone(),
            status: None,
        });
        return (Params(defaults), keep);
    }
    if let Some(last) = last.filter(|l| wants(l)) {
        return (Params(last), None);
    }
    let made: ParamSet = defaults
        .iter()
        .map(|(k, d)| {
            let v = asked_for(k).map_or_else(|| d.clone(), Arc::from);
            (k.clone(), v)
        })
        .collect();
    let keep = ParamSets {
        welcome: welcome.clone(),
        defaults,
        last: made.clone(),
        status: None,
    };
    (Params(made), Some(keep))
}

/// What a client that asks for nothing gets from `welcome`.
fn defaults_of<'a>(names: impl Iterator<Item = &'a str>, welcome: &Welcome) -> ParamSet {
    names
        .map(
            |name| match welcome.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)) {
                Some((k, v)) => (k.clone(), v.clone()),
                // Not reported by the server (track_extra_parameters = search_path on PostgreSQL
                // < 18): the client still wants the default, not what a previous client set.
                None => (Arc::from(name), Arc::from(SERVER_DEFAULT)),
            },
        )
        .collect()
}

/// Quotes a value as a SQL string literal.
fn quote_literal(v: &str) -> String {
    let mut s = String::with_capacity(v.len() + 2);
    s.push('\'');
    for ch in v.chars() {
        if ch == '\'' {
            s.push('\'');
        }
        s.push(ch);
    }
    s.push('\'');
    s
}

/// The SET batch that makes `server` match the client's tracked parameters, if any differ.
pub fn param_diff(server: &ServerConn, params: &Params) -> Option<String> {
    if in_sync(server, params) {
        return None;
    }
    let mut sql = String::new();
    for (k, v) in params.iter() {
        if &**v == SERVER_DEFAULT {
            if server.unreported_unknown || server.param(k).is_some() {
                sql.push_str("RESET ");
                sql.push_str(k);
                sql.push(';');
            }
            continue;
        }
        let same = server.param(k).is_some_and(|sv| sv.eq_ignore_ascii_case(v));
        if !same {
            sql.push_str("SET ");
            sql.push_str(k);
            sql.push('=');
            sql.push_str(&quote_literal(v));
            sql.push(';');
        }
    }
    (!sql.is_empty()).then_some(sql)
}

/// The server was last synced to exactly these parameters (the usual case: the clients of a
/// pool share one set, so this is one pointer comparison).
fn in_sync(server: &ServerConn, params: &Params) -> bool {
    let Some(synced) = &server.synced else {
        return false;
    };
    let same = |a: &Arc<str>, b: &Arc<str>| Arc::ptr_eq(a, b) || a == b;
    params.same(synced)
        || synced.len() == params.0.len()
            && synced
                .iter()
                .zip(params.iter())
                .all(|((sk, sv), (k, v))| same(sk, k) && same(sv, v))
}

/// Applies the client's tracked parameters to the server before it is handed over. True when
/// that took a round trip to the server (a SET was sent).
pub async fn sync_params(
    server: &mut ServerConn,
    params: &mut Params,
    max_packet: u32,
) -> Result<bool> {
    // Checked apart from the diff so the common case copies nothing.
    if in_sync(server, params) {
        return Ok(false);
    }
    let Some(sql) = param_diff(server, params) else {
        server.synced = Some(params.0.clone());
        return Ok(false);
    };
    // PgBouncer's debug line (verbose=2), which its suite greps for the SETs sent.
    tracing::debug!("S-{} varcache_apply: {}", server.id, Clean(&sql));
    // Boxed: a SET round trip is rare, and inline its state would sit in every session's
    // per-transaction future.
    match Box::pin(server.run_internal(&sql, max_packet)).await? {
        None => {
            // Parameters the server does not report keep the value the pooler set.
            for (k, v) in params.iter() {
                let reported = server.param(k).is_some()
                    && !server.unreported.iter().any(|u| u.eq_ignore_ascii_case(k));
                if !reported {
                    let value = (&**v != SERVER_DEFAULT).then_some(&**v);
                    server.set_unreported(k, value);
                }
            }
            server.unreported_unknown = false;
            // Take the server's canonical spelling (e.g. DateStyle "ISO, MDY").
            for i in 0..params.0.len() {
                let (k, v) = &params.0[i];
                let Some(sv) = server.param(k) else {
                    continue;
                };
                if sv != &**v {
                    tracing::debug!(
                        "varcache_set_canonical: setting {} to its canonical version {} -> {}",
                        Clean(&**k),
                        Clean(&**v),
                        Clean(sv)
                    );
                    let sv = Arc::from(sv);
                    Arc::make_mut(&mut params.0)[i].1 = sv;
                }
            }
            server.synced = Some(params.0.clone());
            Ok(true)
        }
        Some(err) => {
            tracing::warn!("tracked parameter SET failed: {}", Clean(&err.message));
            Err(Error::InvalidServerParameter)
        }
    }
}

#[cfg(test)]
mod tests;
