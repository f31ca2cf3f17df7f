//! Protocol-level named prepared statements in transaction mode (`max_prepared_statements`).
//!
//! A client's named statement lives on whichever server it ran on, but in transaction mode the
//! next Bind may go to another server. So each client statement gets a pooler name
//! (`OLLY_<id>`) that is unique process-wide; Parse, Bind, Describe and Close that name a client
//! statement are rewritten to it, and a server that lacks the statement gets a Parse injected
//! just before the Bind/Describe that needs it, whose ParseComplete is swallowed. Parse and
//! Close are always forwarded (rewritten), so every reply the client sees is the server's own
//! and the response stream needs no synthetic messages; only injected ParseCompletes are
//! removed, located by counting ParseCompletes in order (see [`Acks`]). An ErrorResponse that
//! names a server statement (`OLLY_<id>`) gets the client's name back.
//!
//! A Parse of a name the client still holds is refused as PostgreSQL refuses it (ERROR 42P05,
//! the old statement kept, the connection usable), not with PgBouncer's FATAL: the Parse goes
//! to the server under the existing server name, so the server produces the error itself.
//!
//! Unlike PgBouncer 1.21+, a statement is not shared between clients by query text: two clients
//! preparing the same query hold two server statements. A server holding more than
//! `max_prepared_statements` is closed when it is released, which bounds the growth.
//! Unnamed statements and portals pass through untouched.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{BufMut, Bytes, BytesMut};

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// One client statement: its pooler name and the Parse body after the name (query, types).
#[derive(Debug, Clone)]
pub struct Statement {
    /// Process-wide id; the server-side name is `OLLY_<id>`.
    pub id: u64,
    /// `query\0` + parameter count + type OIDs, as the client sent them.
    pub parse_rest: Bytes,
}

impl Statement {
    /// The name the server knows it by.
    pub fn server_name(&self) -> String {
        format!("OLLY_{}", self.id)
    }
}

/// The named statements of one client.
#[derive(Debug, Default)]
pub struct ClientStatements {
    by_name: HashMap<Box<str>, Statement>,
}

/// What to do with one client message.
#[derive(Debug, PartialEq, Eq)]
pub enum Rewrite {
    /// Forward as is.
    Keep,
    /// Forward these bytes instead. `inject` is a Parse to send first (its ParseComplete must
    /// be swallowed) with the statement id it creates; `parse` is the id of a forwarded Parse
    /// (its ParseComplete is the client's); `closed` is the id a Close removes; `duplicate`
    /// marks a Parse of a name the client still holds, sent so that the server refuses it.
    Replace {
        bytes: BytesMut,
        inject: Option<u64>,
        parse: Option<u64>,
        closed: Option<u64>,
        duplicate: bool,
    },
}

fn cstr(body: &[u8]) -> Option<(&[u8], &[u8])> {
    let end = body.iter().position(|b| *b == 0)?;
    Some((&body[..end], &body[end + 1..]))
}

fn frame(tag: u8, parts: &[&[u8]]) -> BytesMut {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let mut out = BytesMut::with_capacity(len + 5);
    out.put_u8(tag);
    out.put_u32((len + 4) as u32);
    for p in parts {
        out.put_slice(p);
    }
    out
}

fn parse_msg(out: &mut BytesMut, st: &Statement) {
    let name = st.server_name();
    out.extend_from_slice(&frame(b'P', &[name.as_bytes(), b"\0", &st.parse_rest]));
}

