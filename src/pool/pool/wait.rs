//! The queue of clients waiting for a server, and its deadlines. A child of `pool` so it shares
//! the pool's private state.
//!
//! Why no timer per waiter: with 500 clients on 20 servers nearly every checkout queues, and a
//! `timeout_at` per wait (plus the reserve timer) meant a timer-wheel insert and removal on
//! every hand-off, for deadlines (query_wait_timeout, 120 s by default) that almost never fire.
//! Instead each waiter carries its deadlines and one sweeper task per pool sleeps until the
//! earliest of them, as PgBouncer's janitor checks query_wait_timeout. The sweeper wakes when a
//! deadline is due (exactly then, not on a coarse tick) and otherwise costs nothing per
//! hand-off: under steady load its next wake-up is the oldest waiter's deadline, long after that
//! waiter was served, and it then simply sleeps again until the new oldest one's. The same goes
//! for query_wait_notify's NOTICE (a boxed sleep per queued checkout before): the session hands
//! in a [`crate::pool::Nudge`] that the sweeper calls when it is due.

use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::task::Poll;

use atomic_waker::AtomicWaker;
use parking_lot::Mutex;
use tokio::time::Instant;

use super::lease::Handoff;
use super::{Pool, State};
use crate::error::{Error, Result};
use crate::pool::signal::Nudging;
use crate::pool::PoolSettings;
use crate::server::ServerConn;

/// What a queued checkout is handed: a server, or why the wait ended.
pub(super) type Handed = Result<Box<ServerConn>>;

/// At most this many spare seats are kept per pool (one per client queued at once is enough).
const SPARE_SEATS: usize = 1024;

/// Where one queued checkout receives its server (or error): the pool's [`HandoffTx`] and the
/// waiting client's `Handoff` share it. Seats are reused from wait to wait (the pool keeps the
/// spare ones), so a queued checkout allocates nothing; a oneshot channel was a malloc and a
/// free per queued transaction, and with 50 clients on 20 servers nearly every one queues.
pub(super) struct Seat {
    /// The waiting client still wants the server; cleared (under `handed`'s lock) when it gives
    /// up, so nothing is handed to it after that.
    open: AtomicBool,
    /// The hand-off, until the client takes it.
    handed: Mutex<Option<Handed>>,
    /// The waiting client's task.
    waker: AtomicWaker,
}

impl Seat {
    fn new() -> Seat {
        Seat {
            open: AtomicBool::new(true),
            handed: Mutex::new(None),
            waker: AtomicWaker::new(),
        }
    }

    /// Hands `r` over, unless the client gave up (then it comes back).
    fn offer(&self, r: Handed) -> std::result::Result<(), Handed> {
        {
            let mut handed = self.handed.lock();
            if !self.open.load(Ordering::Acquire) || handed.is_some() {
                return Err(r);
            }
            *handed = Some(r);
        }
        self.waker.wake();
        Ok(())
    }

    /// The client gives up: nothing more is handed over; what already was comes back.
    pub(super) fn close(&self) -> Option<Handed> {
        let mut handed = self.handed.lock();
        self.open.store(false, Ordering::Release);
        handed.take()
    }
}

/// The pool's end of a queued checkout (a waiter's): hands over once. Dropped without a hand-off
/// (the pool gone), it tells the client so, as a dropped channel sender did.
pub(super) struct HandoffTx {
    seat: Option<Arc<Seat>>,
}

impl HandoffTx {
    /// An end that hands nothing (what a waiter keeps once it was answered).
    pub(super) fn spent() -> HandoffTx {
        HandoffTx { seat: None }
    }

    /// Hands `r` over; gives it back when the client already gave up.
    pub(super) fn send(mut self, r: Handed) -> std::result::Result<(), Handed> {
        match self.seat.take() {
            Some(seat) => seat.offer(r),
            None => Err(r),
        }
    }

