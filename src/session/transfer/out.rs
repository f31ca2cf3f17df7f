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
    /// Buffer bytes copied into an insert that is not written yet (for the tally).
    absorbed: usize,
    /// Planned buffer bytes the pooler wrote there (a rewrite in place): not the client's, so
    /// not counted as forwarded when they go out (the frame they replace was counted).
    uncounted: usize,
}

/// An insert grows to at most this much by absorbing what follows it.
const ABSORB_LIMIT: usize = 16 * 1024;

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

    /// Planned pieces besides the leading run of buffer bytes (tests: a rewrite in place
    /// leaves none).
    #[cfg(test)]
    pub(super) fn pieces(&self) -> usize {
        self.segs.len()
    }

    /// The next `n` buffer bytes go out as they are, but the pooler wrote them: see `uncounted`.
    pub(super) fn pass_uncounted(&mut self, n: usize) {
        self.pass(n);
        self.uncounted += n;
    }

    /// Of `n` buffer bytes written, those that count as forwarded (see `uncounted`).
    fn counted(&mut self, n: usize) -> usize {
        let own = n.min(self.uncounted);
        self.uncounted -= own;
        n - own
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

    /// Before an insert is written: the small runs of buffer bytes and inserts right behind it
    /// are copied into it, so a rewritten frame and the frames after it (a renamed Bind, then
    /// Execute and Sync) go out in one write, not one per piece. Returns the buffer bytes
    /// copied (forwarded, for the tally).
    fn absorb(&mut self, buf: &mut BytesMut, scan: &mut Scanner) -> usize {
        let mut segs = std::mem::take(&mut self.segs);
        let Some(Seg::Insert(mut head)) = segs.pop_front() else {
            unreachable!("invariant: called with an insert at the front");
        };
        // Buffer bytes behind the insert (front is 0 here) that are already planned: copied
        // (passes) or dropped (skips) in order.
        let mut used = 0;
        let mut copied = 0;
        while let Some(seg) = segs.front_mut() {
            match seg {
                Seg::Pass(n) => {
                    if head.len() + *n > ABSORB_LIMIT {
                        break;
                    }
                    head.extend_from_slice(&buf[used..used + *n]);
                    used += *n;
                    copied += *n;
                }
                Seg::Skip(n) => used += *n,
                Seg::Insert(b) => {
                    if head.len() + b.len() > ABSORB_LIMIT {
                        break;
                    }
                    head.extend_from_slice(b);
                }
            }
            segs.pop_front();
        }
        buf.advance(used);
        scan.consumed(used);
        segs.push_front(Seg::Insert(head));
        self.segs = segs;
        self.counted(copied)
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
                Some(Seg::Insert(_)) => {
                    let from_buf = self.absorb(buf, scan);
                    let Some(Seg::Insert(b)) = self.segs.front_mut() else {
                        unreachable!("invariant: the front is the insert just extended");
                    };
                    let n = match Pin::new(&mut *w).poll_write(cx, b) {
                        Poll::Ready(r) => r?,
                        // The absorbed bytes are counted when the write goes through.
                        Poll::Pending => {
                            self.absorbed += from_buf;
                            return Poll::Pending;
                        }
                    };
                    let from_buf = from_buf + std::mem::take(&mut self.absorbed);
                    if n > 0 {
                        b.advance(n);
                        if b.is_empty() {
                            self.segs.pop_front();
                        }
                    }
                    return Poll::Ready(Ok(Flushed::Wrote { n, from_buf }));
                }
            }
        }
        let n = std::task::ready!(Pin::new(&mut *w).poll_write(cx, &buf[..self.front]))?;
        buf.advance(n);
        scan.consumed(n);
        self.front -= n;
        let from_buf = self.counted(n);
        Poll::Ready(Ok(Flushed::Wrote { n, from_buf }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records each write call.
    #[derive(Default)]
    struct Writes(Vec<Vec<u8>>);

    impl AsyncWrite for Writes {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.0.push(buf.to_vec());
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn flush_all(out: &mut Out, buf: &mut BytesMut, scan: &mut Scanner, w: &mut Writes) -> usize {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut from_buf = 0;
        while let Poll::Ready(Ok(Flushed::Wrote { from_buf: f, .. })) =
            out.poll_flush(buf, scan, w, &mut cx)
        {
            from_buf += f;
        }
        from_buf
    }

    /// A buffer of whole frames, all scanned.
    fn scanned(frames: &[&[u8]]) -> (BytesMut, Scanner) {
        let mut buf = BytesMut::new();
        for f in frames {
            buf.extend_from_slice(&[f[0], 0, 0, 0, (f.len() + 3) as u8]);
            buf.extend_from_slice(&f[1..]);
        }
        let mut scan = Scanner::default();
        while let Ok(Some(_)) = scan.next(&buf, 1 << 20, |_, _, _| false) {}
        assert_eq!(scan.scanned(), buf.len());
        (buf, scan)
    }

    #[test]
    fn a_rewrite_and_what_follows_go_out_in_one_write() {
        // A frame replaced, one forwarded, one dropped, a synthetic one, one forwarded.
        let (mut buf, mut scan) = scanned(&[b"Bold", b"E", b"C", b"S"]);
        let mut out = Out::default();
        out.skip(8);
        out.insert(BytesMut::from(&b"<new>"[..]));
        out.pass(5);
        out.skip(5);
        out.insert(BytesMut::from(&b"!"[..]));
        out.pass(5);
        let mut w = Writes::default();
        let from_buf = flush_all(&mut out, &mut buf, &mut scan, &mut w);
        let mut want = b"<new>".to_vec();
        want.extend_from_slice(&[b'E', 0, 0, 0, 4, b'!', b'S', 0, 0, 0, 4]);
        assert_eq!(w.0, vec![want]);
        assert_eq!(from_buf, 10);
        assert!(out.is_empty() && buf.is_empty() && scan.scanned() == 0);
    }

    #[test]
    fn plain_forwarding_writes_straight_from_the_buffer() {
        let (mut buf, mut scan) = scanned(&[b"Qselect", b"S"]);
        let mut out = Out::default();
        out.pass(11);
        let mut w = Writes::default();
        assert_eq!(flush_all(&mut out, &mut buf, &mut scan, &mut w), 11);
        assert_eq!(w.0.len(), 1);
        assert_eq!(buf.len(), 5);
    }
}
