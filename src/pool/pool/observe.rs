//! A pool's side of the cluster router: who hears about its server failures, and whether new
//! servers must prove they are not in recovery. A child of `pool` so it shares its state.

use std::sync::Arc;

use super::super::signal::{PoolObserver, Signal};
use super::Pool;
use crate::error::Error;

impl Pool {
    /// Sets who hears about this pool's server failures (cluster members only).
    pub fn set_observer(&self, observer: Arc<dyn PoolObserver>) {
        self.state.lock().observer = Some(observer);
    }

    /// Whether each new server must prove it is not in recovery before use.
    pub fn set_verify_primary(&self, on: bool) {
        self.state.lock().verify_primary = on;
    }

    /// Tells the observer (if any) what a server failure of this pool suggests: the session
    /// calls it when a transaction ends with the server gone or a role-change SQLSTATE.
    pub fn report_failure(&self, err: &Error) {
        if let Some(signal) = Signal::of(err) {
            self.report(signal);
        }
    }

    /// Tells the observer (if any) about `signal` on this pool's member.
    pub fn report(&self, signal: Signal) {
        let (observer, target) = {
            let st = self.state.lock();
            (st.observer.clone(), st.target.clone())
        };
        if let Some(o) = observer {
            o.server_failed((&target.host, target.port), signal);
        }
    }
}
