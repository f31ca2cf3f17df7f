//! A small process-wide stock of client read buffers, so a transaction does not pay a malloc and
//! a free of its 8 KiB read buffer.
//!
//! Why: an idle client owns no read buffer (the memory rule), so every request used to allocate
//! one and every return to idle freed it. 8 KiB is above glibc's per-thread cache (tcache), so
//! each of those went through `_int_malloc`/`_int_free` and chunk consolidation: about 5% of the
//! pooler's CPU at 500 clients. The stock is bounded ([`STOCK_MAX`] buffers, 512 KiB), so idle
//! memory stays independent of the number of clients. Nothing here does I/O.

use bytes::BytesMut;
use parking_lot::Mutex;

/// The size of a client read buffer (what an idle client's first read reserves).
pub const READ_BUF: usize = 8 * 1024;

/// At most this many spare buffers are kept.
const STOCK_MAX: usize = 64;

/// Spare, empty read buffers of [`READ_BUF`] bytes. Short lock, never held across an await.
#[derive(Default)]
pub struct ReadBufs {
    /// The spare buffers; each is empty, unshared and has room for [`READ_BUF`] bytes.
    stock: Mutex<Vec<BytesMut>>,
}

impl ReadBufs {
    /// A buffer with room for at least [`READ_BUF`] bytes: a spare one, or a new one.
    pub fn take(&self) -> BytesMut {
        match self.stock.lock().pop() {
            Some(b) => b,
            None => BytesMut::with_capacity(READ_BUF),
        }
    }

    /// Keeps `buf` (which must be empty) for the next client, if it is reusable in place and
    /// the stock has room; frees it otherwise.
    pub fn give(&self, mut buf: BytesMut) {
        debug_assert!(buf.is_empty());
        // Only a buffer whose memory nothing else shares (no frame split off it is still alive)
        // and that is not oversized (a large request's) goes back.
        if buf.capacity() > 4 * READ_BUF || !buf.try_reclaim(READ_BUF) {
            return;
        }
        let mut stock = self.stock.lock();
        if stock.len() < STOCK_MAX {
            stock.push(buf);
        }
    }

    /// Spare buffers kept right now.
    pub fn len(&self) -> usize {
        self.stock.lock().len()
    }

    /// True when no spare buffer is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_reused_up_to_the_bound() {
        let bufs = ReadBufs::default();
        let b = bufs.take();
        assert!(b.capacity() >= READ_BUF);
        let ptr = b.as_ptr();
        bufs.give(b);
        assert_eq!(bufs.len(), 1);
        let again = bufs.take();
        assert_eq!(again.as_ptr(), ptr, "the same memory came back");
        assert!(bufs.is_empty());
        for _ in 0..STOCK_MAX + 10 {
            bufs.give(BytesMut::with_capacity(READ_BUF));
        }
        assert_eq!(bufs.len(), STOCK_MAX, "the stock is bounded");
    }

    #[test]
    fn a_buffer_still_shared_or_oversized_is_not_kept() {
        let bufs = ReadBufs::default();
        let mut b = bufs.take();
        b.extend_from_slice(b"frame");
        let frame = b.split_to(5).freeze();
        bufs.give(b);
        assert!(
            bufs.is_empty(),
            "a frame split off it is alive: not reusable in place"
        );
        drop(frame);
        bufs.give(BytesMut::with_capacity(READ_BUF * 8));
        assert!(bufs.is_empty(), "a large request's buffer is freed");
    }
}
