//! A tiny HTTP/1.1 responder for `/metrics`, `/livez` and `/readyz` (GET or HEAD; one request per
//! connection, then close). Deliberately minimal: no hyper, no keep-alive, a bounded request head.
//!
//! - `/livez`: 200 while the process serves.
//! - `/readyz`: 200 once the listeners are bound (this server starts after them), every
//!   configured database's server answers a TCP (or Unix socket) connect and every Patroni
//!   cluster has answered at least once; 503 while draining or
//!   stopping, or when a server is unreachable. A server the pools are already connected to counts
//!   as reachable without a probe; probe results are cached for [`READY_CACHE`].
//! - `/metrics`: Prometheus text format 0.0.4 (see `scrape.rs`).

use std::collections::BTreeSet;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::config::ServerHost;
use crate::context::{Context, Phase};

/// Longest request head we read; anything bigger gets 431.
const MAX_HEAD: usize = 8 * 1024;
/// A client must send its request (and take the answer) within this.
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
                // Tracked; bounded by IO_TIMEOUT and by shutdown.
                http.ctx.tasks.clone().spawn(async move {
                    let shutdown = http.ctx.shutdown.clone();
                    tokio::select! {
                        _ = shutdown.cancelled() => {}
                        _ = tokio::time::timeout(IO_TIMEOUT, serve(&http, stream)) => {}
                    }
                });
            }
            Err(e) => {
                tracing::warn!("http accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// A parsed request line.
#[derive(Debug, PartialEq, Eq)]
struct Request {
    method: String,
    path: String,
}

/// Parses the request line of a complete head (`None` when it is not HTTP).
fn parse_head(head: &[u8]) -> Option<Request> {
    let line = head.split(|b| *b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?.trim_end_matches('\r');
    let mut parts = line.split(' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || !version.starts_with("HTTP/1.") {
        return None;
    }
    let path = target.split('?').next().unwrap_or(target);
    Some(Request {
        method: method.to_string(),
        path: path.to_string(),
    })
}

async fn serve(http: &Http, mut stream: TcpStream) -> io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > MAX_HEAD {
            return respond(
                &mut stream,
                431,
                "text/plain",
                "request head too large\n",
                false,
            )
            .await;
        }
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let Some(req) = parse_head(&head) else {
        return respond(&mut stream, 400, "text/plain", "bad request\n", false).await;
    };
    let head_only = req.method == "HEAD";
    if req.method != "GET" && !head_only {
        return respond(
            &mut stream,
            405,
            "text/plain",
            "method not allowed\n",
            false,
        )
        .await;
    }
    match req.path.as_str() {
        "/metrics" => {
            let body = super::render(&http.ctx);
            let ctype = "text/plain; version=0.0.4; charset=utf-8";
            respond(&mut stream, 200, ctype, &body, head_only).await
        }
        "/livez" => respond(&mut stream, 200, "text/plain", "ok\n", head_only).await,
        "/readyz" => match ready(http).await {
            Ok(()) => respond(&mut stream, 200, "text/plain", "ready\n", head_only).await,
            Err(why) => {
                let body = format!("not ready: {why}\n");
                respond(&mut stream, 503, "text/plain", &body, head_only).await
            }
        },
        _ => respond(&mut stream, 404, "text/plain", "not found\n", head_only).await,
    }
}

async fn respond(
    stream: &mut TcpStream,
    status: u16,
    ctype: &str,
    body: &str,
    head_only: bool,
) -> io::Result<()> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        _ => "Service Unavailable",
    };
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(body.as_bytes());
    }
    stream.write_all(&out).await?;
    stream.shutdown().await
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

    #[test]
    fn request_lines() {
        let r = parse_head(b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\n").expect("parses");
        assert_eq!(
            r,
            Request {
                method: "GET".into(),
                path: "/metrics".into()
            }
        );
        assert!(parse_head(b"GET /metrics\r\n\r\n").is_none());
        assert!(parse_head(b"\x16\x03\x01garbage\r\n\r\n").is_none());
        assert!(parse_head(b"GET / HTTP/2 extra\r\n\r\n").is_none());
    }
}
