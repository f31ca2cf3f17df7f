//! Panic isolation at the session task's boundary: a panic in one client's session ends that
//! session only, and its books are kept right. Owns nothing but the boundary; what a session
//! holds is released by its own guards when the unwound session future is dropped here.
//!
//! What a panicked session leaves behind, and who cleans it up:
//! - its server: the [`crate::pool::Lease`] is dropped without a release, so it is closed (never
//!   returned to the pool: the session may have stopped mid-message) and its pool's counts and
//!   slot are freed;
//! - its place under max_client_conn and the per-database/per-user caps: `link::ClientSlot`;
//! - a queued wait: the pool's `Handoff` guard;
//! - its entry in the client list (SHOW CLIENTS, cancel keys): [`Registered`] below, which a
//!   session otherwise removes itself at its normal end.
//!
//! tokio would catch the panic anyway (a task's panic never reaches other tasks), but it drops
//! the task's future outside the panic, so nothing could log which client it was; catching it
//! here does, before the clean-up runs.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures_util::FutureExt;

use super::registry::ClientInfo;
use crate::context::Context;

/// A client's entry in the client list, removed when this guard drops: at the session's end
/// however it ends (returned, unwound by a panic, or dropped unfinished when the runtime stops).
pub(crate) struct Registered {
    /// Whose list the client is in.
    pub(crate) ctx: Arc<Context>,
    /// The client (removal is by identity, so a second removal is harmless).
    pub(crate) info: Arc<ClientInfo>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.ctx.clients.unregister(&self.info);
    }
}

/// Runs one session to its end; a panic inside it is caught, logged with the client's id, and
/// the session's state dropped (closing its socket and its server) before `guard` unregisters
/// the client. A plain function returning a combinator, not an `async fn`: see
/// [`crate::unwind::caught`] for why (this future is what each idle client costs). The same
/// combinators as `caught` without its `Map` of the panic payload: every wake-up of the
/// session polls through each layer here, so the payload is read in the one `Map` below.
pub(crate) fn isolated(
    guard: Registered,
    session: impl Future<Output = ()>,
) -> impl Future<Output = ()> {
    AssertUnwindSafe(session).catch_unwind().map(move |result| {
        if let Err(payload) = result {
            tracing::error!(
                "C-{} {}@{} session panicked ({}): its connection and server are closed, \
                 other clients are unaffected; this is a bug, please report it",
                guard.info.id,
                crate::logsafe::Clean(&*guard.info.user.lock()),
                guard.info.peer,
                crate::unwind::panic_text(payload.as_ref()),
            );
        }
        drop(guard);
    })
}
