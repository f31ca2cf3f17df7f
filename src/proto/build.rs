//! Messages the pooler writes itself, and the few message bodies it must read at login.
//!
//! Builders append one complete message (tag, length, body) to a `BytesMut`: backend
//! messages we send to clients (errors, ParameterStatus, authentication requests, the admin
//! console's rows) and thin wrappers over postgres-protocol's frontend builders for what
//! we send to servers. Decoders take a message *body* (the caller already stripped the
//! 5-byte header), borrow from it, never panic and reject anything malformed.
//!
//! No I/O and no policy here: which error to send, or whether an authentication method is
//! acceptable, is decided by the session and server modules.

use bytes::{BufMut, BytesMut};
use postgres_protocol::message::frontend;

/// A body could not be decoded (or, for the frontend wrappers, not encoded).
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum BuildError {
    /// The bytes do not have the layout the message type requires.
    #[error("malformed protocol message: {0}")]
    Malformed(&'static str),
}

/// Severity of an ErrorResponse or NoticeResponse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The current command failed.
    Error,
    /// The session is being ended.
    Fatal,
    /// Informational notice.
    Notice,
    /// Warning notice.
    Warning,
    /// Log-level notice.
    Log,
    /// Info-level notice.
    Info,
}

impl Severity {
    /// The non-localized keyword PostgreSQL uses in the `S` and `V` fields.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "ERROR",
            Severity::Fatal => "FATAL",
            Severity::Notice => "NOTICE",
            Severity::Warning => "WARNING",
            Severity::Log => "LOG",
            Severity::Info => "INFO",
        }
    }
}

// ---------------------------------------------------------------------------------------
// Backend messages we send to clients.
// ---------------------------------------------------------------------------------------

/// ErrorResponse with the fields clients rely on: `S` and `V` (severity), `C` (SQLSTATE),
/// `M` (message).
pub fn error_response(buf: &mut BytesMut, severity: Severity, sqlstate: &str, message: &str) {
    let s = severity.as_str();
    error_response_fields(
        buf,
        &[(b'S', s), (b'V', s), (b'C', sqlstate), (b'M', message)],
    );
}

/// ErrorResponse with arbitrary `(field type, value)` pairs, e.g. to pass on a server's
/// error after [`parse_error_fields`]. A field type of 0 would end the list early and is
/// skipped.
pub fn error_response_fields(buf: &mut BytesMut, fields: &[(u8, &str)]) {
    fields_message(buf, b'E', fields);
}

/// NoticeResponse with severity NOTICE, the SQLSTATE, the message and an optional detail.
pub fn notice_response(buf: &mut BytesMut, sqlstate: &str, message: &str, detail: Option<&str>) {
    let s = Severity::Notice.as_str();
    let mut fields = vec![(b'S', s), (b'V', s), (b'C', sqlstate), (b'M', message)];
    if let Some(detail) = detail {
        fields.push((b'D', detail));
    }
    fields_message(buf, b'N', &fields);
}

fn fields_message(buf: &mut BytesMut, tag: u8, fields: &[(u8, &str)]) {
    message(buf, tag, |buf| {
        for &(kind, value) in fields.iter().filter(|(kind, _)| *kind != 0) {
            buf.put_u8(kind);
            put_cstr(buf, value);
        }
        buf.put_u8(0);
    });
}

/// ParameterStatus (`S`): a run-time parameter's current value.
pub fn parameter_status(buf: &mut BytesMut, name: &str, value: &str) {
    message(buf, b'S', |buf| {
        put_cstr(buf, name);
        put_cstr(buf, value);
    });
}

/// BackendKeyData (`K`): the cancel key the client must quote in a CancelRequest.
pub fn backend_key_data(buf: &mut BytesMut, pid: u32, key: u32) {
    message(buf, b'K', |buf| {
        buf.put_u32(pid);
        buf.put_u32(key);
    });
}

/// ReadyForQuery (`Z`) with transaction status `I`, `T` or `E`.
pub fn ready_for_query(buf: &mut BytesMut, status: u8) {
    message(buf, b'Z', |buf| buf.put_u8(status));
}