impl ClientStatements {
    /// Looks at one whole client message (`tag`, `body` without the header) about to go to a
    /// server that holds the statements in `server_has`; says what to send instead.
    /// Malformed messages are kept as they are: the server will reject them.
    pub fn rewrite(&mut self, tag: u8, body: &[u8], server_has: &dyn Fn(u64) -> bool) -> Rewrite {
        match tag {
            b'P' => {
                let Some((name, rest)) = cstr(body) else {
                    return Rewrite::Keep;
                };
                if name.is_empty() {
                    return Rewrite::Keep;
                }
                let Ok(name) = std::str::from_utf8(name) else {
                    return Rewrite::Keep;
                };
                if let Some(st) = self.by_name.get(name) {
                    // PostgreSQL refuses a name in use with 42P05 and keeps the statement. Let
                    // the server itself refuse it: sent under the statement's server name (made
                    // present first), it fails exactly where and how the client's Parse would
                    // have (a syntax error first, 25P02 in a failed transaction, the error
                    // aborting a transaction block); `rename_in_error` puts the client's name
                    // back into the message.
                    let (mut bytes, inject) = self.prelude(st, server_has);
                    let sname = st.server_name();
                    bytes.extend_from_slice(&frame(b'P', &[sname.as_bytes(), b"\0", rest]));
                    return Rewrite::Replace {
                        bytes,
                        inject,
                        parse: None,
                        closed: None,
                        duplicate: true,
                    };
                }
                let st = Statement {
                    id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
                    parse_rest: Bytes::copy_from_slice(rest),
                };
                let mut bytes = BytesMut::new();
                parse_msg(&mut bytes, &st);
                let id = st.id;
                self.by_name.insert(name.into(), st);
                Rewrite::Replace {
                    bytes,
                    inject: None,
                    parse: Some(id),
                    closed: None,
                    duplicate: false,
                }
            }
            b'B' => {
                let Some((portal, rest)) = cstr(body) else {
                    return Rewrite::Keep;
                };
                let Some((name, params)) = cstr(rest) else {
                    return Rewrite::Keep;
                };
                let Some(st) = self.lookup(name) else {
                    return Rewrite::Keep;
                };
                let (mut bytes, inject) = self.prelude(st, server_has);
                let sname = st.server_name();
                bytes.extend_from_slice(&frame(
                    b'B',
                    &[portal, b"\0", sname.as_bytes(), b"\0", params],
                ));
                Rewrite::Replace {
                    bytes,
                    inject,
                    parse: None,
                    closed: None,
                    duplicate: false,
                }
            }
            b'D' | b'C' => {
                let Some((&kind, rest)) = body.split_first() else {
                    return Rewrite::Keep;
                };
                if kind != b'S' {
                    return Rewrite::Keep;
                }
                let Some((name, _)) = cstr(rest) else {
                    return Rewrite::Keep;
                };
                let Some(st) = self.lookup(name) else {
                    return Rewrite::Keep;
                };
                let sname = st.server_name();
                let msg = frame(tag, &[b"S", sname.as_bytes(), b"\0"]);
                if tag == b'C' {
                    let id = st.id;
                    if let Ok(name) = std::str::from_utf8(name) {
                        self.by_name.remove(name);
                    }
                    return Rewrite::Replace {
                        bytes: msg,
                        inject: None,
                        parse: None,
                        closed: Some(id),
                        duplicate: false,
                    };
                }
                let (mut bytes, inject) = self.prelude(st, server_has);
                bytes.extend_from_slice(&msg);
                Rewrite::Replace {
                    bytes,
                    inject,
                    parse: None,
                    closed: None,
                    duplicate: false,
                }
            }
            _ => Rewrite::Keep,
        }
    }

    fn lookup(&self, name: &[u8]) -> Option<&Statement> {
        if name.is_empty() {
            return None;
        }
        std::str::from_utf8(name)
            .ok()
            .and_then(|n| self.by_name.get(n))
    }

    /// A Parse to inject when the server lacks the statement.
    fn prelude(&self, st: &Statement, server_has: &dyn Fn(u64) -> bool) -> (BytesMut, Option<u64>) {
        let mut bytes = BytesMut::new();
        if server_has(st.id) {
            return (bytes, None);
        }
        parse_msg(&mut bytes, st);
        (bytes, Some(st.id))
    }

