//! `[peers]`: `peer_id = host=... port=... pool_size=...` (PgBouncer 1.19), the other pooler
//! processes a cancel request is forwarded to when its key carries their id.
//!
//! Owns the meaning of the three keys; the tokenizer and the host/port rules are `entries.rs`'s.
//! No I/O.

use super::entries::{host, port, split_pairs};
use super::value::{self, c_uint, dec_u32};
use crate::config::PeerConfig;

/// PgBouncer's default port of a peer (its own default `listen_port`).
const DEFAULT_PEER_PORT: u16 = 6432;

/// Parses one `[peers]` line; every problem is returned at once.
pub(super) fn parse_peer(id: &str, settings: &str) -> Result<(u16, PeerConfig), Vec<String>> {
    let mut errors = Vec::new();
    let id = match c_uint(id, 16383) {
        Ok(0) | Err(_) => {
            errors.push(format!(
                "peer id must be a number from 1 to 16383, got \"{}\"",
                value::shown(id)
            ));
            0
        }
        Ok(n) => n as u16,
    };
    let pairs = split_pairs(settings).map_err(|e| vec![e])?;
    let mut peer_host = None;
    let mut peer = PeerConfig {
        host: crate::config::ServerHost::Tcp(String::new()),
        port: DEFAULT_PEER_PORT,
        pool_size: None,
    };
    for (key, val) in pairs {
        let result = match key.as_str() {
            "host" => host(&val).map(|h| peer_host = Some(h)),
            "port" => port(&val).map(|p| peer.port = p),
            "pool_size" => dec_u32(&val).map(|n| peer.pool_size = Some(n)),
            _ => Err(format!(
                "unrecognized peer parameter: {}",
                value::shown(&key)
            )),
        };
        if let Err(message) = result {
            errors.push(format!("{key}: {message}"));
        }
    }
    match peer_host {
        Some(h) => peer.host = h,
        None => errors.push("host: a peer needs host=".to_string()),
    }
    if errors.is_empty() {
        Ok((id, peer))
    } else {
        Err(errors)
    }
}
