//! One transaction of a logged-in client: checkout (or the session's server), the parameter sync,
//! the transfer, and the check-in with its reset; and the end of a session. Split from `mod.rs`,
//! which keeps the login and the idle wait.

use super::*;

impl Client {
    /// Gets a server for this client (or keeps its session server). The clock read comes back
    /// when an idle server was taken at once, or the one that ended a queued wait, for the
    /// transaction to start its clock with.
    async fn acquire(&mut self) -> Result<(Lease, Option<std::time::Instant>)> {
        if let Some(s) = self.server.take() {
            return Ok((*s, None));
        }
        if self.ctx.phase() == Phase::DrainServers {
            // PgBouncer's pause_client during SHUTDOWN WAIT_FOR_SERVERS / SIGINT.
            return Err(Error::ServerShuttingDown);
        }
        let now = std::time::Instant::now();
        if let Some((conn, check)) = self.route.try_take_idle(now) {
            if check {
                let pool = conn.pool().clone();
                // Boxed, as every rare round trip here: see `transaction`.
                return Ok((Box::pin(pool.check_before_use(conn)).await?, None));
            }
            return Ok((conn, Some(now)));
        }
        self.info.set_state(ClientState::Waiting);
        // The clock read above serves the wait's start everywhere (console, pool, nudge).
        self.info.wait_start_us.store(
            registry::us_since_epoch(now),
            std::sync::atomic::Ordering::Relaxed,
        );
        // The pool counts the assignment and the time waited.
        // A copy of the route: with a host list the checkout may move to another host, and
        // the session's own route re-picks from the set's new epoch afterwards.
        let mut route = self.route.clone();
        // query_wait_notify: the pool's waiter sweeper nudges this client (no timer per wait),
        // once per wait, as PgBouncer's suite expects of a client queued a second time.
        let notify_after = self.settings.query_wait_notify;
        let mut notice = !notify_after.is_zero();
        let nudge: crate::pool::Nudging = notice.then(|| {
            self.info.clear_notice();
            let at = tokio::time::Instant::from_std(now) + notify_after;
            (at, self.info.clone() as Arc<dyn crate::pool::Nudge>)
        });
        let checkout = async move { route.checkout_since(now, nudge).await };
        tokio::pin!(checkout);
        let got = loop {
            // Keep reading while queued: a client that gives up (EOF) must leave the queue with
            // its request unsent, as with PgBouncer; more pipelined requests just join the buffer.
            let room = self.buf.len() < QUEUED_BUF_LIMIT;
            if room && self.buf.capacity() - self.buf.len() < 1024 {
                self.buf.reserve(8 * 1024);
            }
            tokio::select! {
                biased;
                r = &mut checkout => break r,
                _ = self.info.signal(false) => break Err(self.kill_error()),
                _ = poll_fn(|cx| if self.info.poll_notice(cx) { Poll::Ready(()) } else { Poll::Pending }),
                    if notice =>
                {
                    notice = false;
                    let mut out = BytesMut::with_capacity(128);
                    build::notice_response(&mut out, "00000", QUEUED_NOTICE, None);
                    if let Err(e) = self.stream.send(&out).await {
                        break Err(Error::ClientIo(e));
                    }
                }
                r = self.stream.read_buf(&mut self.buf), if room => match r {
                    Ok(0) => break Err(Error::ClientGone),
                    Ok(_) => {}
                    Err(e) => break Err(Error::ClientIo(e)),
                },
            }
        };
        self.info
            .wait_start_us
            .store(0, std::sync::atomic::Ordering::Relaxed);
        // The reading that ended the wait starts the transaction's clocks.
        got.map(|lease| {
            let at = lease.taken_at();
            (lease, at)
        })
    }