    /// An ErrorResponse (`body` after the header) with every `prepared statement "OLLY_<id>"`
    /// of this client's statements given the client's own name, as a whole frame; `None` when
    /// it names none. The client must read the name it used (`prepared statement "s1" already
    /// exists`). Only PostgreSQL's "prepared statement" phrase is matched, so a quoted
    /// identifier that happens to read `"OLLY_<n>"` elsewhere in a message is left alone.
    pub fn rename_in_error(&self, body: &[u8]) -> Option<BytesMut> {
        const MARK: &[u8] = b"prepared statement \"OLLY_";
        let mut out = Vec::new();
        // Bytes of `body` already copied to `out`.
        let mut copied = 0;
        let mut from = 0;
        while let Some(at) = body[from..].windows(MARK.len()).position(|w| w == MARK) {
            let start = from + at;
            let digits_at = start + MARK.len();
            let digits = body[digits_at..]
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .count();
            let end = digits_at + digits;
            from = digits_at;
            if digits == 0 || body.get(end) != Some(&b'"') {
                continue;
            }
            let name = std::str::from_utf8(&body[digits_at..end])
                .ok()
                .and_then(|d| d.parse::<u64>().ok())
                .and_then(|id| self.name_of(id));
            if let Some(name) = name {
                // Keep `prepared statement "`, swap the name, keep the closing quote.
                out.extend_from_slice(&body[copied..digits_at - b"OLLY_".len()]);
                out.extend_from_slice(name.as_bytes());
                copied = end;
                from = end;
            }
        }
        if copied == 0 {
            return None;
        }
        out.extend_from_slice(&body[copied..]);
        Some(frame(b'E', &[&out]))
    }

    fn name_of(&self, id: u64) -> Option<&str> {
        self.by_name
            .iter()
            .find(|(_, st)| st.id == id)
            .map(|(name, _)| &**name)
    }

    /// The client's Parse that created statement `id` failed (or was skipped after an error):
    /// the name is free again, as on PostgreSQL.
    pub fn forget(&mut self, id: u64) {
        self.by_name.retain(|_, st| st.id != id);
    }

    /// DEALLOCATE ALL / DISCARD ALL ran: the client's statements are gone.
    pub fn clear(&mut self) {
        self.by_name.clear();
    }

    /// Number of named statements (SHOW CLIENTS prepared_statements).
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

/// The ParseCompletes a server owes, in order: each is the client's, or one of an injected
/// Parse to swallow. `epoch` is the number of sync points (Sync, Query, FunctionCall) sent
/// before the Parse: an ErrorResponse makes the server skip everything up to the next Sync, so
/// the ParseCompletes of the current epoch will never come.
#[derive(Debug, Default)]
pub struct Acks {
    queue: VecDeque<(u64, u64, bool)>,
    /// Sync points sent.
    pub sent_epoch: u64,
    /// ReadyForQuery messages received.
    pub done_epoch: u64,
}

impl Acks {
    /// A Parse (visible or injected) for statement `id` went out.
    pub fn parse_sent(&mut self, id: u64, visible: bool) {
        self.queue.push_back((self.sent_epoch, id, visible));
    }

    /// A ParseComplete arrived: whether the client must see it.
    pub fn parse_complete(&mut self) -> bool {
        self.queue.pop_front().is_none_or(|(_, _, visible)| visible)
    }

    /// An ErrorResponse arrived: the ids whose Parse the server skipped or failed, each with
    /// whether it was the client's own Parse (then the client's statement does not exist
    /// either, as on PostgreSQL) or one we injected (the client's statement stays).
    pub fn error(&mut self) -> Vec<(u64, bool)> {
        let epoch = self.done_epoch;
        let mut dropped = Vec::new();
        self.queue.retain(|(e, id, visible)| {
            if *e == epoch {
                dropped.push((*id, *visible));
                false
            } else {
                true
            }
        });
        dropped
    }

    /// True when nothing is owed.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

#[cfg(test)]
mod tests;
