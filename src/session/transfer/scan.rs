//! Feeds a transfer's frames to its pipeline as they arrive and turns the answers into each
//! direction's output plan; keeps the counters and the parameter cache that ReadyForQuery and
//! ParameterStatus update. No I/O here: these steps only look at the buffers the pump filled.

use std::time::Instant;

use bytes::BytesMut;

use super::{client_whole, Transfer};
use crate::config::PoolMode;
use crate::error::{Error, Result};
use crate::logsafe::Clean;
use crate::proto::{build, FrameError, Item, WHOLE_FRAME_CAP};
use crate::session::pipeline::{Counts, Refusal, Stmts, ToClient, ToServer};

/// A rewritten client frame replaces its original in the read buffer (the bytes after it move)
/// when at most this much follows it; past that, the rewrite is sent from its own buffer.
const SPLICE_TAIL: usize = 16 * 1024;

/// Puts `new` in place of `buf[at..at + old]`, moving what follows.
fn splice(buf: &mut BytesMut, at: usize, old: usize, new: &[u8]) {
    let end = at + old;
    let len = buf.len();
    if new.len() > old {
        let grow = new.len() - old;
        buf.resize(len + grow, 0);
        buf.copy_within(end..len, end + grow);
    } else if new.len() < old {
        buf.copy_within(end..len, at + new.len());
        buf.truncate(len - (old - new.len()));
    }
    buf[at..at + new.len()].copy_from_slice(new);
}

/// The longest statement name a log line shows.
const LOGGED_NAME_MAX: usize = 1024;

/// The client's error for a misnamed statement, logged with the name as PgBouncer logs it.
fn refused(r: Refusal) -> Error {
    let (what, name, e) = match r {
        Refusal::InUse(name) => ("was already prepared", name, Error::PreparedStatementInUse),
        Refusal::Unknown(name) => ("not found", name, Error::PreparedStatementMissing),
    };
    // A name can be as long as max_packet_size; the log gets its start.
    let shown = &name[..name.len().min(LOGGED_NAME_MAX)];
    tracing::error!(
        "prepared statement '{}' {what}",
        Clean(String::from_utf8_lossy(shown))
    );
    e
}

/// Builds the pipeline's view of the named-statement state from a transfer's fields.
macro_rules! stmts {
    ($t:ident) => {
        $t.stmts.as_mut().map(|k| Stmts {
            client: &mut *k.client,
            server: &mut $t.server.prepared,
            cache: k.cache,
            cap: k.cap,
        })
    };
}