/// Authentication request codes (`R` messages).
const AUTH_OK: u32 = 0;
const AUTH_CLEARTEXT: u32 = 3;
const AUTH_MD5: u32 = 5;
const AUTH_SASL: u32 = 10;
const AUTH_SASL_CONTINUE: u32 = 11;
const AUTH_SASL_FINAL: u32 = 12;

fn auth_request(buf: &mut BytesMut, code: u32, payload: impl FnOnce(&mut BytesMut)) {
    message(buf, b'R', |buf| {
        buf.put_u32(code);
        payload(buf);
    });
}

/// AuthenticationOk.
pub fn auth_ok(buf: &mut BytesMut) {
    auth_request(buf, AUTH_OK, |_| {});
}

/// AuthenticationCleartextPassword.
pub fn auth_cleartext(buf: &mut BytesMut) {
    auth_request(buf, AUTH_CLEARTEXT, |_| {});
}

/// AuthenticationMD5Password with its 4-byte salt.
pub fn auth_md5(buf: &mut BytesMut, salt: [u8; 4]) {
    auth_request(buf, AUTH_MD5, |buf| buf.put_slice(&salt));
}

/// AuthenticationSASL listing the mechanisms offered (e.g. `["SCRAM-SHA-256"]`).
pub fn auth_sasl(buf: &mut BytesMut, mechanisms: &[&str]) {
    auth_request(buf, AUTH_SASL, |buf| {
        for mechanism in mechanisms {
            put_cstr(buf, mechanism);
        }
        buf.put_u8(0);
    });
}

/// AuthenticationSASLContinue carrying the server-first-message.
pub fn auth_sasl_continue(buf: &mut BytesMut, data: &[u8]) {
    auth_request(buf, AUTH_SASL_CONTINUE, |buf| buf.put_slice(data));
}

/// AuthenticationSASLFinal carrying the server-final-message.
pub fn auth_sasl_final(buf: &mut BytesMut, data: &[u8]) {
    auth_request(buf, AUTH_SASL_FINAL, |buf| buf.put_slice(data));
}

/// RowDescription (`T`) for text-format columns of a result we produce ourselves (the admin
/// console). Table OID and column number are 0, type modifier -1; the type length is
/// the real one for fixed-size types we use (bool 1, int2 2, int4/oid/float4 4,
/// int8/float8 8) and -1 (variable) for everything else.
///
/// # Panics
/// With more than 65535 columns (the protocol's limit; never reached by our own rows).
pub fn row_description(buf: &mut BytesMut, columns: &[(&str, u32)]) {
    message(buf, b'T', |buf| {
        buf.put_u16(count_u16(columns.len()));
        for &(name, type_oid) in columns {
            put_cstr(buf, name);
            buf.put_u32(0); // table OID
            buf.put_i16(0); // column attribute number
            buf.put_u32(type_oid);
            buf.put_i16(type_len(type_oid));
            buf.put_i32(-1); // type modifier
            buf.put_i16(0); // text format
        }
    });
}

/// `pg_type.typlen` for the type OIDs we emit; -1 means variable length.
fn type_len(type_oid: u32) -> i16 {
    match type_oid {
        16 => 1,            // bool
        21 => 2,            // int2
        23 | 26 | 700 => 4, // int4, oid, float4
        20 | 701 => 8,      // int8, float8
        _ => -1,
    }
}

/// DataRow (`D`); `None` is SQL NULL.
///
/// # Panics
/// With more than 65535 values or a value over 2 GiB (protocol limits).
pub fn data_row(buf: &mut BytesMut, values: &[Option<&[u8]>]) {
    message(buf, b'D', |buf| {
        buf.put_u16(count_u16(values.len()));
        for value in values {
            match value {
                Some(v) => {
                    buf.put_i32(
                        i32::try_from(v.len()).expect("invariant: a column value is under 2 GiB"),
                    );
                    buf.put_slice(v);
                }
                None => buf.put_i32(-1),
            }
        }
    });
}

/// CommandComplete (`C`) with its tag, e.g. `SHOW` or `SELECT 3`.
pub fn command_complete(buf: &mut BytesMut, tag: &str) {
    message(buf, b'C', |buf| put_cstr(buf, tag));
}

