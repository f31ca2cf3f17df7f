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
        params: RawParams,
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
    let code = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
    // (SSLRequest, GSSENCRequest and CancelRequest have codes of no protocol 3 version.)
    if code >> 16 != 3 {
        // Nothing of these is kept: read in place, and the buffer keeps its memory for the
        // StartupMessage that follows an SSLRequest (libpq's sslmode=prefer sends one on every
        // connect, and taking the buffer with it cost a fresh one for the next read).
        let packet = short_packet(code, &buf[8..len]);
        buf.advance(len);
        return packet.map(Some);
    }
    // The usual read holds exactly this packet: take the whole buffer rather than split it
    // (a split makes the buffer shared, an allocation per login).
    let mut packet = if buf.len() == len {
        std::mem::take(buf)
    } else {
        buf.split_to(len)
    };
    packet.advance(8);
    check_params(&packet)?;
    Ok(Some(StartupPacket::Startup {
        params: RawParams(packet),
        minor: (code & 0xffff) as u16,
    }))
}

/// Any packet but a StartupMessage, from its code and body.
fn short_packet(code: u32, body: &[u8]) -> Result<StartupPacket, StartupError> {
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
        _ if code >> 16 == 2 => Ok(StartupPacket::V2),
        _ => Err(StartupError::UnknownCode(code)),
    }
}

fn expect_empty(body: &[u8], what: &'static str) -> Result<(), StartupError> {
    if body.is_empty() {
        Ok(())
    } else {
        Err(StartupError::Malformed(what))
    }
}

/// The parameters of a StartupMessage as they arrived: `key\0value\0 ... \0`, checked when the
/// packet was parsed (UTF-8, well terminated) and read in place. A login used to copy every key
/// and value into a String of its own (six allocations for a typical driver's packet).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct RawParams(BytesMut);

impl RawParams {
    /// The pairs in the order sent.
    pub fn iter(&self) -> RawParamsIter<'_> {
        // Checked when the packet was parsed (`check_params`): one pass over the whole body
        // here, not one per key and value (a login walks the list twice).
        RawParamsIter(std::str::from_utf8(&self.0).unwrap_or_default())
    }

    /// The parameters of `pairs`, laid out as a client sends them (tests and tools). A pair with
    /// a NUL or an empty key cannot be sent, and is left out.
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> RawParams {
        let mut body = BytesMut::new();
        for (k, v) in pairs {
            if k.is_empty() || k.contains('\0') || v.contains('\0') {
                continue;
            }
            for s in [k, v] {
                body.extend_from_slice(s.as_bytes());
                body.extend_from_slice(b"\0");
            }
        }
        body.extend_from_slice(b"\0");
        RawParams(body)
    }
}

impl std::fmt::Debug for RawParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// The pairs of a [`RawParams`].
#[derive(Clone)]
pub struct RawParamsIter<'a>(&'a str);

impl<'a> Iterator for RawParamsIter<'a> {
    type Item = (&'a str, &'a str);

    fn next(&mut self) -> Option<(&'a str, &'a str)> {
        // A byte search: `str::split_once` with a char pattern cost more than the UTF-8 checks
        // this iterator saves.
        let (key, rest) = split_str(self.0)?;
        let (value, rest) = split_str(rest)?;
        if key.is_empty() {
            return None;
        }
        self.0 = rest;
        Some((key, value))
    }
}

/// `key\0value\0 ... \0`: pairs of C strings ended by an empty key, which must be the
/// last byte (as PostgreSQL requires).
fn check_params(mut body: &[u8]) -> Result<(), StartupError> {
    // The usual packet is valid UTF-8 as a whole, and then so is every key and value (split at
    // NULs): one pass instead of one per string. Otherwise each is checked, so the error named
    // is the first one, as before.
    let utf8 = std::str::from_utf8(body).is_ok();
    loop {
        let (key, rest) =
            split_cstr(body).ok_or(StartupError::Malformed("expected terminator as last byte"))?;
        if key.is_empty() {
            return if rest.is_empty() {
                Ok(())
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
        if !utf8 && (std::str::from_utf8(key).is_err() || std::str::from_utf8(value).is_err()) {
            return Err(StartupError::Malformed(
                "startup parameter is not valid UTF-8",
            ));
        }
        body = rest;
    }
}

/// [`split_cstr`] for text.
fn split_str(s: &str) -> Option<(&str, &str)> {
    let nul = s.bytes().position(|b| b == 0)?;
    Some((&s[..nul], &s[nul + 1..]))
}

/// Splits a NUL-terminated string off the front of `data`.
fn split_cstr(data: &[u8]) -> Option<(&[u8], &[u8])> {
    let nul = data.iter().position(|&b| b == 0)?;
    Some((&data[..nul], &data[nul + 1..]))
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
