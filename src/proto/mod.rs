//! PostgreSQL wire framing: bytes in, frames or forwardable spans out. No sockets, no config.
//!
//! Hand-written on purpose: postgres-protocol parses whole messages into owned structs, but the
//! hot path must forward bytes untouched, stream frames larger than its buffer, and look only at
//! the tag (and for a few tags, the body). A frame is 1 tag byte + a 4-byte length that counts
//! itself; lengths are checked against the caller's limit before anything is buffered for them.

pub mod build;
pub mod startup;

#[cfg(test)]
mod tests;

use bytes::{Buf, Bytes, BytesMut};

/// Tag byte + length field.
pub const HEADER_LEN: usize = 5;

/// Frames larger than this are streamed in pieces instead of being buffered whole, even when their
/// tag is one we like to see whole (callers apply it in their `whole` predicate; a frame that must
/// be rewritten, such as a tracked Bind, is wanted whole at any size up to max_packet_size).
pub const WHOLE_FRAME_CAP: usize = 64 * 1024;

/// A framing failure: the peer sent something that is not the protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Length field smaller than 4.
    #[error("invalid packet length {0}")]
    BadLength(u32),
    /// Length over max_packet_size.
    #[error("packet too large: {len} bytes (max_packet_size {max})")]
    TooLarge { len: u32, max: u32 },
}

/// One whole message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The type byte.
    pub tag: u8,
    /// Everything after the length field.
    pub body: Bytes,
}

fn header(buf: &[u8], max: u32) -> Result<Option<(u8, usize)>, FrameError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
    if len < 4 {
        return Err(FrameError::BadLength(len));
    }
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    Ok(Some((buf[0], len as usize + 1)))
}

/// Splits one whole frame off the front of `buf` without copying; `Ok(None)` when incomplete.
pub fn read_frame(buf: &mut BytesMut, max: u32) -> Result<Option<Frame>, FrameError> {
    let Some((tag, total)) = header(buf, max)? else {
        return Ok(None);
    };
    if buf.len() < total {
        buf.reserve(total - buf.len());
        return Ok(None);
    }
    let mut frame = buf.split_to(total);
    frame.advance(HEADER_LEN);
    Ok(Some(Frame {
        tag,
        body: frame.freeze(),
    }))
}

/// [`read_frame`] for a buffer that serves one frame only, with the body left mutable: when
/// `buf` holds exactly the frame, the whole buffer becomes the body (`buf` is left empty, with
/// no memory) rather than be split off, since a split makes the buffer shared, an allocation.
/// (A frozen body would allocate too: `Bytes` from a buffer with spare room.) A login's
/// password message comes this way.
pub fn take_frame(buf: &mut BytesMut, max: u32) -> Result<Option<(u8, BytesMut)>, FrameError> {
    let Some((tag, total)) = header(buf, max)? else {
        return Ok(None);
    };
    if buf.len() < total {
        buf.reserve(total - buf.len());
        return Ok(None);
    }
    let mut frame = if buf.len() == total {
        std::mem::take(buf)
    } else {
        buf.split_to(total)
    };
    frame.advance(HEADER_LEN);
    Ok(Some((tag, frame)))
}

/// What the scanner found at one step.
#[derive(Debug, PartialEq, Eq)]
pub enum Item<'a> {
    /// A whole frame at `buf[start..start+bytes.len()]`; `bytes` includes the header.
    Whole { tag: u8, bytes: &'a [u8] },
    /// The start of a frame that will be streamed in pieces: only its tag and total size are known.
    /// The bytes already present are part of the span that is forwarded.
    Partial { tag: u8, total: usize },
}

/// Walks a byte stream frame by frame so it can be forwarded as it arrives.
///
/// `scanned` bytes at the front of the buffer are complete units (whole frames, or pieces of a
/// streamed frame) that may be forwarded; the rest is an incomplete header or a frame we wait for.
#[derive(Debug, Default, Clone)]
pub struct Scanner {
    /// Bytes of a streamed frame that are still to come and pass through unseen.
    skip: usize,
    /// Offset (into the caller's buffer) up to which the buffer has been examined.
    pos: usize,
    /// When `next` last returned `None`: how many bytes from `pos` it needs to go on (a header,
    /// or a frame wanted whole). The caller must keep reading until it has them, whatever its
    /// usual buffer limit, or it would wait forever.
    need: usize,
}

/// How many bytes `buf` must hold before its first frame can be handled, or `None` when it can:
/// the frame is all there, or it may be streamed (`whole` is false for it). Used before
/// taking a server, so a client that sent half a frame we must see whole is read further first.
pub fn front_needs(
    buf: &[u8],
    max: u32,
    whole: impl Fn(u8, usize, &[u8]) -> bool,
) -> Result<Option<usize>, FrameError> {
    match header(buf, max)? {
        None => Ok(Some(HEADER_LEN)),
        Some((tag, total)) if buf.len() < total && whole(tag, total, &buf[HEADER_LEN..]) => {
            Ok(Some(total))
        }
        Some(_) => Ok(None),
    }
}

impl Scanner {
    /// Bytes at the front of the buffer that have been scanned and can be forwarded.
    pub fn scanned(&self) -> usize {
        self.pos
    }

    /// True when the stream is at a frame boundary (no streamed frame is half-way through).
    pub fn at_boundary(&self) -> bool {
        self.skip == 0
    }

    /// Bytes the buffer must hold past [`Scanner::scanned`] before `next` can yield again
    /// (0 when it is not waiting for anything).
    pub fn needs(&self) -> usize {
        self.need
    }

    /// Tells the scanner that the first `n` scanned bytes were consumed from the buffer.
    pub fn consumed(&mut self, n: usize) {
        debug_assert!(n <= self.pos);
        self.pos -= n.min(self.pos);
    }

    /// The whole frame `next` returned last (`old` bytes, at the end of the scanned bytes) was
    /// replaced in the buffer by `new` bytes: the scanned span ends after them.
    pub fn replaced(&mut self, old: usize, new: usize) {
        debug_assert!(old <= self.pos && self.skip == 0);
        self.pos = self.pos - old.min(self.pos) + new;
    }

    /// The next item in `buf[self.pos..]`, or `None` when more bytes are needed (how many:
    /// [`Scanner::needs`]). `whole(tag, total, body)` says which frames must be seen whole,
    /// given the part of the body present so far (it is asked again as more arrives, so it may
    /// say "whole" until the body shows otherwise); the caller caps their size (see
    /// [`WHOLE_FRAME_CAP`]).
    pub fn next<'a>(
        &mut self,
        buf: &'a [u8],
        max: u32,
        whole: impl Fn(u8, usize, &[u8]) -> bool,
    ) -> Result<Option<Item<'a>>, FrameError> {
        self.need = 0;
        loop {
            let avail = buf.len() - self.pos;
            if self.skip > 0 {
                if avail == 0 {
                    return Ok(None);
                }
                let n = self.skip.min(avail);
                self.skip -= n;
                self.pos += n;
                continue;
            }
            let rest = &buf[self.pos..];
            let Some((tag, total)) = header(rest, max)? else {
                self.need = HEADER_LEN;
                return Ok(None);
            };
            if rest.len() >= total {
                self.pos += total;
                return Ok(Some(Item::Whole {
                    tag,
                    bytes: &rest[..total],
                }));
            }
            if whole(tag, total, &rest[HEADER_LEN.min(rest.len())..]) {
                self.need = total;
                return Ok(None);
            }
            self.skip = total - rest.len();
            self.pos += rest.len();
            return Ok(Some(Item::Partial { tag, total }));
        }
    }
}