/// EmptyQueryResponse (`I`): the query string was empty.
pub fn empty_query_response(buf: &mut BytesMut) {
    message(buf, b'I', |_| {});
}

/// NegotiateProtocolVersion (`v`): the newest protocol version we support, as the full code
/// PostgreSQL sends (`3 << 16 | minor`, so 0x30000 for 3.0), and the `_pq_.*` options we did
/// not recognise.
///
/// # Panics
/// With more than `i32::MAX` option names (impossible from a bounded startup packet).
pub fn negotiate_protocol_version(buf: &mut BytesMut, version: u32, unrecognized: &[&str]) {
    message(buf, b'v', |buf| {
        buf.put_u32(version);
        buf.put_i32(i32::try_from(unrecognized.len()).expect("invariant: option count fits i32"));
        for name in unrecognized {
            put_cstr(buf, name);
        }
    });
}

// ---------------------------------------------------------------------------------------
// Frontend messages we send to servers (postgres-protocol's builders, buffer first).
// On error `buf` is left as it was.
// ---------------------------------------------------------------------------------------

/// StartupMessage for protocol 3.0 with these parameters (`user`, `database`, GUCs).
pub fn startup_message(buf: &mut BytesMut, params: &[(&str, &str)]) -> Result<(), BuildError> {
    undo_on_error(buf, |buf| {
        frontend::startup_message(params.iter().copied(), buf)
    })
}

/// PasswordMessage with a cleartext password or an MD5 response.
pub fn password_message(buf: &mut BytesMut, password: &[u8]) -> Result<(), BuildError> {
    undo_on_error(buf, |buf| frontend::password_message(password, buf))
}

/// SASLInitialResponse: the chosen mechanism and the client-first-message.
pub fn sasl_initial_response(
    buf: &mut BytesMut,
    mechanism: &str,
    data: &[u8],
) -> Result<(), BuildError> {
    undo_on_error(buf, |buf| {
        frontend::sasl_initial_response(mechanism, data, buf)
    })
}

/// SASLResponse carrying the client-final-message.
pub fn sasl_response(buf: &mut BytesMut, data: &[u8]) -> Result<(), BuildError> {
    undo_on_error(buf, |buf| frontend::sasl_response(data, buf))
}

/// Simple Query (`Q`), e.g. the server reset query.
pub fn query(buf: &mut BytesMut, sql: &str) -> Result<(), BuildError> {
    undo_on_error(buf, |buf| frontend::query(sql, buf))
}

/// CancelRequest (untagged, 16 bytes) for the server backend `pid`/`key`.
pub fn cancel_request(buf: &mut BytesMut, pid: u32, key: u32) {
    // The wire format is two int32s; reinterpreting the bits is exactly what we want.
    frontend::cancel_request(pid as i32, key as i32, buf);
}

/// Terminate (`X`).
pub fn terminate(buf: &mut BytesMut) {
    frontend::terminate(buf);
}

fn undo_on_error(
    buf: &mut BytesMut,
    write: impl FnOnce(&mut BytesMut) -> std::io::Result<()>,
) -> Result<(), BuildError> {
    let start = buf.len();
    write(buf).map_err(|_| {
        buf.truncate(start);
        // postgres-protocol fails only on an embedded NUL or a body over 2 GiB.
        BuildError::Malformed("string contains NUL or message too large")
    })
}

// ---------------------------------------------------------------------------------------
// Decoders of message bodies (header already stripped).
// ---------------------------------------------------------------------------------------

/// The fields of an ErrorResponse or NoticeResponse.
///
/// Values are decoded lossily: a server may report errors in a non-UTF-8 encoding before
/// `client_encoding` is settled, and an error must never become a decoding failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorFields {
    /// `V` (non-localized) if present, else `S`; empty if neither was sent.
    pub severity: String,
    /// `C`: the SQLSTATE (empty if missing).
    pub code: String,
    /// `M`: the primary message (empty if missing).
    pub message: String,
    /// `D`, if sent.
    pub detail: Option<String>,
    /// `H`, if sent.
    pub hint: Option<String>,
    /// Every field in order, for forwarding with [`error_response_fields`].
    pub all: Vec<(u8, String)>,
}

