//! Cancel keys and CancelRequest handling.
//!
//! - Minting: each client gets a random 8-byte BackendKeyData key. With peering on (`peer_id` > 0)
//!   bytes 1-2 of it carry our peer id and the low 2 bits of byte 7 a TTL of 3, exactly as
//!   PgBouncer 1.19+ lays them out, so PgBouncer and this pooler can peer with each other.
//! - A cancel whose key names another peer is forwarded to that `[peers]` entry with the TTL
//!   decremented (at most 3 hops), bounded per peer by its `pool_size` (SHOW PEER_POOLS).
//! - A key of ours maps to the server the client is linked to right now, and the cancel goes to that
//!   server over a new connection with the server's own key.
//!
//! Nothing is ever written back on the cancel connection (PgBouncer and PostgreSQL just close it).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use dashmap::DashMap;
use tokio::sync::Semaphore;

use crate::config::Config;
use crate::context::Context;
use crate::server::{self, CancelTarget};

/// The low bits of the key's last byte: hops a cancel may still be forwarded (PgBouncer's
/// `CANCELLATION_TTL_MASK`).
const TTL_MASK: u32 = 0x03;

/// A fresh cancel key `(pid, key)` as sent in BackendKeyData (pid = bytes 0-3, key = bytes 4-7).
pub fn mint_key(peer_id: u16) -> (u32, u32) {
    let mut pid = rand::random::<u32>();
    let mut key = rand::random::<u32>();
    if peer_id > 0 {
        // Byte 1 = low byte of the id, byte 2 = high byte (PgBouncer's order).
        let [lo, hi] = peer_id.to_le_bytes();
        pid = (pid & 0xff00_00ff) | (u32::from(lo) << 16) | (u32::from(hi) << 8);
        key |= TTL_MASK;
    }
    // PgBouncer clears the top bit so the "pid" reads as positive.
    (pid & 0x7fff_ffff, key)
}

/// The peer id a key carries (meaningful only when peering is on).
pub fn peer_of(pid: u32) -> u16 {
    let [_, lo, hi, _] = pid.to_be_bytes();
    u16::from_le_bytes([lo, hi])
}

/// Forwards a client's cancel request: to the peer its key names, or to the server of the local
/// client it names, if that client is running something.
pub async fn forward(ctx: &Context, pid: u32, key: u32) {
    let cfg = ctx.config();
    let own = cfg.general.peer_id;
    let key = if own > 0 {
        let target = peer_of(pid);
        if target != own {
            forward_to_peer(ctx, &cfg, target, pid, key).await;
            return;
        }
        // Our stored keys always have the TTL bits set; a forwarded copy has fewer.
        key | TTL_MASK
    } else {
        key
    };
    let Some(client) = ctx.clients.by_cancel_key(pid, key) else {
        tracing::info!("failed cancel request: unknown key");
        return;
    };
    if client.is_admin.load(Ordering::Relaxed) {
        return;
    }
    let linked = client.linked.lock().clone();
    let Some((server_id, target)) = linked else {
        tracing::debug!(client = client.id, "cancel request for idle client");
        return;
    };
    // Counted before the link is looked at again below: from here until the backend closes
    // this cancel's connection, the server is not handed to another client (see
    // `server::inflight`).
    let _open = target.inflight.enter();
    let tcp = crate::net::TcpOptions::from_general(&cfg.general);
    let stream = match server::open_cancel(&target, &tcp).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(client = client.id, "cancel forwarding failed: {e}");
            return;
        }
    };
    // The query may have finished while we connected; then the server may already run another
    // client's query, which must not be cancelled (PgBouncer #717).
    let still = client.linked.lock().as_ref().map(|(id, _)| *id) == Some(server_id);
    if !still {
        tracing::debug!(
            client = client.id,
            "cancel dropped: query finished meanwhile"
        );
        return;
    }
    if let Err(e) = server::send_cancel(stream, &target).await {
        tracing::warn!(client = client.id, "cancel forwarding failed: {e}");
    }
}