    /// The client gave up waiting (or it was answered).
    pub(super) fn is_closed(&self) -> bool {
        self.seat
            .as_ref()
            .is_none_or(|s| !s.open.load(Ordering::Acquire))
    }
}

impl Drop for HandoffTx {
    fn drop(&mut self) {
        if let Some(seat) = self.seat.take() {
            let _ = seat.offer(Err(Error::DatabaseRemoved));
        }
    }
}

impl Pool {
    /// A seat for a new wait and the pool's end of it. Called with the state locked.
    pub(super) fn seat(st: &mut State) -> (HandoffTx, Arc<Seat>) {
        let seat = st.seats.pop().unwrap_or_else(|| Arc::new(Seat::new()));
        (
            HandoffTx {
                seat: Some(seat.clone()),
            },
            seat,
        )
    }
}

/// A queued client.
pub(super) struct Waiter {
    /// Where the server (or the error) goes; closed when the client gave up.
    pub(super) tx: HandoffTx,
    /// When the client started waiting (maxwait).
    pub(super) since: Instant,
    /// When the wait ends with an error, and whether query_timeout (not query_wait_timeout)
    /// is what ends it.
    pub(super) deadline: Option<(Instant, bool)>,
    /// When this waiter may ask for a reserve server (reserve_pool_timeout), until it did.
    pub(super) reserve_at: Option<Instant>,
    /// Whom to tell that the wait is long (query_wait_notify), until told.
    pub(super) nudge: Nudging,
}

impl Waiter {
    /// A waiter that started waiting at `started` under `settings`.
    pub(super) fn new(
        tx: HandoffTx,
        settings: &PoolSettings,
        started: Instant,
        nudge: Nudging,
    ) -> Waiter {
        let (deadline, query_first) = wait_deadline(settings, started);
        let reserve_at = (settings.reserve_pool_size > 0)
            .then(|| started + settings.reserve_pool_timeout)
            .filter(|r| deadline.is_none_or(|d| *r < d));
        Waiter {
            tx,
            // The checkout's own clock read: one per queued checkout, not two.
            since: started,
            deadline: deadline.map(|d| (d, query_first)),
            reserve_at,
            nudge,
        }
    }

    /// The earliest moment the sweeper has something to do for this waiter.
    fn next_due(&self) -> Option<Instant> {
        [
            self.deadline.map(|(d, _)| d),
            self.reserve_at,
            self.nudge.as_ref().map(|(at, _)| *at),
        ]
        .into_iter()
        .flatten()
        .min()
    }
}

impl Pool {
    /// Queues `waiter` and makes sure the sweeper wakes by its deadlines. Called with the state
    /// locked.
    pub(super) fn enqueue(self: &Arc<Self>, st: &mut State, waiter: Waiter) {
        let due = waiter.next_due();
        st.waiters.push_back(waiter);
        let Some(due) = due else { return };
        match st.sweep_at {
            // The sweeper wakes in time (the usual case: FIFO waiters under the same settings
            // come due in queue order).
            Some(at) if at <= due => {}
            Some(_) => {
                st.sweep_at = Some(due);
                self.sweep_wake.notify_one();
            }
            None => {
                st.sweep_at = Some(due);
                // Detached, not tracked: it holds only a `Weak` of the pool and ends when the
                // queue has no deadline left or the pool is gone; shutdown need not wait for a
                // task that only ever sends errors to waiters.
                tokio::spawn(sweeper(Arc::downgrade(self), due));
            }
        }
    }

