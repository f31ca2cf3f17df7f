//! Catching a panic at a task's boundary, so the task that owned the state can say which
//! client or pool it was and put its books right. Used by the session task and the pool's
//! launch task; nothing else should need it (a panic is a bug, never an expected path).

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;

use futures_util::FutureExt;

/// Runs `fut` to its end; a panic inside it comes back as `Err` with the panic's message. The
/// future is dropped (its guards run) before this returns, and never polled again after a panic.
///
/// Built from futures-util's `CatchUnwind` and `Map` rather than as an `async fn`: an async fn
/// (or block) that takes a future by value and awaits it stores that future twice in its own
/// state (rust-lang/rust#62958), and the session task's future is what every idle client costs.
///
/// Unwind safety: the caller must only read state that the future's own guards or its
/// `parking_lot` locks (which do not poison, and unlock while unwinding) keep consistent.
pub fn caught<F: Future>(fut: F) -> impl Future<Output = Result<F::Output, String>> {
    // `Map` drops the finished (or unwound) future before it calls the closure.
    AssertUnwindSafe(fut)
        .catch_unwind()
        .map(|r| r.map_err(|payload| panic_text(payload.as_ref()).to_string()))
}

/// The message of a panic payload (`panic!` with a literal or a formatted string).
pub fn panic_text(payload: &(dyn Any + Send)) -> &str {
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

    /// The wrapper holds the future once: an async fn around it held it twice, which every
    /// idle client paid for (its session task is wrapped).
    #[test]
    fn the_wrapped_future_is_held_once() {
        let big = async {
            let buf = [7u8; 4096];
            tokio::task::yield_now().await;
            std::hint::black_box(&buf);
        };
        let alone = std::mem::size_of_val(&big);
        let wrapped = caught(big);
        assert!(
            std::mem::size_of_val(&wrapped) < alone + 64,
            "{} bytes around a {alone}-byte future",
            std::mem::size_of_val(&wrapped)
        );
    }
}
