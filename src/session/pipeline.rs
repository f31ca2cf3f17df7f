//! The protocol bookkeeping of a client↔server link, without I/O: it is shown each client frame
//! before it goes to the server and each server frame before it goes to the client, and says
//! what to forward, replace, drop, swallow or synthesise. `transfer.rs` is the byte pump that
//! acts on the answers.
//!
//! It keeps an ordered queue of the replies the server owes ([`Expect`]), one entry per client
//! message that gets one (Parse, Bind, Describe, Execute, Close, Sync, Query, FunctionCall) plus
//! replies the pooler owes itself (a ParseComplete for a statement the server already has, a
//! CloseComplete for a client's Close). A synthetic reply goes out when every entry before it
//! is answered, so the client sees replies in the order it asked. An ErrorResponse in the
//! extended protocol makes the server skip everything up to the next Sync: those entries are
//! dropped and their effects undone (a skipped Parse created nothing).
//!
//! Named statements (when tracked): a client's Parse maps its name to a shared statement
//! (`server::statements`); a server that lacks a statement a Bind or Describe needs gets a
//! Parse injected first, whose ParseComplete is swallowed; a server that has it gets no Parse;
//! each server's LRU evicts with a Close whose CloseComplete is swallowed; a client's Close is
//! answered here, a known name or not (so a client can never close a shared statement by its
//! server name). As in PgBouncer, a Parse of a name the client still holds, and a Bind or
//! Describe of a name it does not hold, are refused ([`Refusal`]): the session closes the
//! client with PgBouncer's FATAL where PostgreSQL would answer an ERROR in the reply stream.

mod queue;

use std::sync::Arc;

use bytes::BytesMut;

use super::prepared::{cstr, frame_into, ClientStatements};
use crate::server::statements::{ServerStatements, Statement, StatementCache};

/// The named-statement state a tracked link works on.
pub struct Stmts<'a> {
    /// The client's names; the inner box is made on its first named Parse.
    pub client: &'a mut Option<Box<ClientStatements>>,
    /// What the linked server holds.
    pub server: &'a mut ServerStatements,
    /// The process-wide statement table.
    pub cache: &'a StatementCache,
    /// max_prepared_statements: the cap of the server's LRU.
    pub cap: usize,
}

/// What to send to the server for one client frame.
#[derive(Debug, PartialEq, Eq)]
pub enum ToServer {
    /// The frame as it is.
    Pass,
    /// These bytes instead of the frame.
    Replace(BytesMut),
    /// Nothing (answered by the pooler, or skipped by the server anyway).
    Drop,
    /// Nothing, and the client is to be closed (PgBouncer's FATAL for a misnamed statement).
    Refuse(Refusal),
}

/// A named-statement message PgBouncer answers by closing the client; the name is for the log.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// A Parse of a name the client still holds.
    InUse(Box<[u8]>),
    /// A Bind or Describe of a name the client does not hold.
    Unknown(Box<[u8]>),
}

/// What to send to the client for one server frame.
#[derive(Debug, PartialEq, Eq)]
pub enum ToClient {
    /// The frame as it is.
    Pass,
    /// Nothing: the reply to a message the pooler injected.
    Swallow,
    /// These bytes instead (an error naming the client's statement).
    Replace(BytesMut),
}

/// Counters PgBouncer keeps for prepared statements.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Named Parse messages from the client.
    pub client_parses: u64,
    /// Parse messages that reached a server (the client's and injected ones).
    pub server_parses: u64,
    /// Bind messages of named statements.
    pub binds: u64,
}

/// One reply the server (or the pooler) owes, in order.
#[derive(Debug)]
enum Expect {
    /// ParseComplete. `stmt`: the server statement it creates; `client`: the client name it
    /// creates (undone if the Parse fails or is skipped); `visible`: the client asked for it.
    Parse {
        stmt: Option<Arc<Statement>>,
        client: Option<Box<[u8]>>,
        visible: bool,
    },
    /// BindComplete.
    Bind { stmt: Option<u64> },
    /// CloseComplete; `evicted` is the statement an injected Close removes from the server.
    Close {
        visible: bool,
        evicted: Option<Arc<Statement>>,
    },
    /// RowDescription or NoData (after a ParameterDescription for a statement).
    Describe { stmt: Option<u64> },
    /// CommandComplete, EmptyQueryResponse or PortalSuspended.
    Execute { stmt: Option<u64> },
    /// ReadyForQuery after Sync.
    Sync,
    /// ReadyForQuery ending a simple Query or a FunctionCall.
    Query,
    /// A ParseComplete the pooler sends (the server has the statement); skipped, the client
    /// name is forgotten.
    FakeParse { client: Box<[u8]>, id: u64 },
    /// A CloseComplete the pooler sends for a client's Close; skipped, the name comes back.
    FakeClose {
        restore: Option<(Box<[u8]>, Arc<Statement>)>,
    },
    /// Not a reply: the client ended a COPY (CopyDone/CopyFail) before the server said it
    /// started one; marks where the Syncs the server ignores in copy-in mode stop.
    CopyDone,
}