impl Transfer<'_> {
    pub(super) fn frame_err(e: FrameError) -> Error {
        Error::ClientProtocol(e.to_string())
    }

    /// Plans newly read client bytes: each frame as the pipeline says, Terminate ends the plan.
    pub(super) fn scan_client(&mut self) -> Result<()> {
        if self.terminated {
            return Ok(());
        }
        let tracking = self.stmts.is_some();
        loop {
            let before = self.cscan.scanned();
            let item = self
                .cscan
                .next(self.cbuf, self.max_packet, client_whole(tracking))
                .map_err(Self::frame_err)?;
            let after = self.cscan.scanned();
            let (tag, body, len) = match item {
                None => {
                    // The rest of a streamed frame.
                    self.c_out.pass(after - before);
                    return Ok(());
                }
                Some(Item::Partial { tag, .. }) => (tag, None, after - before),
                Some(Item::Whole { tag, bytes }) => {
                    self.c_out.pass(after - bytes.len() - before);
                    (tag, Some(bytes), bytes.len())
                }
            };
            if tag == b'X' && body.is_some() {
                self.terminated = true;
                return Ok(());
            }
            if tag == b'Q' && self.no_simple_query {
                return Err(super::super::pqexec_disallowed());
            }
            if self.xact_started.is_none() {
                self.xact_started = Some(self.start.unwrap_or_else(Instant::now));
            }
            // A new request: the server's next bytes answer it.
            self.s_cut = false;
            let owed = self.pipe.ready_owed();
            let mut st = stmts!(self);
            let verdict = self
                .pipe
                .client_frame(tag, body.map(|b| &b[5..]), st.as_mut());
            match verdict {
                ToServer::Pass => self.c_out.pass(len),
                ToServer::Replace(bytes) if self.cbuf.len() - after <= SPLICE_TAIL => {
                    // In place: the common rewrite (a renamed Bind, then Execute and Sync)
                    // goes out in the same write as its neighbours with nothing allocated.
                    splice(self.cbuf, after - len, len, &bytes);
                    self.cscan.replaced(len, bytes.len());
                    self.tally.bytes_from_client += len as u64;
                    self.c_out.pass_uncounted(bytes.len());
                    if let Some(map) = self.stmts.as_mut().and_then(|k| k.client.as_deref_mut()) {
                        map.give_buf(bytes);
                    }
                }
                ToServer::Replace(bytes) => {
                    self.c_out.skip(len);
                    self.tally.bytes_from_client += len as u64;
                    self.c_out.insert(bytes);
                }
                ToServer::Drop => {
                    self.c_out.skip(len);
                    self.tally.bytes_from_client += len as u64;
                }
                ToServer::Refuse(r) => return Err(refused(r)),
            }
            if owed == 0 && self.pipe.ready_owed() > 0 {
                self.query_started = Some(self.start.take().unwrap_or_else(Instant::now));
            }
            if tracking {
                self.after_frame();
            }
        }
    }

    /// Moves the pipeline's counters to the tally and queues its due synthetic replies.
    /// Runs after every frame of a tracked link, so the usual case (nothing counted, nothing
    /// due) is two tests.
    #[inline]
    fn after_frame(&mut self) {
        if self.pipe.counts != Counts::default() || self.pipe.synthetic_due() {
            self.after_frame_work();
        }
    }

    fn after_frame_work(&mut self) {
        if self.pipe.counts != Counts::default() {
            let c = std::mem::take(&mut self.pipe.counts);
            self.tally.client_parses += c.client_parses;
            self.tally.server_parses += c.server_parses;
            self.tally.binds += c.binds;
        }
        if self.pipe.synthetic_due() {
            let mut synth = BytesMut::new();
            self.pipe.take_synthetic(&mut synth);
            self.s_out.insert(synth);
        }
    }

    /// Plans newly read server bytes; ReadyForQuery and ParameterStatus update the link.
    pub(super) fn scan_server(&mut self) -> Result<()> {
        if self.s_cut {
            return Ok(());
        }
        let tracking = self.stmts.is_some();
        loop {
            let before = self.sscan.scanned();
            let item = self
                .sscan
                .next(&self.server.buf, self.max_packet, |t, total, _| {
                    total <= WHOLE_FRAME_CAP
                        && (matches!(t, b'Z' | b'S' | b'C' | b'E')
                            || (tracking && matches!(t, b'1' | b'3')))
                })
                .map_err(|e| Error::ServerProtocol(e.to_string()))?;
            let after = self.sscan.scanned();
            let (tag, body, len) = match item {
                None => {
                    self.s_out.pass(after - before);
                    return Ok(());
                }
                Some(Item::Partial { tag, .. }) => (tag, None, after - before),
                Some(Item::Whole { tag, bytes }) => {
                    self.s_out.pass(after - bytes.len() - before);
                    (tag, Some(bytes), bytes.len())
                }
            };
            if tag == b'E' {
                self.tally.last_was_commit = false;
                // Rare, so parsing it costs nothing on the hot path. A role-change SQLSTATE is
                // reported to the pool; as a lone BEGIN's only answer a FATAL one is not
                // forwarded (the session sends the BEGIN elsewhere).
                if let Some(f) = body.and_then(|b| build::parse_error_fields(&b[5..]).ok()) {
                    if crate::error::is_role_change_sqlstate(&f.code) {
                        self.tally.role_change = true;
                        if self.lone_begin && f.severity == "FATAL" {
                            return Err(Error::ServerGone);
                        }
                    }
                }
                self.lone_begin = false;
            } else {
                // The server answered something: what follows is not "before the BEGIN".
                self.lone_begin = false;
            }
            let mut param = None;
            if let (b'S', Some(bytes)) = (tag, body) {
                if let Ok((k, v)) = build::parse_parameter_status(&bytes[5..]) {
                    param = Some((k.to_string(), v.to_string()));
                }
            }
            // A client's SET/RESET/DISCARD ALL may change parameters the server does not report.
            let set_by_client = match (tag, body) {
                (b'C', Some(bytes)) => {
                    let done = &bytes[5..];
                    self.tally.last_was_commit = done == b"COMMIT\0";
                    done == b"SET\0" || done == b"RESET\0" || done.starts_with(b"DISCARD ALL")
                }
                _ => false,
            };
            let status = match (tag, body) {
                (b'Z', Some(bytes)) => Some(bytes.get(5).copied().unwrap_or(b'I')),
                _ => None,
            };
            let mut st = stmts!(self);
            let verdict = self
                .pipe
                .server_frame(tag, body.map(|b| &b[5..]), st.as_mut());
            match verdict {
                ToClient::Pass => self.s_out.pass(len),
                ToClient::Swallow => self.s_out.skip(len),
                ToClient::Replace(bytes) => {
                    self.s_out.skip(len);
                    self.s_out.insert(bytes);
                }
            }
            if tracking {
                self.after_frame();
            }
            if set_by_client {
                self.server.forget_unreported();
            }
            if let Some((k, v)) = param {
                self.param_status(&k, &v);
            }
            if let Some(status) = status {
                self.ready_for_query(status)?;
                if status == b'I' && self.pipe.is_idle() && self.mode != PoolMode::Session {
                    // Everything is answered: what follows is nobody's answer.
                    self.s_cut = true;
                    return Ok(());
                }
            }
        }
    }

    /// ParameterStatus: the server's value, and the client's wanted value if it is tracked.
    fn param_status(&mut self, k: &str, v: &str) {
        if self.client_params.update(k, v) {
            self.tally.params_changed = true;
        }
        self.server.set_param(k, v);
    }

    /// ReadyForQuery: a query (and maybe a transaction) ended.
    fn ready_for_query(&mut self, status: u8) -> Result<()> {
        self.server.tx_status = status;
        if status == b'I' && std::mem::take(&mut self.tally.last_was_commit) {
            self.tally.committed = true;
        }
        self.tally.queries += 1;
        let now = Instant::now();
        self.last_ready = Some(now);
        // (start, duration) of the query that just ended: an autocommit statement is its own
        // transaction, and the two clocks started at the same reading.
        let mut query = None;
        if self.pipe.ready_owed() == 0 {
            if let Some(t) = self.query_started.take() {
                let d = now - t;
                self.tally.query_time += d;
                query = Some((t, d));
            }
        } else {
            self.query_started = Some(now);
        }
        if status == b'I' {
            if let Some(t) = self.xact_started.take() {
                self.tally.xacts += 1;
                self.tally.xact_time += match query {
                    Some((qt, d)) if qt == t => d,
                    _ => now - t,
                };
            }
            if let Some(stats) = self.live_stats {
                self.tally.flush_into(stats);
            }
        }
        if self.mode == PoolMode::Statement && status != b'I' {
            return Err(Error::StatementModeTransaction);
        }
        Ok(())
    }
}
