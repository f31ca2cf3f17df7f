//! The HTTP side of discovery: which addresses to ask, and one bounded `GET /cluster` each.
//!
//! hyper (HTTP/1 only, plain http, no TLS stack) through hyper-util's pooled client, so a member
//! that keeps connections alive is not reconnected every second. Every request is bounded by
//! `patroni_timeout` (connect, answer and body together) and every body by [`MAX_BODY`]. The
//! client's connection tasks run on the pooler's `TaskTracker`, so shutdown waits for them.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use tokio_util::task::TaskTracker;

use crate::config::PatroniUrl;

/// Largest `/cluster` answer accepted. A member entry is ~300 bytes, so this allows thousands.
pub const MAX_BODY: usize = 1024 * 1024;
/// An idle kept-alive connection to a member is closed after this.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Why one endpoint gave no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The name of a configured or Patroni-listed endpoint did not resolve.
    #[error("cannot resolve {host}: {source}")]
    Resolve {
        host: String,
        #[source]
        source: io::Error,
    },
    /// Connecting or the exchange failed (refused, reset, bad HTTP).
    #[error("{addr}: {}", chain(.source))]
    Http {
        addr: SocketAddr,
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    /// No complete answer within `patroni_timeout`.
    #[error("{addr}: no answer within {after:?}")]
    Timeout { addr: SocketAddr, after: Duration },
    /// An answer other than 200.
    #[error("{addr}: HTTP status {status}")]
    Status { addr: SocketAddr, status: u16 },
    /// The body was cut off, or larger than [`MAX_BODY`].
    #[error("{addr}: reading the answer: {message}")]
    Body { addr: SocketAddr, message: String },
    /// The body is not a `/cluster` document.
    #[error("{addr}: not a Patroni /cluster answer: {source}")]
    Parse {
        addr: SocketAddr,
        #[source]
        source: serde_json::Error,
    },
}

/// An error and its sources on one line (hyper-util's own text is only "client error (Connect)").
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

/// Runs hyper's connection tasks on the pooler's tracker (instead of a detached `tokio::spawn`).
#[derive(Clone)]
struct TrackedExecutor(TaskTracker);

impl<F> hyper::rt::Executor<F> for TrackedExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, fut: F) {
        self.0.spawn(fut);
    }
}

/// A `/cluster` fetcher for one cluster (one connection pool, owned by its poll task).
pub struct Fetcher {
    client: Client<HttpConnector, Empty<Bytes>>,
}

impl Fetcher {
    /// A fetcher whose connection tasks run on `tasks`.
    pub fn new(tasks: TaskTracker) -> Fetcher {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.enforce_http(true);
        let client = Client::builder(TrackedExecutor(tasks))
            .pool_idle_timeout(IDLE_TIMEOUT)
            .pool_timer(hyper_util::rt::TokioTimer::new())
            .pool_max_idle_per_host(1)
            .build(connector);
        Fetcher { client }
    }

    /// `GET http://addr/cluster`; the body when the answer is 200 and fits in [`MAX_BODY`].
    pub async fn get_cluster(
        &self,
        addr: SocketAddr,
        timeout: Duration,
    ) -> Result<Bytes, FetchError> {
        match tokio::time::timeout(timeout, self.exchange(addr)).await {
            Ok(r) => r,
            Err(_) => Err(FetchError::Timeout {
                addr,
                after: timeout,
            }),
        }
    }

    async fn exchange(&self, addr: SocketAddr) -> Result<Bytes, FetchError> {
        let uri: hyper::Uri = format!("http://{addr}/cluster")
            .parse()
            .expect("invariant: a socket address makes a valid URI");
        let response = self
            .client
            .get(uri)
            .await
            .map_err(|source| FetchError::Http { addr, source })?;
        let status = response.status().as_u16();
        if status != 200 {
            return Err(FetchError::Status { addr, status });
        }
        let body = Limited::new(response.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| FetchError::Body {
                addr,
                message: if e.is::<http_body_util::LengthLimitError>() {
                    format!("larger than {MAX_BODY} bytes")
                } else {
                    chain(&*e)
                },
            })?;
        Ok(body.to_bytes())
    }
}

/// The addresses a poll tries after the one that answered last: every address of every
/// configured URL (a DNS name yields all its addresses, as a Kubernetes headless Service does),
/// then the members' own `api_url`s from the last answer.
pub struct Candidates {
    /// The configured URLs.
    pub configured: Vec<PatroniUrl>,
    /// `api_url`s Patroni listed, parsed.
    pub listed: Vec<PatroniUrl>,
}

/// A boxed resolver, so tests can resolve without DNS.
pub type Resolve<'a> = &'a (dyn Fn(
    &str,
    u16,
) -> Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send + 'static>>
         + Sync);

/// The system resolver (getaddrinfo on tokio's blocking pool).
pub fn system_resolve(
    host: &str,
    port: u16,
) -> Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send + 'static>> {
    let host = host.to_string();
    Box::pin(async move {
        Ok(tokio::net::lookup_host((host.as_str(), port))
            .await?
            .collect())
    })
}

impl Candidates {
    /// Every address, resolved, deduplicated, in order. Resolution errors are returned beside
    /// the addresses (a poll still tries what did resolve).
    pub async fn resolve(
        &self,
        resolve: Resolve<'_>,
        timeout: Duration,
    ) -> (Vec<SocketAddr>, Vec<FetchError>) {
        let mut addrs: Vec<SocketAddr> = Vec::new();
        let mut errors = Vec::new();
        for url in self.configured.iter().chain(&self.listed) {
            let found = match url.host.parse::<IpAddr>() {
                Ok(ip) => Ok(vec![SocketAddr::new(ip, url.port)]),
                Err(_) => match tokio::time::timeout(timeout, resolve(&url.host, url.port)).await {
                    Ok(r) => r,
                    Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "lookup timed out")),
                },
            };
            match found {
                Ok(list) => {
                    for a in list {
                        if !addrs.contains(&a) {
                            addrs.push(a);
                        }
                    }
                }
                Err(source) => errors.push(FetchError::Resolve {
                    host: url.host.clone(),
                    source,
                }),
            }
        }
        (addrs, errors)
    }
}
