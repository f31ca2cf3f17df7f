//! What a client sends before its session starts: the untagged startup-phase packets
//! (SSLRequest, GSSENCRequest, CancelRequest, StartupMessage) and the libpq `options`
//! startup parameter.
//!
//! Pure parsing over a read buffer: no I/O, no policy. Deciding what to answer (SSL yes/no,
//! which parameters are allowed, the protocol version to negotiate) belongs to the session.

use bytes::{Buf, BytesMut};

/// Request code of a CancelRequest (`1234.5678`).
pub const CANCEL_REQUEST_CODE: u32 = 80_877_102;
/// Request code of an SSLRequest (`1234.5679`).
pub const SSL_REQUEST_CODE: u32 = 80_877_103;
/// Request code of a GSSENCRequest (`1234.5680`).
pub const GSSENC_REQUEST_CODE: u32 = 80_877_104;
/// Protocol 3.0 as sent in a StartupMessage.
pub const PROTOCOL_3_0: u32 = 3 << 16;

/// A complete startup-phase packet.
#[derive(Debug, Clone, PartialEq)]
pub enum StartupPacket {
    /// The client wants TLS; answer `S` or `N` with one byte.
    SslRequest,
    /// The client wants GSSAPI encryption; answer `N`.
    GssEncRequest,
    /// Cancel the query running in backend `pid` if `key` matches (always 16 bytes).
    Cancel {
        /// Process id from the BackendKeyData the client received.
        pid: u32,
        /// Secret key from that BackendKeyData.
        key: u32,
    },
    /// A protocol 3.x StartupMessage.
    Startup {
        /// Parameters in the order sent (`user`, `database`, `options`, GUCs, `_pq_.*`).
        params: Vec<(String, String)>,
        /// Requested minor version: 0 for 3.0; anything newer calls for a
        /// NegotiateProtocolVersion answer if we do not speak it.
        minor: u16,
    },
    /// A protocol 2 StartupMessage: answer "old V2 protocol not supported".
    V2,
}

/// Why a startup-phase packet was refused. The connection should be closed after any of
/// these; the buffer's contents are then unspecified.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum StartupError {
    /// The announced length exceeds the caller's limit (nothing was read or allocated).
    #[error("startup packet too large: {0} bytes")]
    TooLarge(u32),
    /// The announced length cannot even hold the length and the code.
    #[error("startup packet too short: {0} bytes")]
    TooShort(u32),
    /// The packet's layout is wrong.
    #[error("invalid startup packet layout: {0}")]
    Malformed(&'static str),
    /// Neither a known request code nor protocol 2 or 3.
    #[error("unsupported frontend protocol {}.{}", .0 >> 16, .0 & 0xffff)]
    UnknownCode(u32),
}

/// Reads one startup-phase packet from `buf`.
///
/// Startup packets have no tag: int32 length (including itself), int32 code, body.
/// Returns `Ok(None)` while the packet is incomplete and consumes it from `buf` once
/// complete. `max_len` bounds the announced length before anything is buffered, so a
/// client cannot make us wait for (and store) an arbitrary amount of data.
pub fn parse_startup(
    buf: &mut BytesMut,
    max_len: u32,
) -> Result<Option<StartupPacket>, StartupError> {
    let Some(len_bytes) = buf.get(..4) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes([len_bytes[0], len_bytes[1], len_bytes[2], len_bytes[3]]);
    if len < 8 {
        return Err(StartupError::TooShort(len));
    }
    if len > max_len {
        return Err(StartupError::TooLarge(len));
    }
    // `len` fits in usize on every platform we build for (usize >= 32 bits).
    let len = len as usize;
    if buf.len() < len {
        return Ok(None);
    }
    let mut packet = buf.split_to(len);
    packet.advance(4);
    let code = packet.get_u32();
    let body = &packet[..];

    match code {
        SSL_REQUEST_CODE => {
            expect_empty(body, "SSLRequest has a body").map(|()| StartupPacket::SslRequest)
        }
        GSSENC_REQUEST_CODE => {
            expect_empty(body, "GSSENCRequest has a body").map(|()| StartupPacket::GssEncRequest)
        }
        CANCEL_REQUEST_CODE => match body {
            [p0, p1, p2, p3, k0, k1, k2, k3] => Ok(StartupPacket::Cancel {
                pid: u32::from_be_bytes([*p0, *p1, *p2, *p3]),
                key: u32::from_be_bytes([*k0, *k1, *k2, *k3]),
            }),
            _ => Err(StartupError::Malformed("CancelRequest must be 16 bytes")),
        },
        _ => match code >> 16 {
            3 => Ok(StartupPacket::Startup {
                params: parse_params(body)?,
                minor: (code & 0xffff) as u16,
            }),
            2 => Ok(StartupPacket::V2),
            _ => Err(StartupError::UnknownCode(code)),
        },
    }
    .map(Some)
}

