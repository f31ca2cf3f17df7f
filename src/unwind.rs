//! Catching a panic at a task's boundary, so the task that owned the state can say which
//! client or pool it was and put its books right. Used by the session task and the pool's
//! launch task; nothing else should need it (a panic is a bug, never an expected path).

use std::any::Any;
use std::future::{poll_fn, Future};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::task::Poll;

/// Runs `fut` to its end; a panic inside it comes back as `Err` with the panic's message. The
/// future is dropped (its guards run) before this returns, and never polled again after a panic.
///
/// Unwind safety: the caller must only read state that the future's own guards or its
/// `parking_lot` locks (which do not poison, and unlock while unwinding) keep consistent.
pub async fn caught<F: Future>(fut: F) -> Result<F::Output, String> {
    let mut fut = std::pin::pin!(fut);
    poll_fn(
        |cx| match catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(out)) => Poll::Ready(Ok(out)),
            Err(payload) => Poll::Ready(Err(panic_text(payload.as_ref()).to_string())),
        },
    )
    .await
}

/// The message of a panic payload (`panic!` with a literal or a formatted string).
fn panic_text(payload: &(dyn Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "non-text payload"
    }
}

#[cfg(test)]
mod tests {
    use super::caught;

    #[tokio::test]
    async fn a_panic_comes_back_as_its_message() {
        let out = caught(async {
            tokio::task::yield_now().await;
            if std::hint::black_box(true) {
                panic!("boom {}", 7);
            }
            1
        })
        .await;
        assert_eq!(out, Err("boom 7".to_string()));
        assert_eq!(caught(async { 2 }).await, Ok(2));
    }
}
