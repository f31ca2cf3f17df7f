//! What a pool tells its observer (the cluster router) when a server fails: the [`Signal`]
//! (refused, unreachable, closed, a role-change SQLSTATE) and the [`PoolObserver`] seam. Knows
//! nothing of Patroni; the router decides what a signal means for routing.

use crate::error::Error;

/// What a server failure suggests about its member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// A new connection was refused or found the wrong server: connection refused, a login
    /// refused with 57P01/57P02/57P03, or in recovery where a primary was expected.
    Refused,
    /// The member did not answer (connect timeout, unreachable network).
    Unreachable,
    /// A server closed: an idle one found closed, or one lost in the middle of a transaction.
    Gone,
    /// A transaction got a role-change SQLSTATE (57P01, 57P02, 57P03, 25006) from the server.
    Sqlstate,
}

impl Signal {
    /// What `err` (from a connect, a login or a transaction) suggests, if anything.
    pub fn of(err: &Error) -> Option<Signal> {
        match err {
            Error::ServerConnect { .. } if err.is_role_change_signal() => Some(Signal::Refused),
            Error::ServerConnect { .. } => Some(Signal::Unreachable),
            e if e.is_role_change_signal() => Some(Signal::Refused),
            Error::ServerGone | Error::ServerIo(_) => Some(Signal::Gone),
            _ => None,
        }
    }
}

/// Told once that a queued checkout has waited a while (query_wait_notify), so the waiting side
/// can say so without a timer of its own: the pool's waiter sweeper calls it (see `pool/wait.rs`).
/// Called with the pool's lock held: must only set a flag and wake, never call into the pool.
pub trait Nudge: Send + Sync {
    /// The wait reached the time it was asked to be nudged at.
    fn nudge(&self);
}

/// When to nudge a queued checkout, and whom.
pub type Nudging = Option<(tokio::time::Instant, std::sync::Arc<dyn Nudge>)>;

/// Hears about a pool's server failures (the cluster router: holds, bans, discovery pokes).
/// May be called with the pool's lock held: must not block nor call back into the pool.
pub trait PoolObserver: Send + Sync {
    /// A server of the member at `addr` (host, port) failed in a way that says `signal`.
    fn server_failed(&self, addr: (&crate::config::ServerHost, u16), signal: Signal);
}
