//! One client from its first byte to its last: startup, authentication, then a short loop
//! Idle → (request) → checkout → transfer → checkin. The only module that holds a client and a
//! server at once.
//!
//! Memory rule: an idle client owns no read buffer and no server. The idle wait is a small future;
//! the transaction path is boxed so its larger state exists only while a request runs.

pub mod auth;
pub mod auth_query;
pub mod bufs;
pub mod cancel;
mod isolate;
mod ldap;
mod link;
pub mod params;
pub mod pipeline;
pub mod prepared;
pub mod registry;
mod replay;
mod replication;
#[cfg(test)]
mod sizes;
pub mod startup;
mod transfer;
mod xact;

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::Poll;

use bytes::BytesMut;
use tokio::io::AsyncReadExt;
use tracing::Instrument;

use crate::context::{Context, Phase};
use crate::error::{Error, Result};
use crate::logsafe::Clean;
use crate::net::{PeerAddr, Stream};
use crate::pool::Lease;
use crate::pool::{PoolSettings, Route};
use crate::proto::startup::RawParams;
use crate::proto::{build, Scanner};
use registry::{ClientInfo, ClientState};
use startup::Opening;

/// PgBouncer's NOTICE to a client still queued after `query_wait_notify` (sent once per client).
const QUEUED_NOTICE: &str =
    "No server connection available in postgres backend, client being queued";

/// How long a transaction drain waits for an idle client's next request before closing it.
const DRAIN_QUIET: std::time::Duration = std::time::Duration::from_millis(100);

/// How much a queued client may pipeline before we stop reading it (back-pressure).
const QUEUED_BUF_LIMIT: usize = 256 * 1024;

/// A logged-in client.
pub struct Client {
    pub(crate) ctx: Arc<Context>,
    pub(crate) info: Arc<ClientInfo>,
    pub(crate) stream: Stream,
    /// Read buffer; empty with no capacity while idle.
    pub(crate) buf: BytesMut,
    pub(crate) scan: Scanner,
    /// The pool set and role this client's servers come from.
    pub(crate) route: Route,
    pub(crate) settings: Arc<PoolSettings>,
    /// Tracked parameters this client wants on its server.
    pub(crate) params: params::Params,
    /// The server kept between transactions (session pool mode only).
    pub(crate) server: Option<Box<Lease>>,
    /// Holds this client's place under max_client_conn.
    pub(crate) _slot: link::ClientSlot,
    /// Named prepared statements (transaction mode); boxed on first use.
    pub(crate) stmts: Option<Box<prepared::ClientStatements>>,
    /// Lone BEGINs sent again in a row after their server died unanswered (bounded).
    pub(crate) replays: u8,
}

/// Registers an accepted connection and spawns its session on the context's task tracker.
///
/// Registration happens here, before the spawn, so the task's future only captures what it keeps
/// for the session's whole life (the arguments of an async fn stay in its state).
pub fn spawn(ctx: &Arc<Context>, stream: Stream, peer: PeerAddr, local: registry::LocalAddr) {
    let info = ctx.clients.register(peer, local);
    // Whatever ends the session (even a panic), the client leaves the client list.
    let registered = isolate::Registered {
        ctx: ctx.clone(),
        info: info.clone(),
    };
    // Detached from the accept loop but tracked: shutdown waits for sessions. A panic ends only
    // this session (see `isolate`).
    let session = run(ctx.clone(), info, stream);
    ctx.tasks.spawn(isolate::isolated(registered, session));
}

/// Serves one accepted connection to the end. Errors are reported to the client here.
async fn run(ctx: Arc<Context>, info: Arc<ClientInfo>, stream: Stream) {
    // A debug-level span: at the default level it costs an idle client nothing.
    let span = tracing::debug_span!("client", id = info.id);
    async {
        // Boxed, like every phase but the idle wait: only the idle state stays allocated. The
        // session future is made from `open`'s answer in one move, so nothing of the opening
        // (the stream, a cancel key, an error) stays in this task's state while it runs.
        let opened = Box::pin(open(&ctx, &info, stream)).await;
        if let Some(session) =
            opened.map(|(stream, params)| Box::pin(session(&ctx, &info, stream, params)))
        {
            // The session logs its own end: before the client is told why (see `log_end`).
            let _ = session.await;
            ctx.clients.unregister(&info);
        }
    }
    .instrument(span)
    .await
}