    /// One transaction (or, in session mode, the rest of the session); true when it ended with a
    /// COMMIT and its server went back to the pool.
    pub(super) async fn transaction(&mut self) -> Result<bool> {
        // SET and RELOAD change the pool's settings; each transaction runs under the current ones.
        self.settings = self.route.set().settings();
        let mut tries = 0;
        let (mut server, took_at) = loop {
            let (mut server, took_at) = self.acquire().await?;
            match params::sync_params(&mut server, &mut self.params, self.settings.max_packet_size)
                .await
            {
                // A SET round trip makes the checkout's clock read too early to start with.
                Ok(talked) => break (server, took_at.filter(|_| !talked)),
                // The server died under our own SET, before any of the client's bytes went out:
                // take another one (the router re-checks the member).
                Err(e @ (Error::ServerGone | Error::ServerIo(_)))
                    if tries < MAX_REPLAYS
                        && self.settings.pool_mode != crate::config::PoolMode::Session =>
                {
                    tries += 1;
                    server.pool().report_failure(&e);
                    server.release(false);
                }
                Err(e) => {
                    server.release(false);
                    return Err(e);
                }
            }
        };
        // A lone BEGIN on an idle server may be sent again if that server dies unanswered.
        let replayable = if self.settings.pool_mode == crate::config::PoolMode::Session
            || server.tx_status != b'I'
        {
            None
        } else {
            replay::lone_begin(&self.buf)
        };
        // One clock read serves the pool's lifetime and check-delay tests, the console's
        // request_time, the transaction and its first query (a fresh one after a wait or a SET).
        let started = took_at.unwrap_or_else(std::time::Instant::now);
        let started_us = registry::us_since_epoch(started);
        self.info.set_state(ClientState::Active);
        self.info
            .request_time_us
            .store(started_us, std::sync::atomic::Ordering::Relaxed);
        *self.info.linked.lock() = Some((server.id, server.cancel.clone()));
        if let Some(r) = &server.registration {
            r.info.set_linked(Some(self.info.id));
            r.info
                .request_time_us
                .store(started_us, std::sync::atomic::Ordering::Relaxed);
        }
        let tracks = self.tracks_statements();
        // The pool's own counters, for session mode's per-transaction stats.
        let server_pool = server.pool().clone();
        let mut t = transfer::Transfer::new(
            &mut self.stream,
            &mut self.buf,
            &mut self.scan,
            &mut server,
            &mut self.params,
            self.settings.pool_mode,
            self.settings.max_packet_size,
            self.settings.query_timeout,
            self.settings.idle_transaction_timeout,
        );
        t.set_start(started);
        t.xact_timeout = self.settings.transaction_timeout;
        if self.settings.pool_mode == crate::config::PoolMode::Session {
            t.fast_close = Some(server_pool.clone());
        }
        t.no_simple_query = self.settings.disable_pqexec;
        if tracks {
            t.track_statements(
                &mut self.stmts,
                &self.ctx.statements,
                self.settings.max_prepared_statements as usize,
            );
        }
        if replayable.is_some() {
            t.lone_begin();
        }
        if self.settings.pool_mode == crate::config::PoolMode::Session {
            t.stats_per_xact(&server_pool.stats);
        }
        t.watch_kill(&self.info);
        let end = t.run().await;
        let mut tally = std::mem::take(&mut t.tally);
        let last_ready = t.last_ready;
        drop(t);
        if tracks {
            let n = self.stmts.as_ref().map_or(0, |m| m.len()) as u32;
            self.info.prepared_statements.store(n, Relaxed);
            if let Some(r) = &server.registration {
                r.info
                    .prepared_statements
                    .store(server.prepared.len() as u32, Relaxed);
            }
        }
        // (bytes of the request written to the server, whether any answer byte came back)
        let (written, answered) = (tally.bytes_from_client as usize, tally.bytes_to_client > 0);
        if tally.params_changed {
            if let Some(app) = self.params.get("application_name") {
                *self.info.application_name.lock() = Some(app.clone());
            }
        }
        *self.info.linked.lock() = None;
        if let Some(r) = &server.registration {
            r.info.set_linked(None);
        }
        self.info.set_state(ClientState::Idle);
        server.record(&tally.take_xact());
        if tally.role_change {
            // The server answered 57P01/57P02/25006...: its member may be changing role.
            server.pool().report(crate::pool::Signal::Sqlstate);
        }
        match end {
            // Session mode gives a server back mid-session only for server_fast_close, and the
            // session ends with it: its state (SETs, temp tables) lived on that server.
            Ok(transfer::End::Released)
                if self.settings.pool_mode == crate::config::PoolMode::Session =>
            {
                server.release(false);
                Err(Error::DatabaseConfigChanged)
            }
            Ok(transfer::End::Released) => {
                self.replays = 0;
                self.release(server, last_ready).await;
                Ok(tally.committed)
            }
            Ok(transfer::End::ClientLeft { clean }) => {
                if !clean {
                    tracing::debug!("client disconnect while server was not ready");
                    server.release(false);
                } else if self.settings.pool_mode == crate::config::PoolMode::Session {
                    // finish() resets it with server_reset_query.
                    self.server = Some(Box::new(server));
                } else {
                    server.release(true);
                }
                Err(Error::ClientGone)
            }
            Err(Error::AdminForcedDisconnect) => {
                server.release(false);
                Err(self.kill_error())
            }
            Err(e) => {
                if e.side() == crate::error::Side::Server {
                    // The server went away mid-transaction: the router re-checks its member.
                    server.pool().report_failure(&e);
                }
                server.release(false);
                let died = matches!(e, Error::ServerGone | Error::ServerIo(_));
                match replayable {
                    Some(frame) if died && !answered && self.replays < MAX_REPLAYS => {
                        tracing::debug!("server died before answering a lone BEGIN: sent again");
                        self.replays += 1;
                        // Put back what was written; the unwritten rest is still buffered.
                        let written = written.min(frame.len());
                        let mut buf = BytesMut::with_capacity(written + self.buf.len());
                        buf.extend_from_slice(&frame[..written]);
                        buf.extend_from_slice(&self.buf);
                        self.buf = buf;
                        self.scan = Scanner::default();
                        Ok(false)
                    }
                    _ => Err(e),
                }
            }
        }
    }