/// Decodes an `E` or `N` body: `(type byte, C string)*` ended by a zero byte, which must be
/// the last byte.
pub fn parse_error_fields(body: &[u8]) -> Result<ErrorFields, BuildError> {
    let mut all = Vec::new();
    let mut rest = body;
    loop {
        let (&kind, after) = rest
            .split_first()
            .ok_or(BuildError::Malformed("error fields lack their terminator"))?;
        if kind == 0 {
            if !after.is_empty() {
                return Err(BuildError::Malformed("data after the error fields"));
            }
            break;
        }
        let (value, after) =
            split_cstr(after).ok_or(BuildError::Malformed("unterminated error field"))?;
        all.push((kind, String::from_utf8_lossy(value).into_owned()));
        rest = after;
    }
    let field = |kind: u8| all.iter().find(|(k, _)| *k == kind).map(|(_, v)| v.clone());
    Ok(ErrorFields {
        severity: field(b'V').or_else(|| field(b'S')).unwrap_or_default(),
        code: field(b'C').unwrap_or_default(),
        message: field(b'M').unwrap_or_default(),
        detail: field(b'D'),
        hint: field(b'H'),
        all,
    })
}

/// Decodes a ParameterStatus (`S`) body into `(name, value)`.
pub fn parse_parameter_status(body: &[u8]) -> Result<(&str, &str), BuildError> {
    let (name, rest) =
        split_cstr(body).ok_or(BuildError::Malformed("unterminated parameter name"))?;
    let (value, rest) =
        split_cstr(rest).ok_or(BuildError::Malformed("unterminated parameter value"))?;
    if !rest.is_empty() {
        return Err(BuildError::Malformed("data after the parameter value"));
    }
    Ok((utf8(name)?, utf8(value)?))
}

/// Decodes a BackendKeyData (`K`) body into `(pid, key)`. Exactly 8 bytes: the longer keys
/// of protocol 3.2 are refused since we only ever request 3.0.
pub fn parse_backend_key_data(body: &[u8]) -> Result<(u32, u32), BuildError> {
    match body {
        [p0, p1, p2, p3, k0, k1, k2, k3] => Ok((
            u32::from_be_bytes([*p0, *p1, *p2, *p3]),
            u32::from_be_bytes([*k0, *k1, *k2, *k3]),
        )),
        _ => Err(BuildError::Malformed("BackendKeyData must be 8 bytes")),
    }
}

/// An authentication request (`R`) from a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthRequest<'a> {
    /// Authentication succeeded.
    Ok,
    /// Send the password in clear.
    Cleartext,
    /// Send the MD5 response for this salt.
    Md5 {
        /// Salt to hash the secret with.
        salt: [u8; 4],
    },
    /// Pick one of these SASL mechanisms.
    Sasl {
        /// Offered mechanisms, e.g. `SCRAM-SHA-256`, `SCRAM-SHA-256-PLUS`.
        mechanisms: Vec<&'a str>,
    },
    /// server-first-message.
    SaslContinue(&'a [u8]),
    /// server-final-message.
    SaslFinal(&'a [u8]),
    /// Any other method (Kerberos, GSS, SSPI...), which we do not support.
    Other(u32),
}

/// Decodes an authentication request (`R`) body.
pub fn parse_auth_request(body: &[u8]) -> Result<AuthRequest<'_>, BuildError> {
    let (code, rest) = split_u32(body).ok_or(BuildError::Malformed("missing auth code"))?;
    let no_payload = |req| {
        if rest.is_empty() {
            Ok(req)
        } else {
            Err(BuildError::Malformed(
                "unexpected data in authentication request",
            ))
        }
    };
    match code {
        AUTH_OK => no_payload(AuthRequest::Ok),
        AUTH_CLEARTEXT => no_payload(AuthRequest::Cleartext),
        AUTH_MD5 => match rest {
            [a, b, c, d] => Ok(AuthRequest::Md5 {
                salt: [*a, *b, *c, *d],
            }),
            _ => Err(BuildError::Malformed("MD5 salt must be 4 bytes")),
        },
        AUTH_SASL => {
            let mut mechanisms = Vec::new();
            let mut rest = rest;
            loop {
                let (name, after) = split_cstr(rest)
                    .ok_or(BuildError::Malformed("unterminated SASL mechanism list"))?;
                if name.is_empty() {
                    if !after.is_empty() {
                        return Err(BuildError::Malformed("data after SASL mechanism list"));
                    }
                    break;
                }
                mechanisms.push(utf8(name)?);
                rest = after;
            }
            Ok(AuthRequest::Sasl { mechanisms })
        }
        AUTH_SASL_CONTINUE => Ok(AuthRequest::SaslContinue(rest)),
        AUTH_SASL_FINAL => Ok(AuthRequest::SaslFinal(rest)),
        other => Ok(AuthRequest::Other(other)),
    }
}