/// The bookkeeping of one link (see the module doc).
#[derive(Debug, Default)]
pub struct Pipeline {
    /// Inline up to a few entries: a pipeline lives for one transaction (see `queue`).
    queue: queue::Queue<Expect>,
    /// Sync/Query entries in the queue: ReadyForQuery messages still owed.
    ready_owed: u32,
    /// An extended-protocol message went out with no Sync after it yet.
    in_extended: bool,
    /// The server reported an error in the extended protocol and skips until the next Sync,
    /// which has not been sent yet.
    skipping: bool,
    /// The statement of the last Bind, for the Execute that runs its portal.
    last_bound: Option<u64>,
    /// The server is in copy-in mode (CopyInResponse seen, no CopyDone/CopyFail sent yet):
    /// it ignores Sync and Flush.
    copy_in: bool,
    /// Prepared-statement counters.
    pub counts: Counts,
    /// (client name, statement id) whose Parse an error undid in this transaction, to name
    /// them in errors about messages pipelined behind it. Touched on the error path only.
    forgotten: Vec<(Box<[u8]>, u64)>,
}

const PARSE_COMPLETE: [u8; 5] = [b'1', 0, 0, 0, 4];
const CLOSE_COMPLETE: [u8; 5] = [b'3', 0, 0, 0, 4];

impl Pipeline {
    /// ReadyForQuery messages still owed for requests already sent.
    pub fn ready_owed(&self) -> u32 {
        self.ready_owed
    }

    /// An extended-protocol run is open (no Sync yet): the server must stay.
    pub fn in_extended(&self) -> bool {
        self.in_extended
    }

    /// Nothing owed and no open extended-protocol run.
    pub fn is_idle(&self) -> bool {
        self.queue.is_empty() && !self.in_extended
    }

    fn push(&mut self, e: Expect) {
        if matches!(e, Expect::Sync | Expect::Query) {
            self.ready_owed += 1;
        }
        self.queue.push_back(e);
    }

    /// One client frame: `body` is the frame after its 5-byte header when it is whole, `None`
    /// for the head of a frame that streams. Only Parse, Bind, Describe and Close are ever
    /// rewritten, and only whole.
    pub fn client_frame(
        &mut self,
        tag: u8,
        body: Option<&[u8]>,
        stmts: Option<&mut Stmts<'_>>,
    ) -> ToServer {
        match tag {
            b'S' if self.copy_in => return ToServer::Pass,
            b'c' | b'f' => {
                if self.copy_in {
                    self.copy_in = false;
                } else {
                    self.queue.push_back(Expect::CopyDone);
                }
                return ToServer::Pass;
            }
            b'S' => {
                self.in_extended = false;
                self.skipping = false;
                self.push(Expect::Sync);
                return ToServer::Pass;
            }
            b'Q' | b'F' => {
                if !self.skipping {
                    self.push(Expect::Query);
                }
                return ToServer::Pass;
            }
            b'P' | b'B' | b'D' | b'E' | b'C' => self.in_extended = true,
            b'H' => {
                self.in_extended = true;
                return ToServer::Pass;
            }
            _ => return ToServer::Pass,
        }
        if self.skipping {
            // The server ignores it; a named-statement message must not change any mapping.
            return match (stmts, tag) {
                (Some(_), b'P' | b'B' | b'D' | b'C') => ToServer::Drop,
                _ => ToServer::Pass,
            };
        }
        let (Some(st), Some(body)) = (stmts, body) else {
            self.plain(tag, body);
            return ToServer::Pass;
        };
        match self.named(tag, body, st) {
            Some(out) => out,
            None => {
                self.plain(tag, Some(body));
                ToServer::Pass
            }
        }
    }

