//! A client's protocol-level named prepared statements in transaction mode
//! (`max_prepared_statements`, PgBouncer 1.21+ semantics): each name the client prepared maps to
//! a statement shared by every client with the same query text and parameter types
//! (`server::statements`). What goes to the server for each message is decided by
//! `session::pipeline`; this file only keeps the map and renames errors.
//!
//! The map is freed with the client; a client's Close, DEALLOCATE ALL or DISCARD ALL removes
//! its names (the servers keep the statements for the next client that wants them).

use std::collections::HashMap;
use std::sync::Arc;

use bytes::{BufMut, BytesMut};

use crate::server::statements::Statement;

/// The named statements of one client.
#[derive(Debug, Default)]
pub struct ClientStatements {
    by_name: HashMap<Box<[u8]>, Arc<Statement>>,
    /// An empty buffer the pipeline writes its next rewritten frame into, handed back once
    /// that frame is on its way: a renamed Bind per transaction then costs no allocation.
    spare: BytesMut,
}

/// A spare buffer larger than this is freed rather than kept (a rewrite of a huge Bind).
const SPARE_MAX: usize = 4 * 1024;

/// Splits a zero-terminated string off the front of `body`.
pub(crate) fn cstr(body: &[u8]) -> Option<(&[u8], &[u8])> {
    let end = body.iter().position(|b| *b == 0)?;
    Some((&body[..end], &body[end + 1..]))
}

/// A whole frame from its tag and body parts.
pub(crate) fn frame(tag: u8, parts: &[&[u8]]) -> BytesMut {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let mut out = BytesMut::with_capacity(len + 5);
    frame_into(&mut out, tag, parts);
    out
}

/// Appends a whole frame to `out`.
pub(crate) fn frame_into(out: &mut BytesMut, tag: u8, parts: &[&[u8]]) {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    out.reserve(len + 5);
    out.put_u8(tag);
    out.put_u32((len + 4) as u32);
    for p in parts {
        out.put_slice(p);
    }
}

impl ClientStatements {
    /// The statement the client calls `name` (never the unnamed one).
    pub fn get(&self, name: &[u8]) -> Option<&Arc<Statement>> {
        if name.is_empty() {
            return None;
        }
        self.by_name.get(name)
    }

    /// Maps `name` to `st`.
    pub fn insert(&mut self, name: &[u8], st: Arc<Statement>) {
        self.by_name.insert(name.into(), st);
    }

    /// Removes `name`, returning what it mapped to.
    pub fn remove(&mut self, name: &[u8]) -> Option<Arc<Statement>> {
        self.by_name.remove(name)
    }

    /// Removes `name` if it still maps to statement `id` (its Parse failed or was skipped).
    pub fn forget(&mut self, name: &[u8], id: u64) {
        if self.by_name.get(name).is_some_and(|st| st.id == id) {
            self.by_name.remove(name);
        }
    }

    /// An ErrorResponse (`body` after the header) with every `prepared statement "OLLY_<id>"`
    /// of this client's statements given the client's own name, as a whole frame; `None` when
    /// it names none. The client must read the name it used (`prepared statement "s1" already
    /// exists`). Only PostgreSQL's "prepared statement" phrase is matched, so a quoted
    /// identifier that happens to read `"OLLY_<n>"` elsewhere in a message is left alone.
    pub fn rename_in_error(&self, body: &[u8]) -> Option<BytesMut> {
        self.rename_in_error_with(body, &[])
    }

    /// [`ClientStatements::rename_in_error`], also naming the statements of `forgotten`
    /// ((client name, id) whose Parse was undone in this transaction): an error about one of
    /// them can still come back for a message pipelined before the undo.
    pub fn rename_in_error_with(
        &self,
        body: &[u8],
        forgotten: &[(Box<[u8]>, u64)],
    ) -> Option<BytesMut> {
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
                .and_then(|id| {
                    self.name_of(id).or_else(|| {
                        let gone = forgotten.iter().rev().find(|(_, i)| *i == id);
                        gone.map(|(name, _)| &**name)
                    })
                });
            if let Some(name) = name {
                // Keep `prepared statement "`, swap the name, keep the closing quote.
                out.extend_from_slice(&body[copied..digits_at - b"OLLY_".len()]);
                out.extend_from_slice(name);
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

    fn name_of(&self, id: u64) -> Option<&[u8]> {
        self.by_name
            .iter()
            .find(|(_, st)| st.id == id)
            .map(|(name, _)| &**name)
    }

    /// An empty buffer to write a rewritten frame into (the one handed back last, if any).
    pub fn take_buf(&mut self) -> BytesMut {
        std::mem::take(&mut self.spare)
    }

    /// Hands back a buffer from [`ClientStatements::take_buf`] once its bytes were used; it is
    /// kept for the next rewrite unless it grew large.
    pub fn give_buf(&mut self, mut buf: BytesMut) {
        buf.clear();
        if buf.capacity() <= SPARE_MAX && buf.capacity() > self.spare.capacity() {
            self.spare = buf;
        }
    }

    /// DEALLOCATE ALL / DISCARD ALL ran: the client's statements are gone.
    pub fn clear(&mut self) {
        self.by_name.clear();
        self.by_name.shrink_to_fit();
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

#[cfg(test)]
mod tests;
