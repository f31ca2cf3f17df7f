//! The one buffered "read a frame, or read more" helper for the login-time and internal
//! exchanges (client auth, server login, the pooler's own queries). The hot path streams
//! instead and never comes here.

use std::io;

use bytes::BytesMut;
use tokio::io::AsyncReadExt;

use super::Stream;
use crate::proto::{self, Frame};

/// Why no frame came.
#[derive(Debug)]
pub enum ReadError {
    /// The socket failed.
    Io(io::Error),
    /// The peer closed before a whole frame arrived.
    Eof,
    /// The bytes are not a frame we accept (bad length, over `max`).
    Frame(String),
}

/// Returns the next whole frame from `buf`, reading from `stream` only while it is incomplete.
/// Lengths are checked against `max` before anything is reserved for them.
pub async fn read_frame(
    stream: &mut Stream,
    buf: &mut BytesMut,
    max: u32,
) -> Result<Frame, ReadError> {
    loop {
        match proto::read_frame(buf, max) {
            Ok(Some(f)) => return Ok(f),
            Ok(None) => {}
            Err(e) => return Err(ReadError::Frame(e.to_string())),
        }
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(4096);
        }
        if stream.read_buf(buf).await.map_err(ReadError::Io)? == 0 {
            return Err(ReadError::Eof);
        }
    }
}