    /// The entry of a message forwarded as it is.
    fn plain(&mut self, tag: u8, body: Option<&[u8]>) {
        let e = match tag {
            b'P' => Expect::Parse {
                stmt: None,
                client: None,
                visible: true,
            },
            b'B' => {
                self.last_bound = None;
                Expect::Bind { stmt: None }
            }
            b'D' => Expect::Describe { stmt: None },
            b'E' => Expect::Execute {
                stmt: self.last_bound,
            },
            b'C' => {
                // A portal, the unnamed statement, or any name when untracked: the server's.
                let _ = body;
                Expect::Close {
                    visible: true,
                    evicted: None,
                }
            }
            _ => return,
        };
        self.push(e);
    }

    /// A message that names a tracked statement; `None` when it names none.
    fn named(&mut self, tag: u8, body: &[u8], st: &mut Stmts<'_>) -> Option<ToServer> {
        match tag {
            b'P' => {
                let (name, rest) = cstr(body)?;
                if name.is_empty() {
                    return None;
                }
                let map = st.client.get_or_insert_with(Box::default);
                if map.get(name).is_some() {
                    return Some(ToServer::Refuse(Refusal::InUse(name.into())));
                }
                self.counts.client_parses += 1;
                let stmt = st.cache.intern(rest);
                map.insert(name, stmt.clone());
                if st.server.touch(stmt.id) {
                    self.push(Expect::FakeParse {
                        client: name.into(),
                        id: stmt.id,
                    });
                    return Some(ToServer::Drop);
                }
                let mut out = map.take_buf();
                self.close_stale(st, &mut out);
                self.send_parse(&stmt, st, &mut out, Some(name.into()));
                Some(ToServer::Replace(out))
            }
            b'B' => {
                let (portal, rest) = cstr(body)?;
                let (name, params) = cstr(rest)?;
                if name.is_empty() {
                    return None;
                }
                let Some(map) = st.client.as_deref_mut() else {
                    return Some(ToServer::Refuse(Refusal::Unknown(name.into())));
                };
                let Some(stmt) = map.get(name).cloned() else {
                    return Some(ToServer::Refuse(Refusal::Unknown(name.into())));
                };
                self.counts.binds += 1;
                let mut out = map.take_buf();
                self.ensure(&stmt, st, &mut out);
                frame_into(&mut out, b'B', &[portal, b"\0", &stmt.name, b"\0", params]);
                self.last_bound = Some(stmt.id);
                self.push(Expect::Bind {
                    stmt: Some(stmt.id),
                });
                Some(ToServer::Replace(out))
            }
            b'D' | b'C' => {
                let (&kind, rest) = body.split_first()?;
                if kind != b'S' {
                    return None;
                }
                let (name, _) = cstr(rest)?;
                if name.is_empty() {
                    return None;
                }
                let map = st.client.as_deref_mut();
                if tag == b'C' {
                    // Answered here; the servers keep the statement for other clients. An unknown
                    // name too: PostgreSQL's Close of a missing name succeeds, and passed on it
                    // could close a shared statement that happens to bear that server name.
                    let restore = map.and_then(|m| m.remove(name)).map(|s| (name.into(), s));
                    self.push(Expect::FakeClose { restore });
                    return Some(ToServer::Drop);
                }
                let held = map.and_then(|m| m.get(name).cloned().map(|s| (m, s)));
                let Some((map, stmt)) = held else {
                    return Some(ToServer::Refuse(Refusal::Unknown(name.into())));
                };
                let mut out = map.take_buf();
                self.ensure(&stmt, st, &mut out);
                frame_into(&mut out, b'D', &[b"S", &stmt.name, b"\0"]);
                self.push(Expect::Describe {
                    stmt: Some(stmt.id),
                });
                Some(ToServer::Replace(out))
            }
            _ => None,
        }
    }

    /// Makes the server hold `stmt` before the message about to go into `out`.
    fn ensure(&mut self, stmt: &Arc<Statement>, st: &mut Stmts<'_>, out: &mut BytesMut) {
        self.close_stale(st, out);
        if !st.server.touch(stmt.id) {
            self.send_parse(stmt, st, out, None);
        }
    }

    /// Closes statements the server must not run again (0A000) before anything else.
    fn close_stale(&mut self, st: &mut Stmts<'_>, out: &mut BytesMut) {
        for old in st.server.take_stale() {
            frame_into(out, b'C', &[b"S", &old.name, b"\0"]);
            self.push(Expect::Close {
                visible: false,
                evicted: Some(old),
            });
        }
    }

