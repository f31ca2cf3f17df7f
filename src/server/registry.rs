//! Every live server connection, for SHOW SERVERS and the console's counts. A connection is
//! registered when its login succeeds and leaves the registry when it is dropped (the
//! [`Registration`] guard inside [`super::ServerConn`]), so the registry can never list a closed one.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use dashmap::DashMap;
use parking_lot::Mutex;

/// The one sequence client and server sockets are numbered from (SHOW CLIENTS / SHOW SERVERS
/// `id`), as PgBouncer numbers every socket from one counter: an id names one connection, never
/// a client and a server at once. Starts at 1. The only process-wide static besides the metrics
/// recorder, because ids must stay unique across contexts too (tests run several in-process).
static NEXT_SOCKET_ID: AtomicU64 = AtomicU64::new(1);

/// A fresh socket id for a new client or server connection.
pub fn next_socket_id() -> u64 {
    NEXT_SOCKET_ID.fetch_add(1, Ordering::Relaxed)
}

/// What a server is doing, as SHOW SERVERS names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ServerState {
    /// Logging in.
    Login = 0,
    /// In the pool, ready.
    Idle = 1,
    /// Linked to a client.
    Active = 2,
    /// In the pool, due for server_check_query before reuse.
    Used = 3,
    /// Running a reset or check query.
    Tested = 4,
    /// Back from a client, held until the cancels forwarded for it are closed.
    BeingCanceled = 5,
}

/// The shared face of one server connection.
#[derive(Debug)]
pub struct ServerInfo {
    pub id: u64,
    /// Pool database and user.
    pub db: String,
    pub user: String,
    /// Server address text and port.
    pub addr: String,
    pub port: u16,
    pub local_addr: (String, u16),
    pub connect_time: SystemTime,
    /// Backend PID (from BackendKeyData).
    pub remote_pid: u32,
    state: AtomicU8,
    /// Linked client id, 0 when none.
    linked: AtomicU64,
    /// When the current request started (µs on the session registry clock).
    pub request_time_us: AtomicU64,
    close_needed: AtomicBool,
    /// The linked client's application_name.
    pub application_name: Mutex<String>,
    /// Named prepared statements held (SHOW CLIENTS/SERVERS `prepared_statements`).
    pub prepared_statements: std::sync::atomic::AtomicU32,
    /// SHOW SERVERS `tls`: set once when registered (unset = plain).
    pub tls: std::sync::OnceLock<String>,
}

impl ServerInfo {
    /// Current state.
    pub fn state(&self) -> ServerState {
        match self.state.load(Ordering::Relaxed) {
            0 => ServerState::Login,
            1 => ServerState::Idle,
            2 => ServerState::Active,
            3 => ServerState::Used,
            4 => ServerState::Tested,
            _ => ServerState::BeingCanceled,
        }
    }

    /// Sets the state.
    pub fn set_state(&self, s: ServerState) {
        self.state.store(s as u8, Ordering::Relaxed);
    }

    /// The client linked right now.
    pub fn linked_client(&self) -> Option<u64> {
        match self.linked.load(Ordering::Relaxed) {
            0 => None,
            id => Some(id),
        }
    }

    /// Links (Some) or unlinks (None) a client.
    pub fn set_linked(&self, client: Option<u64>) {
        self.linked.store(client.unwrap_or(0), Ordering::Relaxed);
    }

    /// Marked to close at release (RECONNECT, config change).
    pub fn close_needed(&self) -> bool {
        self.close_needed.load(Ordering::Relaxed)
    }

    /// Marks it to close at release.
    pub fn mark_close_needed(&self) {
        self.close_needed.store(true, Ordering::Relaxed);
    }
}

/// The registry.
#[derive(Default, Debug)]
pub struct Servers {
    /// By server id.
    map: DashMap<u64, Arc<ServerInfo>>,
}

impl Servers {
    /// Every live server, sorted by id.
    pub fn all(&self) -> Vec<Arc<ServerInfo>> {
        let mut v: Vec<_> = self.map.iter().map(|e| e.value().clone()).collect();
        v.sort_by_key(|s| s.id);
        v
    }

    /// Servers of one pool.
    pub fn of_pool(&self, db: &str, user: &str) -> Vec<Arc<ServerInfo>> {
        self.map
            .iter()
            .filter(|e| e.db == db && e.user == user)
            .map(|e| e.value().clone())
            .collect()
    }

    /// Number of live servers.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// Keeps a server in the registry for as long as its connection lives.
#[derive(Debug)]
pub struct Registration {
    /// The registered entry.
    pub info: Arc<ServerInfo>,
    servers: Arc<Servers>,
}

impl Registration {
    /// Registers a logged-in connection.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        servers: &Arc<Servers>,
        id: u64,
        db: &str,
        user: &str,
        addr: String,
        port: u16,
        local_addr: (String, u16),
        remote_pid: u32,
    ) -> Registration {
        let info = Arc::new(ServerInfo {
            id,
            db: db.to_string(),
            user: user.to_string(),
            addr,
            port,
            local_addr,
            connect_time: SystemTime::now(),
            remote_pid,
            state: AtomicU8::new(ServerState::Idle as u8),
            linked: AtomicU64::new(0),
            request_time_us: AtomicU64::new(0),
            close_needed: AtomicBool::new(false),
            application_name: Mutex::new(String::new()),
            prepared_statements: Default::default(),
            tls: std::sync::OnceLock::new(),
        });
        servers.map.insert(id, info.clone());
        Registration {
            info,
            servers: servers.clone(),
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.servers.map.remove(&self.info.id);
    }
}