/// Decodes a PasswordMessage (`p`) carrying a cleartext password or an MD5 response: the
/// password without its trailing NUL. An embedded NUL is refused.
pub fn parse_password_message(body: &[u8]) -> Result<&[u8], BuildError> {
    match split_cstr(body) {
        Some((password, [])) => Ok(password),
        Some(_) => Err(BuildError::Malformed("data after the password")),
        None => Err(BuildError::Malformed("unterminated password")),
    }
}

/// Decodes a SASLInitialResponse (`p`): the mechanism and the initial data; a length of -1
/// means "no data" (`None`).
pub fn parse_sasl_initial_response(body: &[u8]) -> Result<(&str, Option<&[u8]>), BuildError> {
    let (mechanism, rest) =
        split_cstr(body).ok_or(BuildError::Malformed("unterminated SASL mechanism"))?;
    let mechanism = utf8(mechanism)?;
    let (len, data) = split_u32(rest).ok_or(BuildError::Malformed("missing SASL data length"))?;
    match len as i32 {
        -1 if data.is_empty() => Ok((mechanism, None)),
        n if usize::try_from(n).is_ok_and(|n| n == data.len()) => Ok((mechanism, Some(data))),
        _ => Err(BuildError::Malformed("SASL data length does not match")),
    }
}

// ---------------------------------------------------------------------------------------
// Helpers.
// ---------------------------------------------------------------------------------------

/// Appends `tag`, a length placeholder and the body written by `body`, then fills in the
/// length (which counts itself but not the tag).
fn message(buf: &mut BytesMut, tag: u8, body: impl FnOnce(&mut BytesMut)) {
    buf.put_u8(tag);
    let start = buf.len();
    buf.put_i32(0);
    body(buf);
    let len =
        i32::try_from(buf.len() - start).expect("invariant: a message we build is under 2 GiB");
    buf[start..start + 4].copy_from_slice(&len.to_be_bytes());
}

/// Writes `s` as a C string. NUL bytes cannot be represented and are dropped, so text
/// that came from elsewhere (a database name in an error) can never break the framing.
fn put_cstr(buf: &mut BytesMut, s: &str) {
    // Whole runs between NULs, not byte by byte: a login's welcome is a dozen ParameterStatus
    // messages built this way. The usual string has no NUL, which `contains` (a word-at-a-time
    // memchr) tells faster than the run splitter walks it.
    let bytes = s.as_bytes();
    if bytes.contains(&0) {
        for run in bytes.split(|&b| b == 0) {
            buf.extend_from_slice(run);
        }
    } else {
        buf.extend_from_slice(bytes);
    }
    buf.put_u8(0);
}

fn count_u16(n: usize) -> u16 {
    u16::try_from(n).expect("invariant: at most 65535 columns per row")
}

fn split_cstr(data: &[u8]) -> Option<(&[u8], &[u8])> {
    let nul = data.iter().position(|&b| b == 0)?;
    Some((&data[..nul], &data[nul + 1..]))
}

fn split_u32(data: &[u8]) -> Option<(u32, &[u8])> {
    match data {
        [a, b, c, d, rest @ ..] => Some((u32::from_be_bytes([*a, *b, *c, *d]), rest)),
        _ => None,
    }
}

fn utf8(bytes: &[u8]) -> Result<&str, BuildError> {
    std::str::from_utf8(bytes).map_err(|_| BuildError::Malformed("string is not valid UTF-8"))
}

#[cfg(test)]
mod tests;
