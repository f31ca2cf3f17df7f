//! Cancel requests on their way to one server's backend.
//!
//! PostgreSQL acts on a CancelRequest when its postmaster reads it, which can be after the
//! query it was meant for has ended. If the pooler had handed the server to the next client by
//! then, that client's query would be cancelled instead. So, as PgBouncer does with its
//! `being_canceled` state, a server with forwarded cancels still open is not reused until the
//! backend has closed every one of those cancel connections (the signal is sent by then; a
//! signal that finds the backend idle is ignored).

use std::sync::atomic::{AtomicU32, Ordering};

use tokio::sync::Notify;

/// How many forwarded cancels for one server are still open, and a wake-up for when none are.
#[derive(Debug, Default)]
pub struct InFlight {
    open: AtomicU32,
    settled: Notify,
}

impl InFlight {
    /// Counts a cancel as open until the guard drops (however the forwarding ends).
    pub fn enter(&self) -> Entered<'_> {
        // SeqCst pairs with the check-in side's load: a cancel that read the client's link
        // before check-in cleared it is counted by the time check-in looks (see `busy`).
        self.open.fetch_add(1, Ordering::SeqCst);
        Entered(self)
    }

    /// True while a forwarded cancel is open.
    pub fn busy(&self) -> bool {
        self.open.load(Ordering::SeqCst) > 0
    }

    /// Resolves once no forwarded cancel is open.
    pub async fn settled(&self) {
        loop {
            let wake = self.settled.notified();
            tokio::pin!(wake);
            // Registered before the check, so a drop to zero in between is not missed.
            wake.as_mut().enable();
            if !self.busy() {
                return;
            }
            wake.await;
        }
    }
}

// A copy (`Arc::make_mut` at login) starts with nothing in flight; the count belongs to the
// connection the original describes.
impl Clone for InFlight {
    fn clone(&self) -> Self {
        InFlight::default()
    }
}

// The count is state, not identity: two targets are equal whatever is in flight.
impl PartialEq for InFlight {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for InFlight {}

/// One open cancel; closes it on drop.
pub struct Entered<'a>(&'a InFlight);

impl Drop for Entered<'_> {
    fn drop(&mut self) {
        if self.0.open.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.settled.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn settled_waits_for_the_last_open_cancel() {
        let f = Arc::new(InFlight::default());
        let a = f.enter();
        let b = f.enter();
        assert!(f.busy());
        let waiter = tokio::spawn({
            let f = f.clone();
            async move { f.settled().await }
        });
        drop(a);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "one cancel is still open");
        drop(b);
        waiter.await.expect("settled once both closed");
        assert!(!f.busy());
        // Nothing open: resolves at once.
        f.settled().await;
    }
}
