//! What one direction of a transfer sends next, in order: bytes at the front of its read buffer
//! to forward or to drop, and bytes the pipeline made (rewritten or synthetic frames). The
//! common case, everything forwarded, is a single counter and allocates nothing.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::AsyncWrite;

use crate::proto::Scanner;

enum Seg {
    /// Forward this many buffer bytes.
    Pass(usize),
    /// Drop this many buffer bytes.
    Skip(usize),
    /// Send these bytes.
    Insert(BytesMut),
}

/// The output plan of one direction (see the module doc).
#[derive(Default)]
pub(super) struct Out {
    /// Buffer bytes at the front to forward before anything in `segs`.
    front: usize,
    segs: VecDeque<Seg>,
}

/// What a flush attempt did.
pub(super) enum Flushed {
    /// Nothing was waiting.
    Idle,
    /// Wrote this many bytes, and this many of them came from the buffer.
    Wrote { n: usize, from_buf: usize },
}

impl Out {
    /// Nothing waits to be sent.
    pub(super) fn is_empty(&self) -> bool {
        self.front == 0 && self.segs.is_empty()
    }

    /// The next `n` buffer bytes go out as they are.
    pub(super) fn pass(&mut self, n: usize) {
        if n == 0 {
            return;
        }
        match self.segs.back_mut() {
            None => self.front += n,
            Some(Seg::Pass(m)) => *m += n,
            Some(_) => self.segs.push_back(Seg::Pass(n)),
        }
    }

    /// The next `n` buffer bytes are dropped.
    pub(super) fn skip(&mut self, n: usize) {
        match self.segs.back_mut() {
            Some(Seg::Skip(m)) => *m += n,
            _ => self.segs.push_back(Seg::Skip(n)),
        }
    }

    /// These bytes go out after everything planned so far.
    pub(super) fn insert(&mut self, bytes: BytesMut) {
        if !bytes.is_empty() {
            self.segs.push_back(Seg::Insert(bytes));
        }
    }

    /// Writes what it can of the plan to `w`, consuming buffer bytes as they go.
    pub(super) fn poll_flush<W: AsyncWrite + ?Sized + Unpin>(
        &mut self,
        buf: &mut BytesMut,
        scan: &mut Scanner,
        w: &mut W,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<Flushed>> {
        // Dropped bytes first: they cost no I/O.
        while self.front == 0 {
            match self.segs.front_mut() {
                None => return Poll::Ready(Ok(Flushed::Idle)),
                Some(Seg::Pass(n)) => {
                    self.front = *n;
                    self.segs.pop_front();
                }
                Some(Seg::Skip(n)) => {
                    let n = *n;
                    buf.advance(n);
                    scan.consumed(n);
                    self.segs.pop_front();
                }
                Some(Seg::Insert(b)) => {
                    let n = std::task::ready!(Pin::new(&mut *w).poll_write(cx, b))?;
                    if n > 0 {
                        b.advance(n);
                        if b.is_empty() {
                            self.segs.pop_front();
                        }
                    }
                    return Poll::Ready(Ok(Flushed::Wrote { n, from_buf: 0 }));
                }
            }
        }
        let n = std::task::ready!(Pin::new(&mut *w).poll_write(cx, &buf[..self.front]))?;
        buf.advance(n);
        scan.consumed(n);
        self.front -= n;
        Poll::Ready(Ok(Flushed::Wrote { n, from_buf: n }))
    }
}