/// Reads the opening packets (with TLS if asked and offered): the stream and startup
/// parameters of a session; a cancel request is forwarded and a failure reported here.
async fn open(
    ctx: &Arc<Context>,
    info: &Arc<ClientInfo>,
    stream: Stream,
) -> Option<(Stream, RawParams)> {
    let login_timeout = ctx.config().general.client_login_timeout;
    let deadline = (!login_timeout.is_zero()).then(|| tokio::time::Instant::now() + login_timeout);
    let tls = ctx
        .client_tls
        .get()
        .filter(|_| matches!(info.peer, PeerAddr::Tcp(_)));
    // Not boxed apart: `open` is boxed by its caller already.
    let (stream, opening) = negotiate(stream, tls, deadline).await;
    match (stream, opening) {
        (_, Ok(Opening::Cancel { pid, key })) => {
            ctx.clients.unregister(info);
            Box::pin(cancel::forward(ctx, pid, key)).await;
            None
        }
        (Some(stream), Ok(Opening::Session(params))) => {
            if stream.is_tls() {
                let _ = info.tls.set(stream.tls_description());
            }
            Some((stream, params))
        }
        (stream, opening) => {
            ctx.clients.unregister(info);
            let e = match opening {
                Err(e) => e,
                Ok(_) => Error::ClientGone,
            };
            log_end(ctx, info, Some(&e));
            if let (Some(mut stream), true) = (stream, e.client_reachable()) {
                let _ = Box::pin(report_error(ctx, &mut stream, &e)).await;
            }
            None
        }
    }
}

/// Runs `fut` until the login deadline, if there is one.
async fn within<T>(
    deadline: Option<tokio::time::Instant>,
    fut: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    match deadline {
        None => fut.await,
        Some(d) => tokio::time::timeout_at(d, fut)
            .await
            .unwrap_or(Err(Error::ClientLoginTimeout)),
    }
}

/// Reads the opening packets, upgrading to TLS when the client asks and we offer it. The stream
/// comes back unless a failed handshake consumed it.
async fn negotiate(
    mut stream: Stream,
    tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    deadline: Option<tokio::time::Instant>,
) -> (Option<Stream>, Result<Opening>) {
    loop {
        let offered = tls.is_some() && !stream.is_tls();
        match within(deadline, startup::read_opening(&mut stream, offered)).await {
            Ok(Opening::Tls) => {}
            other => return (Some(stream), other),
        }
        let cfg = tls
            .clone()
            .expect("invariant: read_opening returns Tls only when offered");
        // Boxed: the handshake's state (a rustls connection) is kilobytes, and inline it sized
        // every login's opening future, TLS or not.
        match within(deadline, Box::pin(startup::accept_tls(stream, cfg))).await {
            Ok(s) => stream = s,
            Err(e) => return (None, Err(e)),
        }
    }
}

/// The disconnect line, PgBouncer's "closing because: ..." (log_disconnections).
///
/// Written before the client is sent the error, as PgBouncer does: whoever reads the log after
/// seeing the error (an operator, a test) finds the line already there.
fn log_end(ctx: &Context, info: &ClientInfo, e: Option<&Error>) {
    let reason: std::borrow::Cow<'_, str> = match e {
        None | Some(Error::ClientGone) => "client close request".into(),
        Some(e) => e.to_string().into(),
    };
    if ctx.config().general.log_disconnections {
        // PgBouncer's "(age=Ns)" suffix: the seconds since the client connected.
        let age = info.connect_time.elapsed().map_or(0, |d| d.as_secs());
        tracing::info!(
            "C-{} {}@{} closing because: {} (age={age}s)",
            info.id,
            Clean(&*info.user.lock()),
            info.peer,
            Clean(&reason)
        );
    } else {
        tracing::debug!("C-{} closing because: {}", info.id, Clean(&reason));
    }
}