    /// Ends the waits that are due at `now` and asks for reserve servers whose time came. Returns
    /// when to look again; `None` stops the sweeper (nothing queued has a deadline).
    fn sweep(self: &Arc<Self>, now: Instant) -> Option<Instant> {
        let mut st = self.state.lock();
        let mut reserve = 0;
        let mut next: Option<Instant> = None;
        st.waiters.retain_mut(|w| {
            if w.tx.is_closed() {
                return false;
            }
            if let Some((d, query_first)) = w.deadline {
                if d <= now {
                    let err = if query_first {
                        Error::QueryTimeoutWaiting
                    } else {
                        Error::QueryWaitTimeout
                    };
                    // A failed send means the client gave up at the same moment: nothing to do.
                    let tx = std::mem::replace(&mut w.tx, HandoffTx::spent());
                    let _ = tx.send(Err(err));
                    return false;
                }
            }
            if w.nudge.as_ref().is_some_and(|(at, _)| *at <= now) {
                if let Some((_, n)) = w.nudge.take() {
                    n.nudge();
                }
            }
            if w.reserve_at.is_some_and(|r| r <= now) {
                w.reserve_at = None;
                reserve += 1;
            }
            if let Some(due) = w.next_due() {
                next = Some(next.map_or(due, |n| n.min(due)));
            }
            true
        });
        for _ in 0..reserve {
            let beyond_pool_size = st.settings.pool_size != 0 && st.total >= st.settings.pool_size;
            if self.maybe_launch(&mut st, true) && beyond_pool_size {
                // PgBouncer's warning, which operators grep for to see the reserve in use.
                tracing::warn!(pool = %self.key, "taking connection from reserve_pool");
            }
        }
        st.sweep_at = next;
        next
    }
}

/// Sleeps until the pool's earliest waiter deadline (or until woken because an earlier one was
/// queued), then sweeps; ends when no queued client has a deadline or the pool is dropped.
async fn sweeper(pool: Weak<Pool>, first: Instant) {
    let sleep = tokio::time::sleep_until(first);
    tokio::pin!(sleep);
    loop {
        let wake = match pool.upgrade() {
            Some(p) => p.sweep_wake.clone(),
            None => return,
        };
        tokio::select! {
            _ = &mut sleep => {}
            _ = wake.notified() => {}
        }
        let Some(p) = pool.upgrade() else { return };
        let next = p.sweep(Instant::now());
        drop(p);
        match next {
            Some(at) => sleep.as_mut().reset(at),
            None => return,
        }
    }
}

impl Pool {
    /// Waits for a handoff. The wait ends with the sweeper's error at the waiter's deadline.
    pub(super) async fn wait(self: &Arc<Self>, seat: Arc<Seat>) -> Result<Box<ServerConn>> {
        // The guard makes the wait cancellation-safe: a client that stops waiting (kill,
        // disconnect, its own timer) gives back a server that was handed to it in the meantime.
        let mut guard = Handoff {
            seat: Some(seat),
            pool: self.clone(),
        };
        let r = poll_fn(|cx| {
            let seat = guard
                .seat
                .as_ref()
                .expect("invariant: set until the wait ends");
            // Registered first, then looked at: a hand-off in between still wakes us.
            seat.waker.register(cx.waker());
            match seat.handed.lock().take() {
                Some(r) => Poll::Ready(r),
                None => Poll::Pending,
            }
        })
        .await;
        let seat = guard
            .seat
            .take()
            .expect("invariant: set until the wait ends");
        // The pool let go of its end when it handed over: the seat serves the next wait.
        if Arc::strong_count(&seat) == 1 {
            // The waker names this task: not kept past the wait.
            drop(seat.waker.take());
            let mut st = self.state.lock();
            if st.seats.len() < SPARE_SEATS {
                st.seats.push(seat);
            }
        }
        r
    }
}

/// When a queued client stops waiting, and whether query_timeout (rather than
/// query_wait_timeout) is what ends it: as in PgBouncer, a query's timeout counts from its
/// arrival, so it bounds the wait for a server too.
fn wait_deadline(settings: &PoolSettings, started: Instant) -> (Option<Instant>, bool) {
    let wait = settings.query_wait_timeout;
    let query = settings.query_timeout;
    match (wait.is_zero(), query.is_zero()) {
        (true, true) => (None, false),
        (false, true) => (Some(started + wait), false),
        (true, false) => (Some(started + query), true),
        (false, false) if query < wait => (Some(started + query), true),
        (false, false) => (Some(started + wait), false),
    }
}