    /// A Parse of `stmt` to the server: the client's own (`client` names it) or injected.
    fn send_parse(
        &mut self,
        stmt: &Arc<Statement>,
        st: &mut Stmts<'_>,
        out: &mut BytesMut,
        client: Option<Box<[u8]>>,
    ) {
        for old in st.server.insert(stmt, st.cap) {
            frame_into(out, b'C', &[b"S", &old.name, b"\0"]);
            self.push(Expect::Close {
                visible: false,
                evicted: Some(old),
            });
        }
        frame_into(out, b'P', &[&stmt.name, b"\0", &stmt.parse_rest]);
        self.counts.server_parses += 1;
        let visible = client.is_some();
        self.push(Expect::Parse {
            stmt: Some(stmt.clone()),
            client,
            visible,
        });
    }

    /// A reply the pooler owes is due now (see [`Pipeline::take_synthetic`]).
    pub fn synthetic_due(&self) -> bool {
        matches!(
            self.queue.front(),
            Some(Expect::FakeParse { .. } | Expect::FakeClose { .. })
        )
    }

    /// Replies the pooler owes that are now due (every reply before them was forwarded):
    /// appended to `out`. Call after each client and server frame.
    pub fn take_synthetic(&mut self, out: &mut BytesMut) {
        while let Some(e) = self.queue.front() {
            match e {
                Expect::FakeParse { .. } => out.extend_from_slice(&PARSE_COMPLETE),
                Expect::FakeClose { .. } => out.extend_from_slice(&CLOSE_COMPLETE),
                _ => return,
            }
            self.queue.pop_front();
        }
    }

    /// One server frame (`body` after the header when whole, `None` for the head of one that
    /// streams): what the client gets for it.
    pub fn server_frame(
        &mut self,
        tag: u8,
        body: Option<&[u8]>,
        stmts: Option<&mut Stmts<'_>>,
    ) -> ToClient {
        match tag {
            b'1' | b'2' | b'3' | b'C' | b'I' | b's' | b'T' | b'n' => {
                let visible = self.complete(tag);
                if tag == b'C' {
                    if let (Some(st), Some(body)) = (stmts, body) {
                        if body.starts_with(b"DISCARD ALL") || body.starts_with(b"DEALLOCATE ALL") {
                            st.server.clear();
                            if let Some(map) = st.client.as_deref_mut() {
                                map.clear();
                            }
                        }
                    }
                }
                if visible {
                    ToClient::Pass
                } else {
                    ToClient::Swallow
                }
            }
            b'Z' => {
                // Ends the first Sync/Query; anything before it was skipped.
                while let Some(e) = self.queue.pop_front() {
                    if matches!(e, Expect::Sync | Expect::Query) {
                        self.ready_owed -= 1;
                        break;
                    }
                }
                ToClient::Pass
            }
            b'E' => self.error(body, stmts),
            b'G' => {
                self.copy_started();
                ToClient::Pass
            }
            _ => ToClient::Pass,
        }
    }

    /// CopyInResponse: Syncs the client sent after the COPY and before its CopyDone are
    /// ignored by the server, so they owe no ReadyForQuery. A client that has not ended the
    /// COPY yet has its next Syncs ignored as they come.
    fn copy_started(&mut self) {
        let mut i = 1;
        while i < self.queue.len() {
            match self.queue[i] {
                Expect::Sync => {
                    self.queue.remove(i);
                    self.ready_owed -= 1;
                }
                Expect::CopyDone => {
                    self.queue.remove(i);
                    return;
                }
                _ => i += 1,
            }
        }
        self.copy_in = true;
    }

    /// A reply that ends the entry at the front, if it is the one this tag ends: whether the
    /// client asked for it.
    fn complete(&mut self, tag: u8) -> bool {
        let ends = match self.queue.front() {
            Some(Expect::Parse { .. }) => tag == b'1',
            Some(Expect::Bind { .. }) => tag == b'2',
            Some(Expect::Close { .. }) => tag == b'3',
            Some(Expect::Describe { .. }) => tag == b'T' || tag == b'n',
            Some(Expect::Execute { .. }) => matches!(tag, b'C' | b'I' | b's'),
            _ => false,
        };
        if !ends {
            return true;
        }
        match self.queue.pop_front() {
            Some(Expect::Parse { visible, .. }) | Some(Expect::Close { visible, .. }) => visible,
            _ => true,
        }
    }