/// Tells the client about `e`, and logs it when log_pooler_errors asks for pooler errors.
pub(crate) async fn report_error(
    ctx: &Context,
    stream: &mut Stream,
    e: &Error,
) -> std::io::Result<()> {
    if e.side() == crate::error::Side::Pooler && ctx.config().general.log_pooler_errors {
        tracing::warn!("pooler error: {}", Clean(e));
    }
    send_error(stream, e).await
}

/// Writes an ErrorResponse for `e` (FATAL for pooler errors).
pub(crate) async fn send_error(stream: &mut Stream, e: &Error) -> std::io::Result<()> {
    let (sev, code, msg) = e.to_response();
    let mut out = BytesMut::with_capacity(64 + msg.len());
    build::error_response(&mut out, sev, &code, &msg);
    stream.send(&out).await
}

async fn session(
    ctx: &Arc<Context>,
    info: &Arc<ClientInfo>,
    stream: Stream,
    raw: RawParams,
) -> Result<()> {
    // Boxed, and a function of its own: the login's state (auth exchange, buffers, the login
    // timer, the stream before it moves into the `Client`) is freed once it is done, so what an
    // idle client keeps is the `Client` and the request loop's state only.
    let mut client = match Box::pin(admit(ctx, info, stream, raw)).await {
        Admitted::Client(client) => client,
        Admitted::Done(result) => return result,
    };
    let result = client.serve().await;
    Box::pin(client.finish(&result)).await;
    // The read buffer goes back to the shared stock (what is left in it, a Terminate, is done
    // with): dropped with the client, each short-lived connection cost a fresh 8 KiB buffer.
    let mut buf = std::mem::take(&mut client.buf);
    buf.clear();
    ctx.read_bufs.give(buf);
    result
}

/// How a login ended: a client to serve, or a session already over (console, replication, or
/// a failed login, each logged and reported).
// Returned once per login and moved straight into the session's state: boxing the client to
// even the variants out would be an allocation per login for nothing.
#[allow(clippy::large_enum_variant)]
enum Admitted {
    Client(Client),
    Done(Result<()>),
}

/// The login, then the console and replication sessions, which are served from here to their
/// end.
async fn admit(
    ctx: &Arc<Context>,
    info: &Arc<ClientInfo>,
    mut stream: Stream,
    raw: RawParams,
) -> Admitted {
    let cfg = ctx.config();
    let awaiting_welcome = AtomicBool::new(false);
    let login = Box::pin(link::login(
        ctx,
        info,
        &mut stream,
        raw,
        &cfg,
        &awaiting_welcome,
    ));
    let login = if cfg.general.client_login_timeout.is_zero() {
        login.await
    } else {
        tokio::time::timeout(cfg.general.client_login_timeout, login)
            .await
            .unwrap_or_else(|_| {
                // PgBouncer tells the two apart: a client held back by a server that never
                // answered its login is told so.
                Err(if awaiting_welcome.load(Relaxed) {
                    Error::ClientLoginTimeoutServerDown
                } else {
                    Error::ClientLoginTimeout
                })
            })
    };
    match login {
        Ok(link::LoggedIn::Client(w)) => Admitted::Client(Client {
            ctx: ctx.clone(),
            info: info.clone(),
            stream,
            buf: BytesMut::new(),
            scan: Scanner::default(),
            route: w.route,
            settings: w.settings,
            params: w.params,
            server: None,
            _slot: w.slot,
            stmts: None,
            replays: 0,
        }),
        Ok(link::LoggedIn::Replication {
            server,
            slot,
            place,
        }) => {
            // Boxed: inline, the relay's state (a whole ServerConn) made this future larger.
            let result = Box::pin(replication::relay(info, &mut stream, *server)).await;
            drop((slot, place));
            log_end(ctx, info, result.as_ref().err());
            Admitted::Done(result)
        }
        Ok(link::LoggedIn::Admin { user, admin }) => {
            let session = crate::admin::AdminSession {
                ctx: ctx.clone(),
                info: info.clone(),
                stream,
                user,
                admin,
            };
            let result = Box::pin(crate::admin::serve(session)).await;
            log_end(ctx, info, result.as_ref().err());
            Admitted::Done(result)
        }
        Err(e) => {
            log_end(ctx, info, Some(&e));
            if e.client_reachable() {
                let _ = Box::pin(report_error(ctx, &mut stream, &e)).await;
            }
            Admitted::Done(Err(e))
        }
    }
}