/// Sends the request on to peer `target` with one hop less.
async fn forward_to_peer(ctx: &Context, cfg: &Config, target: u16, pid: u32, key: u32) {
    if key & TTL_MASK == 0 {
        tracing::info!("failed to forward cancel request because its TTL was exhausted");
        return;
    }
    let key = key - 1;
    let Some(peer) = cfg.peers.get(&target) else {
        tracing::info!(
            peer_id = target,
            "could not find peer to forward request to"
        );
        return;
    };
    let size = peer.pool_size.unwrap_or(cfg.general.default_pool_size);
    let pool = ctx.peer_pools.get(target, size);
    let waiting = Count::up(&pool.cl_waiting);
    // cancel_wait_timeout bounds the wait for a free slot of the peer (0 = no bound).
    let limit = cfg.general.cancel_wait_timeout;
    let slot = pool.slots.clone().acquire_owned();
    let acquired = if limit.is_zero() {
        Ok(slot.await)
    } else {
        tokio::time::timeout(limit, slot).await
    };
    let permit = match acquired {
        Ok(Ok(p)) => p,
        _ => {
            tracing::info!(peer_id = target, "cancel request to peer timed out waiting");
            return;
        }
    };
    let to = CancelTarget {
        host: peer.host.clone(),
        port: peer.port,
        addr: None,
        pid,
        key,
        inflight: Default::default(),
    };
    tracing::debug!(peer_id = target, "forwarding cancellation request to peer");
    let tcp = crate::net::TcpOptions::from_general(&cfg.general);
    let stream = {
        let _login = Count::up(&pool.sv_login);
        server::open_cancel(&to, &tcp).await
    };
    drop(waiting);
    let stream = match stream {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(peer_id = target, "cancel forwarding to peer failed: {e}");
            return;
        }
    };
    let _active = (Count::up(&pool.cl_active), Count::up(&pool.sv_active));
    if let Err(e) = server::send_cancel(stream, &to).await {
        tracing::warn!(peer_id = target, "cancel forwarding to peer failed: {e}");
    }
    drop(permit);
}

/// Counts one thing while alive (so an early return or a cancelled task never leaks a count).
struct Count<'a>(&'a AtomicU32);

impl<'a> Count<'a> {
    fn up(counter: &'a AtomicU32) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        Count(counter)
    }
}

impl Drop for Count<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Cancel forwarding to one peer: the in-flight bound and SHOW PEER_POOLS' counters.
#[derive(Debug)]
pub struct PeerPool {
    /// `pool_size` this pool was made with (a reload that changes it makes a new pool).
    pub size: u32,
    /// One permit per cancel request in flight to the peer.
    slots: Arc<Semaphore>,
    /// Requests waiting for a slot or for their connection (`cl_waiting_cancel_req`).
    pub cl_waiting: AtomicU32,
    /// Requests being sent (`cl_active_cancel_req`).
    pub cl_active: AtomicU32,
    /// Connections sending a request (`sv_active_cancel`).
    pub sv_active: AtomicU32,
    /// Connections being opened (`sv_login`).
    pub sv_login: AtomicU32,
}

/// Every peer pool, made on the first cancel forwarded to that peer (as PgBouncer does).
#[derive(Debug, Default)]
pub struct PeerPools {
    /// By peer id; read by SHOW PEER_POOLS and SHOW LISTS.
    pools: DashMap<u16, Arc<PeerPool>>,
}

impl PeerPools {
    /// The pool of `peer_id`, made (or remade, when `pool_size` changed) on demand.
    fn get(&self, peer_id: u16, size: u32) -> Arc<PeerPool> {
        let make = || {
            Arc::new(PeerPool {
                size,
                // 0 would block every cancel; PgBouncer treats pool_size 0 as no limit.
                slots: Arc::new(Semaphore::new(if size == 0 {
                    Semaphore::MAX_PERMITS
                } else {
                    size as usize
                })),
                cl_waiting: AtomicU32::new(0),
                cl_active: AtomicU32::new(0),
                sv_active: AtomicU32::new(0),
                sv_login: AtomicU32::new(0),
            })
        };
        let mut entry = self.pools.entry(peer_id).or_insert_with(make);
        if entry.size != size {
            *entry = make();
        }
        entry.clone()
    }

    /// Snapshot for the console, sorted by peer id.
    pub fn snapshot(&self) -> Vec<(u16, Arc<PeerPool>)> {
        let mut v: Vec<_> = self
            .pools
            .iter()
            .map(|e| (*e.key(), e.value().clone()))
            .collect();
        v.sort_by_key(|(id, _)| *id);
        v
    }

    /// Number of peer pools.
    pub fn len(&self) -> usize {
        self.pools.len()
    }

    /// True before the first forwarded cancel.
    pub fn is_empty(&self) -> bool {
        self.pools.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_carry_the_peer_id_and_ttl_like_pgbouncer() {
        for id in [1u16, 2, 255, 256, 0x1234, 16383] {
            for _ in 0..50 {
                let (pid, key) = mint_key(id);
                assert_eq!(peer_of(pid), id);
                assert_eq!(key & TTL_MASK, TTL_MASK);
                assert_eq!(pid & 0x8000_0000, 0);
                // Wire bytes: BackendKeyData sends pid then key, big-endian.
                let b = pid.to_be_bytes();
                assert_eq!(u16::from(b[1]) + (u16::from(b[2]) << 8), id);
            }
        }
        // Peering off: only the sign bit is fixed.
        let seen_ttl_zero = (0..200).any(|_| mint_key(0).1 & TTL_MASK == 0);
        assert!(seen_ttl_zero);
    }
}
