//! The HTTP endpoint: `/metrics`, `/livez` and `/readyz` over hyper 1 (HTTP/1.1 server, GET or
//! HEAD). Owns routing and the readiness probe; it must not keep its own counters (the scrape reads
//! the same views as the console, `scrape.rs`).
//!
//! - `/livez`: 200 while the process serves.
//! - `/readyz`: 200 once the listeners are bound (this server starts after them), every
//!   configured database's server answers a TCP (or Unix socket) connect and every Patroni
//!   cluster has answered at least once; 503 while draining or
//!   stopping, or when a server is unreachable. A server the pools are already connected to counts
//!   as reachable without a probe; probe results are cached for [`READY_CACHE`].
//! - `/metrics`: Prometheus text format 0.0.4 (see `scrape.rs`).

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};

use crate::config::ServerHost;
use crate::context::{Context, Phase};

/// Largest request head hyper buffers (its minimum); a bigger one gets 431.
const MAX_HEAD: usize = 8 * 1024;
/// A client must send a request head within this (also ends idle keep-alive connections).
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a readiness probe result is reused.
const READY_CACHE: Duration = Duration::from_secs(2);
/// Bound on one server probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The HTTP endpoint's shared state.
struct Http {
    ctx: Arc<Context>,
    /// Last readiness probe of the servers: when, and the first unreachable one.
    /// A std-style short critical section, never held across `.await`.
    probe: Mutex<Option<(Instant, Result<(), String>)>>,
}

/// Binds `http_listen_addr:http_listen_port` when the port is set and spawns the accept loop on
/// `ctx.tasks` (it ends at shutdown). Returns the bound address, or `None` when the endpoint is
/// off. Binding errors are returned so start-up fails loudly.
pub async fn start(ctx: &Arc<Context>) -> io::Result<Option<SocketAddr>> {
    let cfg = ctx.config();
    let Some(port) = cfg.general.http_listen_port else {
        return Ok(None);
    };
    let host = match cfg.general.http_listen_addr.as_deref() {
        None => "127.0.0.1",
        Some("*") => "0.0.0.0",
        Some(h) => h.trim_start_matches('[').trim_end_matches(']'),
    };
    let listener = TcpListener::bind((host, port)).await.map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot listen on http {host}:{port}: {e}"),
        )
    })?;
    let addr = listener.local_addr()?;
    tracing::info!("serving /metrics, /livez, /readyz on http://{addr}");
    let http = Arc::new(Http {
        ctx: ctx.clone(),
        probe: Mutex::new(None),
    });
    ctx.tasks.spawn(accept(http, listener));
    Ok(Some(addr))
}