/// Lone BEGINs sent again in a row (each after a server died without answering it).
const MAX_REPLAYS: u8 = 3;

/// disable_pqexec: a simple Query is refused with PgBouncer's error, and the client closed.
pub(crate) fn pqexec_disallowed() -> Error {
    tracing::warn!("client used \"Query\" packet type");
    Error::PqexecDisallowed
}

/// The error a killed client gets (KILL_CLIENT, KILL db, ...).
fn kill_error_of(info: &ClientInfo) -> Error {
    info.kill_reason
        .lock()
        .map(|r| r.error())
        .unwrap_or(Error::AdminForcedDisconnect)
}

impl Client {
    /// The request loop.
    async fn serve(&mut self) -> Result<()> {
        loop {
            if !self.has_request()? {
                self.wait_request().await?;
                continue;
            }
            if self.buf[0] == b'X' && self.server.is_none() {
                return Ok(());
            }
            if self.buf[0] == b'Q' && self.settings.disable_pqexec {
                return Err(pqexec_disallowed());
            }
            if self.ctx.is_suspended() && self.server.is_none() {
                // SUSPEND: the request waits, unread by any server, until RESUME. Boxed: inline,
                // this rare wait's state sat in every idle client's future.
                let (ctx, info) = (&self.ctx, &self.info);
                let killed = Box::pin(async {
                    tokio::select! {
                        _ = ctx.wait_unsuspended() => false,
                        _ = info.signal(false) => true,
                    }
                })
                .await;
                if killed {
                    return Err(self.kill_error());
                }
            }
            let committed = Box::pin(self.transaction()).await?;
            // A transaction drain (SIGTERM with shutdown_drain = transaction) ends a client
            // right after a COMMIT, before its next request: a busy pooled connection is never
            // quiet for DRAIN_QUIET (the next unit's pre-ping follows the COMMIT within
            // microseconds), so it would otherwise be served until shutdown_timeout cut it off,
            // maybe mid-transaction. The driver has its COMMIT answer and the connection is back
            // in its pool, where the next checkout's pre-ping finds it closed and connects again
            // (through the Service, to another replica). Not after a ROLLBACK or a statement
            // outside a block: SQLAlchemy's asyncpg pre-ping is itself BEGIN; ROLLBACK, and the
            // unit's own BEGIN follows it at once and would then fail.
            if committed
                && self.buf.is_empty()
                && self.server.is_none()
                && self.ctx.phase() == Phase::DrainTransactions
            {
                return Err(Error::Exiting);
            }
            if self.buf.is_empty() {
                // Idle clients own no buffer; it goes back to the shared stock.
                self.ctx.read_bufs.give(std::mem::take(&mut self.buf));
            }
        }
    }

    /// The first frame can be handled: all there, or one the transfer may stream. A frame the
    /// transfer must see whole (a tracked Parse/Bind) is read in full before a server is taken;
    /// taking one earlier gave it back at once with nothing sent, in a busy loop.
    fn has_request(&mut self) -> Result<bool> {
        let whole = transfer::client_whole(self.tracks_statements());
        match crate::proto::front_needs(&self.buf, self.settings.max_packet_size, whole) {
            Ok(None) => Ok(true),
            Ok(Some(need)) => {
                if need > self.buf.len() + 8 * 1024 {
                    self.buf.reserve(need - self.buf.len());
                }
                Ok(false)
            }
            Err(e) => Err(Error::ClientProtocol(e.to_string())),
        }
    }

