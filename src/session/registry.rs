//! Every connected client, by id and by the cancel key we gave it. Read by cancel requests and
//! the admin console; written once at login and once at disconnect (never per transaction).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};

use atomic_waker::AtomicWaker;
use dashmap::DashMap;
use parking_lot::Mutex;

use crate::error::Error;
use crate::net::PeerAddr;
use crate::server::CancelTarget;

/// What a client is doing, as SHOW CLIENTS names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ClientState {
    /// Still logging in.
    Login = 0,
    /// Logged in, no server.
    Idle = 1,
    /// Queued for a server.
    Waiting = 2,
    /// Linked to a server.
    Active = 3,
}

/// Why a client is being told to go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillReason {
    /// KILL db.
    DatabaseRemoved,
    /// KILL_CLIENT id.
    AdminForced,
    /// The process is stopping now: the client sees its connection close, nothing more.
    Shutdown,
    /// SUSPEND found the client inside a transaction after suspend_timeout.
    SuspendTimeout,
}

impl KillReason {
    /// The error the client is sent.
    pub fn error(self) -> Error {
        match self {
            KillReason::DatabaseRemoved => Error::DatabaseRemoved,
            KillReason::AdminForced => Error::AdminForcedDisconnect,
            KillReason::Shutdown => Error::Exiting,
            KillReason::SuspendTimeout => Error::SuspendTimeout,
        }
    }
}

/// The local side of a client socket (SHOW SOCKETS `local_addr`, `local_port`). Kept as the
/// address, not its text: formatting an IP per accept cost a String and ~1.3k instructions per
/// login, for a column only the console reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalAddr {
    /// The TCP address the client connected to.
    Tcp(std::net::SocketAddr),
    /// The Unix socket of this port.
    Unix(u16),
    /// The kernel could not tell (the socket was already gone).
    Unknown,
}

impl LocalAddr {
    /// Address text as PgBouncer shows it (`unix` for the Unix socket).
    pub fn host(&self) -> String {
        match self {
            LocalAddr::Tcp(a) => a.ip().to_string(),
            LocalAddr::Unix(_) => "unix".to_string(),
            LocalAddr::Unknown => String::new(),
        }
    }

    /// The port (the listen port for the Unix socket).
    pub fn port(&self) -> u16 {
        match self {
            LocalAddr::Tcp(a) => a.port(),
            LocalAddr::Unix(p) => *p,
            LocalAddr::Unknown => 0,
        }
    }
}

/// The shared face of one client session.
pub struct ClientInfo {
    /// Unique id (SHOW CLIENTS `id`, KILL_CLIENT argument).
    pub id: u64,
    /// The BackendKeyData we gave the client (pid, key).
    pub cancel_key: (u32, u32),
    /// Where the client connects from.
    pub peer: PeerAddr,
    /// Local side of the client socket.
    pub local: LocalAddr,
    /// Wall-clock login time.
    pub connect_time: SystemTime,
    /// Database and user as the client named them (set once at login).
    pub db: Mutex<String>,
    pub user: Mutex<String>,
    /// application_name the client uses (`None`: none), shared with its tracked parameters.
    pub application_name: Mutex<Option<Arc<str>>>,
    /// Named prepared statements held (SHOW CLIENTS/SERVERS `prepared_statements`).
    pub prepared_statements: std::sync::atomic::AtomicU32,
    /// SHOW CLIENTS `replication`: `none`, `logical` or `physical`.
    pub replication: Mutex<&'static str>,
    /// [`ClientState`] as u8.
    state: AtomicU8,
    /// When the current request started (µs since `epoch`), for SHOW CLIENTS.
    pub request_time_us: AtomicU64,
    /// When waiting started, µs since `epoch`; 0 when not waiting.
    pub wait_start_us: AtomicU64,
    /// The server the client is linked to right now, for cancel forwarding; and its id.
    pub linked: Mutex<Option<(u64, Arc<CancelTarget>)>>,
    /// The session's task, woken when it is told to leave or to drain. One waker, because a
    /// session waits in one place at a time; cheaper per poll than a Notify or a token.
    waker: AtomicWaker,
    /// Set (before the wake) by [`ClientInfo::kill`].
    killed: AtomicBool,
    /// Set (before the wake) by [`ClientInfo::drain`].
    draining: AtomicBool,
    /// Set (before the wake) when a queued checkout reached query_wait_notify (the pool's
    /// [`crate::pool::Nudge`]); read and cleared by [`ClientInfo::poll_notice`].
    notice_due: AtomicBool,
    /// What to tell the client when killed.
    pub kill_reason: Mutex<Option<KillReason>>,
    /// Whether this is an admin-console session.
    pub is_admin: std::sync::atomic::AtomicBool,
    /// SHOW CLIENTS `tls`: set once after the handshake (unset = plain).
    pub tls: std::sync::OnceLock<String>,
}