    /// An ErrorResponse: the failed message and, in the extended protocol, everything up to
    /// the next Sync are dropped; what they would have created is undone.
    fn error(&mut self, body: Option<&[u8]>, mut stmts: Option<&mut Stmts<'_>>) -> ToClient {
        let front_stmt = match self.queue.front() {
            None | Some(Expect::Sync) | Some(Expect::Query) => {
                // Inside a simple query (or at Sync) the error ends nothing by itself.
                return self.rename(body, stmts.as_deref());
            }
            Some(Expect::Bind { stmt })
            | Some(Expect::Describe { stmt })
            | Some(Expect::Execute { stmt }) => *stmt,
            Some(_) => None,
        };
        if let (Some(id), Some(body), Some(st)) = (front_stmt, body, stmts.as_deref_mut()) {
            if invalidated_plan(body) {
                // The server keeps a statement that can no longer run: re-prepare on next use.
                st.server.mark_stale(id);
            }
        }
        let mut skipped_to_sync = false;
        let mut skipped = Vec::new();
        while let Some(e) = self.queue.front() {
            if matches!(e, Expect::Sync) {
                skipped_to_sync = true;
                break;
            }
            let e = self.queue.pop_front().expect("invariant: front exists");
            if matches!(e, Expect::Query) {
                self.ready_owed -= 1;
            }
            skipped.push(e);
        }
        if let Some(st) = stmts.as_deref_mut() {
            // Newest first, as undo goes: a Close gives a name back before the skipped Parse
            // that made it takes it away again, and a skipped re-Parse of a name is undone
            // before the skipped Close that freed it.
            for e in skipped.into_iter().rev() {
                undo(e, st, &mut self.forgotten);
            }
        }
        if !skipped_to_sync && self.in_extended {
            self.skipping = true;
        }
        self.rename(body, stmts.as_deref())
    }

    /// The error with the client's names for server statement names: the client's map, else a
    /// name whose Parse was undone in this transaction.
    fn rename(&self, body: Option<&[u8]>, stmts: Option<&Stmts<'_>>) -> ToClient {
        let renamed = match (body, stmts.and_then(|s| s.client.as_deref())) {
            (Some(body), Some(map)) => map.rename_in_error_with(body, &self.forgotten),
            _ => None,
        };
        match renamed {
            Some(frame) => ToClient::Replace(frame),
            None => ToClient::Pass,
        }
    }
}

/// A message the server failed or skipped: what it would have created does not exist. Names
/// whose Parse is undone go to `forgotten` (for naming errors that still come back about them).
fn undo(e: Expect, st: &mut Stmts<'_>, forgotten: &mut Vec<(Box<[u8]>, u64)>) {
    match e {
        Expect::Parse {
            stmt: Some(stmt),
            client,
            ..
        } => {
            st.server.remove(stmt.id);
            if let Some(name) = client {
                if let Some(map) = st.client.as_deref_mut() {
                    map.forget(&name, stmt.id);
                }
                forgotten.push((name, stmt.id));
            }
        }
        Expect::Close {
            evicted: Some(old), ..
        } => {
            // Not closed after all: closed again before the next Parse.
            st.server.push_stale(old);
        }
        Expect::FakeParse { client, id } => {
            if let Some(map) = st.client.as_deref_mut() {
                map.forget(&client, id);
            }
            forgotten.push((client, id));
        }
        Expect::FakeClose {
            restore: Some((name, stmt)),
        } => {
            if let Some(map) = st.client.as_deref_mut() {
                if map.get(&name).is_none() {
                    map.insert(&name, stmt);
                }
            }
        }
        _ => {}
    }
}

/// ERROR 0A000 `cached plan must not change result type`: DDL changed a prepared statement's
/// result columns, and PostgreSQL refuses to run it again.
fn invalidated_plan(body: &[u8]) -> bool {
    let mut code = false;
    let mut msg = false;
    for field in body.split(|b| *b == 0) {
        match field.split_first() {
            Some((b'C', v)) => code = v == b"0A000",
            Some((b'M', v)) => msg = v.starts_with(b"cached plan must not change result type"),
            _ => {}
        }
    }
    code && msg
}

#[cfg(test)]
mod tests;
