//! CancelRequest handling: the key we gave a client maps to the server it is linked to right now,
//! and the cancel goes to that server over a new connection with the server's own key. Nothing is
//! ever written back on the cancel connection (PgBouncer and PostgreSQL just close it).

use std::sync::atomic::Ordering;

use crate::context::Context;
use crate::server;

/// Forwards a client's cancel request, if it names a client that is running something.
pub async fn forward(ctx: &Context, pid: u32, key: u32) {
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
    let tcp = crate::net::TcpOptions::from_general(&ctx.config().general);
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