/// Process start, the zero for the µs timestamps above.
pub fn epoch() -> Instant {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// µs since [`epoch`].
pub fn now_us() -> u64 {
    epoch().elapsed().as_micros() as u64
}

/// `at` as µs since [`epoch`] (0 for instants before it).
pub fn us_since_epoch(at: Instant) -> u64 {
    at.saturating_duration_since(epoch()).as_micros() as u64
}

impl ClientInfo {
    /// Current state.
    pub fn state(&self) -> ClientState {
        match self.state.load(Ordering::Relaxed) {
            0 => ClientState::Login,
            1 => ClientState::Idle,
            2 => ClientState::Waiting,
            _ => ClientState::Active,
        }
    }

    /// Sets the state.
    pub fn set_state(&self, s: ClientState) {
        self.state.store(s as u8, Ordering::Relaxed);
    }

    /// Asks the session to leave.
    pub fn kill(&self, reason: KillReason) {
        self.kill_reason.lock().get_or_insert(reason);
        self.killed.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Asks an idle session to leave (shutdown drain); a busy one leaves after its transaction.
    pub fn drain(&self) {
        self.draining.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Completes once the session was killed, or (with `drain`) asked to drain.
    pub fn signal(&self, drain: bool) -> Signal<'_> {
        Signal { info: self, drain }
    }

    /// The poll behind [`ClientInfo::signal`], for hand-written poll loops: true once killed (or,
    /// with `drain`, asked to drain); otherwise the task is woken when that happens.
    pub fn poll_signal(&self, cx: &mut Context<'_>, drain: bool) -> bool {
        // Register first, then look: a kill between the two still finds the flag set.
        self.waker.register(cx.waker());
        let drained = drain && self.draining.load(Ordering::Acquire);
        self.killed.load(Ordering::Acquire) || drained
    }

    /// True (once) when the pool nudged this client's queued checkout; otherwise the task is
    /// woken when that happens.
    pub fn poll_notice(&self, cx: &mut Context<'_>) -> bool {
        self.waker.register(cx.waker());
        self.notice_due.swap(false, Ordering::AcqRel)
    }

    /// Forgets a nudge of an earlier wait, before a new one starts.
    pub fn clear_notice(&self) {
        self.notice_due.store(false, Ordering::Relaxed);
    }

    /// No kill, drain or nudge was asked for: the only events that take the session's waker,
    /// each after it set its flag. So a loop that registered its waker since it last saw this
    /// true still has it registered, and may skip registering again at every sleep.
    pub fn is_quiet(&self) -> bool {
        !self.killed.load(Ordering::Acquire)
            && !self.draining.load(Ordering::Acquire)
            && !self.notice_due.load(Ordering::Acquire)
    }

    /// True once killed.
    pub fn is_killed(&self) -> bool {
        self.killed.load(Ordering::Acquire)
    }
}

/// See [`ClientInfo::signal`].
pub struct Signal<'a> {
    info: &'a ClientInfo,
    drain: bool,
}

impl Future for Signal<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.info.poll_signal(cx, self.drain) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

/// Hashes the registry's u64 keys with one multiplication (Fibonacci hashing) instead of
/// SipHash, ~1.3k instructions per login over the four lookups. Safe here: ids are ours and
/// sequential, cancel keys are random numbers we minted; a peer chooses neither (a cancel
/// request only looks a key up).
#[derive(Default, Clone, Copy)]
pub struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        // Not used by u64 keys; any input still hashes, byte by byte.
        for &b in bytes {
            self.write_u64(self.0 ^ u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        // The high bits (which pick the shard and hashbrown's tag) get every input bit's
        // influence.
        self.0 = (self.0 ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

type ByKey = DashMap<u64, Arc<ClientInfo>, std::hash::BuildHasherDefault<KeyHasher>>;

/// The registry.
#[derive(Default)]
pub struct Clients {
    /// By client id.
    by_id: ByKey,
    /// By cancel key (pid << 32 | key).
    by_key: ByKey,
    /// Connected non-admin clients (max_client_conn).
    pub count: AtomicU32,
    /// `peer_id` of the config in force, minted into new cancel keys (set by `Context`).
    pub peer_id: std::sync::atomic::AtomicU16,
    /// Logged-in clients per database name and per user name, for max_db_client_connections
    /// and max_user_client_connections (written at login and disconnect only).
    per_db: DashMap<Arc<str>, u32>,
    per_user: DashMap<Arc<str>, u32>,
}

/// What [`Clients::enter`] counted.
pub struct Entered {
    /// The database name, shared with the count's key.
    pub db: Arc<str>,
    /// The user name, shared with the count's key.
    pub user: Arc<str>,
    /// Clients of the database, this one included.
    pub db_n: u32,
    /// Clients of the user, this one included.
    pub user_n: u32,
}

fn key64(k: (u32, u32)) -> u64 {
    ((k.0 as u64) << 32) | k.1 as u64
}

impl Clients {
    /// Registers a new client with a fresh random cancel key.
    pub fn register(&self, peer: PeerAddr, local: LocalAddr) -> Arc<ClientInfo> {
        let id = crate::server::registry::next_socket_id();
        loop {
            let (pid, key) = super::cancel::mint_key(self.peer_id.load(Ordering::Relaxed));
            let info = Arc::new(ClientInfo {
                id,
                cancel_key: (pid, key),
                peer: peer.clone(),
                local,
                connect_time: SystemTime::now(),
                db: Mutex::new(String::new()),
                user: Mutex::new(String::new()),
                application_name: Mutex::new(None),
                prepared_statements: Default::default(),
                replication: Mutex::new("none"),
                state: AtomicU8::new(ClientState::Login as u8),
                request_time_us: AtomicU64::new(now_us()),
                wait_start_us: AtomicU64::new(0),
                linked: Mutex::new(None),
                waker: AtomicWaker::new(),
                killed: AtomicBool::new(false),
                draining: AtomicBool::new(false),
                notice_due: AtomicBool::new(false),
                kill_reason: Mutex::new(None),
                is_admin: std::sync::atomic::AtomicBool::new(false),
                tls: std::sync::OnceLock::new(),
            });
            match self.by_key.entry(key64((pid, key))) {
                dashmap::mapref::entry::Entry::Occupied(_) => continue,
                dashmap::mapref::entry::Entry::Vacant(v) => {
                    v.insert(info.clone());
                }
            }
            self.by_id.insert(id, info.clone());
            return info;
        }
    }

    /// Counts a client in for its database and user; returns both counts including it, and
    /// the names as the counts' keys (for the caller to keep until it calls
    /// [`Clients::leave`], which every call is paired with).
    pub fn enter(&self, db: &str, user: &str) -> Entered {
        // Most logins find their name counted already: the owned key only for a new one.
        let bump = |map: &DashMap<Arc<str>, u32>, key: &str| {
            if let Some(mut n) = map.get_mut(key) {
                *n += 1;
                return (n.key().clone(), *n);
            }
            let mut n = map.entry(Arc::from(key)).or_insert(0);
            *n += 1;
            (n.key().clone(), *n)
        };
        let (db, db_n) = bump(&self.per_db, db);
        let (user, user_n) = bump(&self.per_user, user);
        Entered {
            db,
            user,
            db_n,
            user_n,
        }
    }

    /// Undoes one [`Clients::enter`].
    pub fn leave(&self, db: &str, user: &str) {
        for (map, key) in [(&self.per_db, db), (&self.per_user, user)] {
            map.remove_if_mut(key, |_, n| {
                *n = n.saturating_sub(1);
                *n == 0
            });
        }
    }

    /// Clients counted for a database (SHOW DATABASES `current_client_connections`).
    pub fn db_count(&self, db: &str) -> u32 {
        self.per_db.get(db).map(|n| *n).unwrap_or(0)
    }

    /// Clients counted for a user (SHOW USERS `current_client_connections`).
    pub fn user_count(&self, user: &str) -> u32 {
        self.per_user.get(user).map(|n| *n).unwrap_or(0)
    }

    /// TCP clients that have not finished logging in (a SIGTERM drain waits for them).
    /// Walks every client: called only while draining.
    pub fn logging_in_tcp(&self) -> usize {
        self.by_id
            .iter()
            .filter(|c| c.state() == ClientState::Login && matches!(c.peer, PeerAddr::Tcp(_)))
            .count()
    }

    /// Removes a client at disconnect. By identity, so that calling it twice (the session's own
    /// call, then its drop guard) never removes another client that got the same cancel key.
    pub fn unregister(&self, info: &ClientInfo) {
        let me = |_: &u64, c: &Arc<ClientInfo>| std::ptr::eq(Arc::as_ptr(c), info);
        self.by_id.remove_if(&info.id, me);
        self.by_key.remove_if(&key64(info.cancel_key), me);
    }

    /// The client a cancel key belongs to.
    pub fn by_cancel_key(&self, pid: u32, key: u32) -> Option<Arc<ClientInfo>> {
        self.by_key
            .get(&key64((pid, key)))
            .map(|e| e.value().clone())
    }

    /// A client by id.
    pub fn get(&self, id: u64) -> Option<Arc<ClientInfo>> {
        self.by_id.get(&id).map(|e| e.value().clone())
    }

    /// Every client, sorted by id.
    pub fn all(&self) -> Vec<Arc<ClientInfo>> {
        let mut v: Vec<_> = self.by_id.iter().map(|e| e.value().clone()).collect();
        v.sort_by_key(|c| c.id);
        v
    }

    /// Number of registered clients (admin included).
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// True when nobody is connected.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

impl crate::pool::Nudge for ClientInfo {
    fn nudge(&self) {
        self.notice_due.store(true, Ordering::Release);
        self.waker.wake();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::{BuildHasher, BuildHasherDefault};

    #[test]
    fn key_hasher_spreads_sequential_ids_and_random_keys() {
        let b = BuildHasherDefault::<KeyHasher>::default();
        // Sequential ids land in distinct buckets of a 1024-slot table (low bits) and spread
        // over the shards (high bits).
        let mut low = std::collections::HashSet::new();
        let mut high = std::collections::HashSet::new();
        for id in 0u64..1024 {
            let h = b.hash_one(id);
            low.insert(h & 1023);
            high.insert(h >> 58);
        }
        assert_eq!(low.len(), 1024);
        assert_eq!(high.len(), 64);
    }

    #[test]
    fn clients_are_found_by_id_and_cancel_key_and_removed() {
        let clients = Clients::default();
        let a = clients.register(PeerAddr::Unix, LocalAddr::Unix(6432));
        let b = clients.register(PeerAddr::Unix, LocalAddr::Unknown);
        assert!(Arc::ptr_eq(&clients.get(a.id).unwrap(), &a));
        let (pid, key) = b.cancel_key;
        assert!(Arc::ptr_eq(&clients.by_cancel_key(pid, key).unwrap(), &b));
        assert_eq!(a.local.host(), "unix");
        assert_eq!(a.local.port(), 6432);
        clients.unregister(&a);
        assert!(clients.get(a.id).is_none());
        assert_eq!(clients.len(), 1);
    }
}
