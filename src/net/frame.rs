//! The one buffered "read a frame, or read more" helper for the login-time and internal
//! exchanges: the startup packet, client auth, server login, the admin console and the pooler's
//! own queries. The hot path streams instead and never comes here.
//!
//! One loop ([`read_with`]) for every framing: a tagged message ([`read_frame`]) and the untagged
//! startup-phase packet ([`read_startup`]) differ only in the pure parser it calls. The parser
//! checks the announced length against the caller's limit before anything is buffered for it, and
//! a unit split across TCP segments or TLS records is simply read further. Over TLS the reads come
//! out of rustls, so plaintext it already decrypted is used before the socket is asked again.

use std::io;

use bytes::BytesMut;
use tokio::io::AsyncReadExt;

use super::Stream;
use crate::proto::startup::{self, StartupError, StartupPacket};
use crate::proto::{self, Frame, FrameError};

/// Room kept free in the buffer before each read; small, because these exchanges are short.
/// A caller's first buffer of this size is read into as it is, never grown.
pub const READ_ROOM: usize = 1024;
/// How much to grow the buffer by when that room is missing.
const READ_GROW: usize = 4096;

/// Why no frame came.
#[derive(Debug)]
pub enum ReadError<E = FrameError> {
    /// The socket failed.
    Io(io::Error),
    /// The peer closed before a whole frame arrived.
    Eof,
    /// The bytes are not a frame we accept (bad length, over the limit, bad layout).
    Frame(E),
}

/// Returns the next whole unit `parse` finds at the front of `buf`, reading from `stream` only
/// while `parse` says it is incomplete (`Ok(None)`). `parse` consumes what it returns; bytes
/// after it stay in `buf` for the next call. Cancel-safe: what was read stays in `buf`.
pub async fn read_with<T, E>(
    stream: &mut Stream,
    buf: &mut BytesMut,
    mut parse: impl FnMut(&mut BytesMut) -> Result<Option<T>, E>,
) -> Result<T, ReadError<E>> {
    loop {
        match parse(buf) {
            Ok(Some(unit)) => return Ok(unit),
            Ok(None) => {}
            Err(e) => return Err(ReadError::Frame(e)),
        }
        if buf.capacity() - buf.len() < READ_ROOM {
            buf.reserve(READ_GROW);
        }
        if stream.read_buf(buf).await.map_err(ReadError::Io)? == 0 {
            return Err(ReadError::Eof);
        }
    }
}

/// The next tagged message (1 tag byte + length), at most `max` bytes long.
pub async fn read_frame(
    stream: &mut Stream,
    buf: &mut BytesMut,
    max: u32,
) -> Result<Frame, ReadError> {
    read_with(stream, buf, |b| proto::read_frame(b, max)).await
}

/// The next startup-phase packet (no tag byte: length + code + body), at most `max` bytes long.
pub async fn read_startup(
    stream: &mut Stream,
    buf: &mut BytesMut,
    max: u32,
) -> Result<StartupPacket, ReadError<StartupError>> {
    read_with(stream, buf, |b| startup::parse_startup(b, max)).await
}

#[cfg(test)]
mod tests;