    /// Back to the pool after a transaction, with server_reset_query when always asked for.
    /// `quiet_at`: the clock reading of the server's last ReadyForQuery, if the transfer saw one.
    async fn release(&mut self, mut server: Lease, quiet_at: Option<std::time::Instant>) {
        if !server.buf.is_empty() {
            // The server spoke after its last answer (a FATAL of a shutdown): close it, and let
            // the router re-check its member. The client saw nothing of it.
            server.pool().report(crate::pool::Signal::Gone);
            server.release(false);
            return;
        }
        if self.settings.server_reset_query_always && !self.settings.server_reset_query.is_empty() {
            // Boxed: the reset's round trip is optional, see `transaction`.
            let reset = Box::pin(server.run_internal(
                &self.settings.server_reset_query,
                self.settings.max_packet_size,
            ));
            let ok = matches!(reset.await, Ok(None));
            server.release(ok);
        } else {
            // The last ReadyForQuery's clock reading is when the server went quiet.
            match quiet_at {
                Some(at) => server.release_at(true, at),
                None => server.release(true),
            }
        }
    }

    /// Session end: a kept (session-mode) server is reset and returned.
    pub(super) async fn finish(&mut self, result: &Result<()>) {
        if let Some(mut server) = self.server.take() {
            let q = &self.settings.server_reset_query;
            let ok = if q.is_empty() {
                server.tx_status == b'I'
            } else {
                matches!(
                    server.run_internal(q, self.settings.max_packet_size).await,
                    Ok(None)
                ) && server.tx_status == b'I'
            };
            server.release(ok);
        }
        log_end(&self.ctx, &self.info, result.as_ref().err());
        if let Err(e) = result {
            if e.client_reachable() && !matches!(e, Error::ClientGone) {
                let _ = report_error(&self.ctx, &mut self.stream, e).await;
            }
        }
    }
}