    /// Named statements are tracked (renamed per client) in transaction and statement mode.
    fn tracks_statements(&self) -> bool {
        self.settings.pool_mode != crate::config::PoolMode::Session
            && self.settings.max_prepared_statements > 0
    }

    /// Waits for the client's next bytes, honouring client_idle_timeout, drain and kill.
    async fn wait_request(&mut self) -> Result<()> {
        let idle_timeout = self.settings.client_idle_timeout;
        if self.server.is_none() && self.buf.is_empty() {
            match self.ctx.phase() {
                Phase::DrainTransactions => {
                    return Box::pin(self.read_or_close()).await;
                }
                Phase::Stopping => return Err(Error::Exiting),
                // PgBouncer's SIGTERM serves an idle client like any other until it leaves.
                Phase::Running | Phase::DrainClients | Phase::DrainServers => {}
            }
        }
        let drainable = self.server.is_none() && self.buf.is_empty();
        // Boxed: the timer exists only where client_idle_timeout is set.
        let mut timer = (!idle_timeout.is_zero() && self.server.is_none())
            .then(|| Box::pin(tokio::time::sleep(idle_timeout)));
        // One poll function instead of select! over futures: what an idle client keeps while it
        // waits is just these few captures (readiness lives in the socket's registration).
        let (stream, info) = (&self.stream, &self.info);
        let woke = poll_fn(|cx| {
            if info.poll_signal(cx, drainable) {
                return Poll::Ready(Err(None));
            }
            if let Poll::Ready(r) = stream.poll_read_ready(cx) {
                return Poll::Ready(r.map_err(|e| Some(Error::ClientIo(e))));
            }
            if let Some(t) = timer.as_mut() {
                if t.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Err(Some(Error::ClientIdleTimeout)));
                }
            }
            Poll::Pending
        })
        .await;
        match woke {
            Ok(()) => {}
            Err(Some(e)) => return Err(e),
            Err(None) if self.info.is_killed() => return Err(self.kill_error()),
            Err(None) => {
                return Box::pin(self.read_or_close()).await;
            }
        }
        self.make_room();
        let (stream, buf) = (&mut self.stream, &mut self.buf);
        let n = poll_fn(|cx| tokio_util::io::poll_read_buf(Pin::new(&mut *stream), cx, &mut *buf))
            .await
            .map_err(Error::ClientIo)?;
        if n == 0 {
            return Err(Error::ClientGone);
        }
        Ok(())
    }

    /// A transaction drain closes an idle client only once it stayed quiet for a moment, and then
    /// without an ErrorResponse: a driver that just finished a transaction (SQLAlchemy's
    /// pre-ping) usually sends the next one within microseconds, and an unsolicited FATAL on an
    /// idle connection confuses drivers (asyncpg raises InternalClientError) where a plain close
    /// is seen as a dropped connection that the application's pool replaces. Reads what the
    /// client sends within [`DRAIN_QUIET`] (a real read, not a readiness check: tokio caches
    /// readiness until a read would block); closes it otherwise.
    async fn read_or_close(&mut self) -> Result<()> {
        self.make_room();
        let (stream, buf) = (&mut self.stream, &mut self.buf);
        let read =
            poll_fn(|cx| tokio_util::io::poll_read_buf(Pin::new(&mut *stream), cx, &mut *buf));
        match tokio::time::timeout(DRAIN_QUIET, read).await {
            Err(_) => Err(Error::Exiting),
            Ok(Ok(0)) => Err(Error::ClientGone),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(Error::ClientIo(e)),
        }
    }

    fn kill_error(&self) -> Error {
        kill_error_of(&self.info)
    }

    /// Room to read into: an idle client's empty buffer comes from the shared stock.
    fn make_room(&mut self) {
        if self.buf.capacity() == 0 {
            self.buf = self.ctx.read_bufs.take();
        } else if self.buf.capacity() - self.buf.len() < 1024 {
            self.buf.reserve(bufs::READ_BUF);
        }
    }
}