fn expect_empty(body: &[u8], what: &'static str) -> Result<(), StartupError> {
    if body.is_empty() {
        Ok(())
    } else {
        Err(StartupError::Malformed(what))
    }
}

/// `key\0value\0 ... \0`: pairs of C strings ended by an empty key, which must be the
/// last byte (as PostgreSQL requires).
fn parse_params(mut body: &[u8]) -> Result<Vec<(String, String)>, StartupError> {
    // Sized once: each pair has two NULs (growing from empty cost two or three reallocations
    // per login).
    let mut params = Vec::with_capacity(body.iter().filter(|&&b| b == 0).count() / 2);
    loop {
        let (key, rest) =
            split_cstr(body).ok_or(StartupError::Malformed("expected terminator as last byte"))?;
        if key.is_empty() {
            return if rest.is_empty() {
                Ok(params)
            } else {
                Err(StartupError::Malformed("data after the terminator"))
            };
        }
        let (value, rest) =
            split_cstr(rest).ok_or(StartupError::Malformed(if rest.is_empty() {
                "parameter without a value"
            } else {
                "expected terminator as last byte"
            }))?;
        params.push((utf8(key)?, utf8(value)?));
        body = rest;
    }
}

/// Splits a NUL-terminated string off the front of `data`.
fn split_cstr(data: &[u8]) -> Option<(&[u8], &[u8])> {
    let nul = data.iter().position(|&b| b == 0)?;
    Some((&data[..nul], &data[nul + 1..]))
}

fn utf8(bytes: &[u8]) -> Result<String, StartupError> {
    String::from_utf8(bytes.to_vec())
        .map_err(|_| StartupError::Malformed("startup parameter is not valid UTF-8"))
}

/// The libpq `options` startup parameter could not be understood.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum OptionsError {
    /// Something other than `-c key=value` / `--key=value` (PgBouncer's wording).
    #[error(
        "unsupported options startup parameter: only '-c config=val' and '--config=val' are allowed"
    )]
    Unsupported,
}

/// Parses libpq `options`: `-c key=value`, `-ckey=value` or `--key=value`, separated by
/// whitespace; a backslash makes the next character literal (`\ ` is a space in a value).
///
/// As PostgreSQL does, dashes in a key become underscores (`--search-path=x` sets
/// `search_path`). Anything else is [`OptionsError::Unsupported`].
pub fn parse_options(s: &str) -> Result<Vec<(String, String)>, OptionsError> {
    let mut out = Vec::new();
    let mut rest = s;
    loop {
        rest = rest.trim_start_matches(is_space);
        if rest.is_empty() {
            return Ok(out);
        }
        rest = if let Some(after) = rest.strip_prefix("-c") {
            after.trim_start_matches(is_space)
        } else if let Some(after) = rest.strip_prefix("--") {
            after
        } else {
            return Err(OptionsError::Unsupported);
        };
        let (token, after) = read_escaped_token(rest);
        rest = after;
        let (key, value) = token.split_once('=').ok_or(OptionsError::Unsupported)?;
        if key.is_empty() {
            return Err(OptionsError::Unsupported);
        }
        out.push((key.replace('-', "_"), value.to_owned()));
    }
}

/// Whitespace as C's `isspace` sees it, which is what libpq and PostgreSQL split on.
fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0b' | '\x0c')
}

/// Reads up to the next unescaped whitespace, removing escaping backslashes. A trailing
/// lone backslash is dropped (PgBouncer does the same).
fn read_escaped_token(s: &str) -> (String, &str) {
    let mut token = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => {
                if let Some((_, escaped)) = chars.next() {
                    token.push(escaped);
                }
            }
            c if is_space(c) => return (token, &s[i..]),
            c => token.push(c),
        }
    }
    (token, "")
}

#[cfg(test)]
mod tests;
