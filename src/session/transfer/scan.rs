//! The protocol bookkeeping of a transfer, apart from its byte pump: what each client frame
//! starts (a wait for ReadyForQuery, an extended-protocol run, Terminate, a statement rewrite)
//! and what each server frame ends (a query, a transaction, a swallowed or renamed reply).
//! No I/O here: these steps only look at the buffers the pump filled.

use std::sync::Arc;
use std::time::Instant;

use super::{client_whole, Transfer};
use crate::config::PoolMode;
use crate::error::{Error, Result};
use crate::proto::{build, FrameError, Item, WHOLE_FRAME_CAP};
use crate::session::prepared::Rewrite;

impl Transfer<'_> {
    pub(super) fn frame_err(e: FrameError) -> Error {
        Error::ClientProtocol(e.to_string())
    }

    /// Looks at newly read client bytes: counts what will be answered, finds Terminate.
    pub(super) fn scan_client(&mut self) -> Result<()> {
        if self.terminate_at.is_some() || self.c_hold.is_some() {
            return Ok(());
        }
        let tracking = self.stmts.is_some();
        loop {
            let item = self
                .cscan
                .next(self.cbuf, self.max_packet, client_whole(tracking))
                .map_err(Self::frame_err)?;
            let (tag, whole) = match item {
                None => return Ok(()),
                Some(Item::Whole { tag, bytes }) => (tag, Some(bytes.len())),
                Some(Item::Partial { tag, .. }) => (tag, None),
            };
            if self.xact_started.is_none() {
                self.xact_started = Some(self.start.unwrap_or_else(Instant::now));
            }
            match tag {
                b'Q' | b'F' => self.request_sent(),
                b'S' => {
                    self.in_extended = false;
                    self.request_sent();
                }
                b'P' | b'B' | b'D' | b'E' | b'C' | b'H' => self.in_extended = true,
                b'X' => {
                    // The frame's own start: `before` may precede it by the tail of a streamed frame.
                    self.terminate_at = Some(self.cscan.scanned() - whole.unwrap_or(0));
                    return Ok(());
                }
                _ => {}
            }
            let mut kept = true;
            if let (Some(len), Some(stmts)) = (whole, self.stmts.as_deref_mut()) {
                if matches!(tag, b'P' | b'B' | b'D' | b'C') {
                    let start = self.cscan.scanned() - len;
                    let body = &self.cbuf[start + 5..start + len];
                    // Only a named Parse creates the statement map; the rest need one.
                    let named_parse = tag == b'P' && body.first().is_some_and(|b| *b != 0);
                    if stmts.is_none() && named_parse {
                        *stmts = Some(Box::default());
                    }
                    if let Some(map) = stmts.as_deref_mut() {
                        let prepared = &self.server.prepared;
                        let rw = map.rewrite(tag, body, &|id| prepared.contains(&id));
                        if rw != Rewrite::Keep {
                            if tag == b'B' {
                                self.tally.binds += 1;
                            }
                            self.c_hold = Some((self.cscan.scanned() - len, len, rw));
                            kept = false;
                        }
                    }
                }
            }
            if kept && tag == b'P' && self.stmts.is_some() {
                // A Parse forwarded as it is (unnamed, or malformed) still owes a
                // ParseComplete, which must stay in line with the ones we swallow.
                self.acks.parse_sent(0, true);
            }
            if self.c_hold.is_some() {
                return Ok(());
            }
        }
    }

    fn request_sent(&mut self) {
        // A new request: the server's next bytes answer it.
        self.s_cut = false;
        self.acks.sent_epoch += 1;
        if self.outstanding == 0 {
            self.query_started = Some(self.start.take().unwrap_or_else(Instant::now));
        }
        self.outstanding += 1;
    }

    /// Looks at newly read server bytes: ReadyForQuery and ParameterStatus.
    pub(super) fn scan_server(&mut self) -> Result<()> {
        if self.s_hold.is_some() || self.s_cut {
            return Ok(());
        }
        let tracking = self.stmts.is_some();
        loop {
            let item = self
                .sscan
                .next(&self.server.buf, self.max_packet, |t, total, _| {
                    total <= WHOLE_FRAME_CAP
                        && (matches!(t, b'Z' | b'S' | b'E')
                            || (tracking && matches!(t, b'1' | b'C')))
                })
                .map_err(|e| Error::ServerProtocol(e.to_string()))?;
            if !matches!(item, None | Some(Item::Whole { tag: b'E', .. })) {
                // The server answered something: what follows is not "before the BEGIN".
                self.lone_begin = false;
            }
            match item {
                None => return Ok(()),
                Some(Item::Whole { tag: b'Z', bytes }) => {
                    let status = bytes.get(5).copied().unwrap_or(b'I');
                    self.server.tx_status = status;
                    self.tally.queries += 1;
                    self.acks.done_epoch += 1;
                    self.outstanding = self.outstanding.saturating_sub(1);
                    let now = Instant::now();
                    if self.outstanding == 0 {
                        if let Some(t) = self.query_started.take() {
                            self.tally.query_time += now - t;
                        }
                    } else {
                        self.query_started = Some(now);
                    }
                    if status == b'I' {
                        if let Some(t) = self.xact_started.take() {
                            self.tally.xacts += 1;
                            self.tally.xact_time += now - t;
                        }
                        if let Some(stats) = self.live_stats {
                            self.tally.flush_into(stats);
                        }
                    }
                    if self.mode == PoolMode::Statement && status != b'I' {
                        return Err(Error::StatementModeTransaction);
                    }
                    if status == b'I'
                        && self.outstanding == 0
                        && !self.in_extended
                        && self.mode != PoolMode::Session
                    {
                        // Everything is answered: what follows is nobody's answer.
                        self.s_cut = true;
                        return Ok(());
                    }
                }
                Some(Item::Whole { tag: b'S', bytes }) => {
                    if let Ok((k, v)) = build::parse_parameter_status(&bytes[5..]) {
                        let (k, v) = (k.to_string(), v.to_string());
                        if let Some(slot) = self
                            .client_params
                            .iter_mut()
                            .find(|(n, _)| n.eq_ignore_ascii_case(&k))
                        {
                            if *slot.1 != *v {
                                slot.1 = Arc::from(v.as_str());
                                self.tally.params_changed = true;
                            }
                        }
                        self.server.set_param(&k, &v);
                    }
                }
                Some(Item::Whole { tag: b'1', bytes }) if tracking => {
                    if !self.acks.parse_complete() {
                        // The ParseComplete of a Parse we injected: the client never asked.
                        let len = bytes.len();
                        self.s_hold = Some((self.sscan.scanned() - len, len));
                        return Ok(());
                    }
                }
                Some(Item::Whole { tag: b'C', bytes }) if tracking => {
                    let tag_text = &bytes[5..];
                    if tag_text.starts_with(b"DISCARD ALL")
                        || tag_text.starts_with(b"DEALLOCATE ALL")
                    {
                        self.server.prepared.clear();
                        if let Some(Some(map)) = self.stmts.as_deref_mut() {
                            map.clear();
                        }
                    }
                }
                Some(Item::Whole { tag: b'E', bytes }) => {
                    // Rare, so parsing it costs nothing on the hot path.
                    let fields = build::parse_error_fields(&bytes[5..]).ok();
                    if let Some(f) = &fields {
                        if crate::error::is_role_change_sqlstate(&f.code) {
                            self.tally.role_change = true;
                            if self.lone_begin && f.severity == "FATAL" {
                                // Not forwarded: the session sends the BEGIN elsewhere.
                                return Err(Error::ServerGone);
                            }
                        }
                    }
                    self.lone_begin = false;
                    if !tracking {
                        continue;
                    }
                    let len = bytes.len();
                    // Renamed before the failed Parses are forgotten: the name may be one of them.
                    let renamed = match self.stmts.as_deref() {
                        Some(Some(map)) => map.rename_in_error(&bytes[5..]),
                        _ => None,
                    };
                    self.parses_failed();
                    if let Some(frame) = renamed {
                        self.s_hold = Some((self.sscan.scanned() - len, len));
                        self.s_swap = Some(frame);
                        return Ok(());
                    }
                }
                Some(Item::Partial { tag: b'E', .. }) if tracking => self.parses_failed(),
                Some(_) => {}
            }
        }
    }

    /// An ErrorResponse: the Parses the server failed or skipped since the last sync point
    /// created nothing, on the server nor (for the client's own) under the client's name.
    fn parses_failed(&mut self) {
        if self.acks.is_empty() {
            return;
        }
        for (id, client_parse) in self.acks.error() {
            self.server.prepared.remove(&id);
            if client_parse && id != 0 {
                if let Some(Some(map)) = self.stmts.as_deref_mut() {
                    map.forget(id);
                }
            }
        }
    }
}