async fn accept(http: Arc<Http>, listener: TcpListener) {
    loop {
        let accepted = tokio::select! {
            _ = http.ctx.shutdown.cancelled() => return,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                let http = http.clone();
                // Tracked; ends with the connection or at shutdown.
                http.ctx.tasks.clone().spawn(serve(http, stream));
            }
            Err(e) => {
                tracing::warn!("http accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Serves one connection (keep-alive allowed) until the peer closes it, a request head is late,
/// or the process shuts down.
async fn serve<S>(http: Arc<Http>, stream: S)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let shutdown = http.ctx.shutdown.clone();
    let service = hyper::service::service_fn(move |req| {
        let http = http.clone();
        async move { Ok::<_, Infallible>(handle(&http, &req).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(IO_TIMEOUT)
        .max_buf_size(MAX_HEAD)
        .serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        _ = shutdown.cancelled() => {}
        r = conn => {
            if let Err(e) = r {
                tracing::debug!("http connection: {e}");
            }
        }
    }
}

/// Routes one request. HEAD gets GET's status and headers; hyper leaves the body out.
async fn handle(http: &Http, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return respond(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "method not allowed\n".into(),
        );
    }
    match req.uri().path() {
        "/metrics" => {
            let body = super::render(&http.ctx);
            let ctype = "text/plain; version=0.0.4; charset=utf-8";
            respond(StatusCode::OK, ctype, body)
        }
        "/livez" => respond(StatusCode::OK, "text/plain", "ok\n".into()),
        "/readyz" => match ready(http).await {
            Ok(()) => respond(StatusCode::OK, "text/plain", "ready\n".into()),
            Err(why) => respond(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                format!("not ready: {why}\n"),
            ),
        },
        _ => respond(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    }
}

fn respond(status: StatusCode, ctype: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(ctype));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// Readiness: serving (not draining) and every configured server reachable.
async fn ready(http: &Http) -> Result<(), String> {
    match http.ctx.phase() {
        Phase::Running => {}
        _ => return Err("shutting down".into()),
    }
    if let Some((at, result)) = http.probe.lock().as_ref() {
        if at.elapsed() < READY_CACHE {
            return result.clone();
        }
    }
    let result = probe_servers(&http.ctx).await;
    // Draining may have started while probing.
    if http.ctx.phase() != Phase::Running {
        return Err("shutting down".into());
    }
    *http.probe.lock() = Some((Instant::now(), result.clone()));
    result
}

/// Checks every distinct server of `[databases]` that no pool is connected to right now. A
/// `cluster=` database has no fixed server: its cluster must have answered once instead.
async fn probe_servers(ctx: &Context) -> Result<(), String> {
    if let Some(c) = ctx.clusters.all().iter().find(|c| !c.topology().is_known()) {
        return Err(format!("patroni cluster {} has not answered yet", c.name));
    }
    let cfg = ctx.config();
    let targets: BTreeSet<(String, u16, bool)> = cfg
        .databases
        .values()
        .filter(|db| db.cluster.is_none())
        .map(|db| {
            let t = crate::pool::target_for(&cfg, db, "");
            let unix = matches!(t.host, ServerHost::Unix(_));
            (t.host_text(), t.port, unix)
        })
        .collect();
    let connected = ctx.servers.all();
    let mut probes = tokio::task::JoinSet::new();
    for (host, port, unix) in targets {
        if connected.iter().any(|s| s.addr == host && s.port == port) {
            continue;
        }
        probes.spawn(async move {
            let reached = tokio::time::timeout(PROBE_TIMEOUT, async {
                if unix {
                    let path = std::path::Path::new(&host).join(format!(".s.PGSQL.{port}"));
                    tokio::net::UnixStream::connect(path).await.map(drop)
                } else {
                    TcpStream::connect((host.as_str(), port)).await.map(drop)
                }
            })
            .await;
            match reached {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(format!("server {host}:{port} unreachable: {e}")),
                Err(_) => Err(format!("server {host}:{port} unreachable: timeout")),
            }
        });
    }
    let mut first_error = Ok(());
    while let Some(done) = probes.join_next().await {
        let r = done.unwrap_or_else(|e| Err(format!("probe failed: {e}")));
        if first_error.is_ok() {
            first_error = r;
        }
    }
    first_error
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// One request over an in-memory connection; returns the raw answer.
    async fn exchange(request: &[u8]) -> String {
        let ctx = Context::new(crate::config::Config::default());
        let http = Arc::new(Http {
            ctx,
            probe: Mutex::new(None),
        });
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let task = tokio::spawn(serve(http, server));
        client.write_all(request).await.expect("write");
        let mut out = Vec::new();
        client.read_to_end(&mut out).await.expect("read");
        task.await.expect("served");
        String::from_utf8_lossy(&out).into_owned()
    }

    #[tokio::test]
    async fn routes_methods_and_limits() {
        let ok = exchange(b"GET /livez?x=1 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").await;
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.ends_with("\r\n\r\nok\n"), "{ok}");
        assert!(ok.contains("cache-control: no-store"), "{ok}");
        let head = exchange(b"HEAD /livez HTTP/1.1\r\nConnection: close\r\n\r\n").await;
        assert!(
            head.starts_with("HTTP/1.1 200 OK\r\n") && head.ends_with("\r\n\r\n"),
            "{head}"
        );
        let post = exchange(b"POST /metrics HTTP/1.1\r\nConnection: close\r\n\r\n").await;
        assert!(post.starts_with("HTTP/1.1 405 "), "{post}");
        let nope = exchange(b"GET /nope HTTP/1.1\r\nConnection: close\r\n\r\n").await;
        assert!(nope.starts_with("HTTP/1.1 404 "), "{nope}");
        let garbage = exchange(b"\x16\x03\x01garbage\r\n\r\n").await;
        assert!(garbage.starts_with("HTTP/1.1 400 "), "{garbage}");
        let mut big = b"GET /livez HTTP/1.1\r\nX-Big: ".to_vec();
        big.extend(std::iter::repeat_n(b'a', 2 * MAX_HEAD));
        big.extend_from_slice(b"\r\n\r\n");
        let big = exchange(&big).await;
        assert!(big.starts_with("HTTP/1.1 431 "), "{big}");
    }
}
