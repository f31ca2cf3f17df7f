//! The HTTP side against scripted servers on 127.0.0.1: statuses, timeouts, oversized and
//! garbage bodies, failing over to the next endpoint, DNS names with several addresses, the
//! members' `api_url`s, and a whole `Clusters` task that publishes and answers `poke()`.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::*;
use crate::config::{parse_ini_str, PatroniUrl};
use crate::discovery::client::{system_resolve, FetchError, Fetcher};
use crate::discovery::poll::poll_once;
use crate::discovery::{Clusters, Settings, MAX_BODY};

/// What the scripted server answers.
#[derive(Clone)]
enum Script {
    /// 200 with this body.
    Json(String),
    /// This status, empty body.
    Status(u16),
    /// Accept, read the request, never answer.
    Hang,
    /// 200 with a body of this many bytes (no valid JSON).
    Big(usize),
}

/// A scripted HTTP/1.1 server; the script can change while it runs. Stops when dropped.
struct FakePatroni {
    addr: SocketAddr,
    script: Arc<Mutex<Script>>,
    requests: Arc<Mutex<u32>>,
    stop: CancellationToken,
}

impl FakePatroni {
    async fn start(script: Script) -> FakePatroni {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let script = Arc::new(Mutex::new(script));
        let requests = Arc::new(Mutex::new(0));
        let stop = CancellationToken::new();
        let (s, r, st) = (script.clone(), requests.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let (mut sock, _) = tokio::select! {
                    _ = st.cancelled() => return,
                    a = listener.accept() => match a { Ok(a) => a, Err(_) => return },
                };
                let (s, r, st) = (s.clone(), r.clone(), st.clone());
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match sock.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    *r.lock() += 1;
                    let script = s.lock().clone();
                    let (status, body) = match script {
                        Script::Json(b) => (200, b.into_bytes()),
                        Script::Status(code) => (code, Vec::new()),
                        Script::Big(n) => (200, vec![b' '; n]),
                        Script::Hang => {
                            st.cancelled().await;
                            return;
                        }
                    };
                    let head = format!(
                        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n\
                         Content-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = sock.write_all(head.as_bytes()).await;
                    let _ = sock.write_all(&body).await;
                    let _ = sock.shutdown().await;
                });
            }
        });
        FakePatroni {
            addr,
            script,
            requests,
            stop,
        }
    }

    fn set(&self, script: Script) {
        *self.script.lock() = script;
    }

    fn url(&self) -> PatroniUrl {
        PatroniUrl {
            host: "127.0.0.1".into(),
            port: self.addr.port(),
        }
    }

    fn requests(&self) -> u32 {
        *self.requests.lock()
    }
}

impl Drop for FakePatroni {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A port that refuses connections: bound but never listening. The socket is held (not closed)
/// so the kernel cannot hand the same port to a `FakePatroni` started after it, which made two
/// "different" members one address and the poll report one error instead of two.
struct Refusing {
    addr: SocketAddr,
    _socket: tokio::net::TcpSocket,
}

fn refusing() -> Refusing {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind("127.0.0.1:0".parse().expect("addr"))
        .expect("bind");
    Refusing {
        addr: socket.local_addr().expect("addr"),
        _socket: socket,
    }
}

fn url_of(addr: SocketAddr) -> PatroniUrl {
    PatroniUrl {
        host: addr.ip().to_string(),
        port: addr.port(),
    }
}

fn settings(patroni: Vec<PatroniUrl>) -> Settings {
    Settings {
        patroni,
        interval: Duration::from_secs(60),
        timeout: Duration::from_millis(500),
    }
}

const T: Duration = Duration::from_secs(2);

#[tokio::test]
async fn fetch_answers_statuses_and_bodies() {
    let f = Fetcher::new(TaskTracker::new());
    let p = FakePatroni::start(Script::Json(HEALTHY_3.into())).await;
    let body = f.get_cluster(p.addr, T).await.expect("200");
    assert_eq!(&body[..], HEALTHY_3.as_bytes());

    p.set(Script::Status(503));
    let e = f.get_cluster(p.addr, T).await.expect_err("503");
    assert!(matches!(e, FetchError::Status { status: 503, .. }), "{e}");

    p.set(Script::Big(MAX_BODY + 1));
    let e = f.get_cluster(p.addr, T).await.expect_err("too big");
    assert!(e.to_string().contains("larger than 1048576 bytes"), "{e}");

    p.set(Script::Big(10));
    let s = settings(vec![p.url()]);
    let e = poll_once(&f, &s, None, &[], &system_resolve)
        .await
        .expect_err("not JSON");
    assert!(matches!(e[0], FetchError::Parse { .. }), "{}", e[0]);
}

#[tokio::test]
async fn a_silent_member_times_out() {
    let f = Fetcher::new(TaskTracker::new());
    let p = FakePatroni::start(Script::Hang).await;
    let e = f
        .get_cluster(p.addr, Duration::from_millis(200))
        .await
        .expect_err("times out");
    assert_eq!(e.to_string(), format!("{}: no answer within 200ms", p.addr));
}

#[tokio::test]
async fn a_refused_member_is_skipped_for_the_next() {
    let f = Fetcher::new(TaskTracker::new());
    let refused = refusing();
    let down = refused.addr;
    let hung = FakePatroni::start(Script::Hang).await;
    let broken = FakePatroni::start(Script::Status(500)).await;
    let up = FakePatroni::start(Script::Json(HEALTHY_3.into())).await;
    let s = settings(vec![url_of(down), hung.url(), broken.url(), up.url()]);
    let (state, by) = poll_once(&f, &s, None, &[], &system_resolve)
        .await
        .expect("the fourth answers");
    assert_eq!(by, up.addr);
    assert_eq!(state.leader.as_deref(), Some("node1"));

    // Everyone down: every error is reported.
    let s = settings(vec![url_of(down), broken.url()]);
    let errors = poll_once(&f, &s, None, &[], &system_resolve)
        .await
        .expect_err("nobody answers");
    assert_eq!(errors.len(), 2);
    assert!(
        errors[0].to_string().starts_with(&format!("{down}: ")),
        "{}",
        errors[0]
    );
}

#[tokio::test]
async fn the_last_good_member_is_asked_first_then_listed_api_urls() {
    let f = Fetcher::new(TaskTracker::new());
    let a = FakePatroni::start(Script::Json(HEALTHY_3.into())).await;
    let b = FakePatroni::start(Script::Json(HEALTHY_3.into())).await;
    let s = settings(vec![a.url(), b.url()]);
    let (_, by) = poll_once(&f, &s, Some(b.addr), &[], &system_resolve)
        .await
        .expect("answers");
    assert_eq!(by, b.addr);
    assert_eq!((a.requests(), b.requests()), (0, 1));

    // The configured URL is gone; a member's api_url from the last answer still works.
    let refused = refusing();
    let down = refused.addr;
    let s = settings(vec![url_of(down)]);
    let listed = [
        PatroniUrl::parse(&format!("http://127.0.0.1:{}/patroni", a.addr.port()))
            .expect("api_url parses"),
    ];
    let (_, by) = poll_once(&f, &s, Some(down), &listed, &system_resolve)
        .await
        .expect("the listed member answers");
    assert_eq!(by, a.addr);
}

#[tokio::test]
async fn a_dns_name_is_every_address_it_resolves_to() {
    let f = Fetcher::new(TaskTracker::new());
    let refused = refusing();
    let down = refused.addr;
    let up = FakePatroni::start(Script::Json(PATRONI_4.into())).await;
    let up_port = up.addr.port();
    // A headless Service: one name, every member's address (the first one dead).
    let resolve = move |host: &str, port: u16| {
        let host = host.to_string();
        Box::pin(async move {
            match host.as_str() {
                "db-api.test" => Ok(vec![down, SocketAddr::from(([127, 0, 0, 1], up_port))]),
                _ => Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("no such host:{port}"),
                )),
            }
        })
            as std::pin::Pin<
                Box<dyn std::future::Future<Output = io::Result<Vec<SocketAddr>>> + Send>,
            >
    };
    let s = settings(vec![
        PatroniUrl {
            host: "nosuch.test".into(),
            port: 8008,
        },
        PatroniUrl {
            host: "db-api.test".into(),
            port: 8008,
        },
    ]);
    let (state, by) = poll_once(&f, &s, None, &[], &resolve)
        .await
        .expect("answers");
    assert_eq!(by, up.addr);
    assert_eq!(state.scope.as_deref(), Some("demo"));
}

#[tokio::test]
async fn a_cluster_task_publishes_answers_poke_and_stops() {
    let p = FakePatroni::start(Script::Json(HEALTHY_3.into())).await;
    let ini = format!(
        "[clusters]\nc = patroni=http://127.0.0.1:{}\n[pgbouncer]\npatroni_poll_interval = 60\n",
        p.addr.port()
    );
    let cfg = parse_ini_str(&ini, std::path::Path::new("t.ini")).expect("config");
    let tasks = TaskTracker::new();
    let shutdown = CancellationToken::new();
    let clusters = Clusters::new(tasks.clone(), shutdown.clone());
    clusters.reconcile(&cfg);
    let c = clusters.get("c").expect("configured");
    let mut rx = c.subscribe();
    assert!(!c.topology().is_known(), "nothing polls before start");
    clusters.start();
    tokio::time::timeout(Duration::from_secs(10), rx.changed())
        .await
        .expect("first answer within 10 s")
        .expect("sender alive");
    assert_eq!(
        rx.borrow_and_update().state.leader.as_deref(),
        Some("node1")
    );

    // The interval is a minute: only a poke makes the failover visible now.
    p.set(Script::Json(AFTER_FAILOVER_3.into()));
    c.poke();
    tokio::time::timeout(Duration::from_secs(10), rx.changed())
        .await
        .expect("poked poll within 10 s")
        .expect("sender alive");
    let t = rx.borrow_and_update().clone();
    assert_eq!(t.state.leader.as_deref(), Some("node2"));
    assert_eq!(t.leader_changes, 1);

    // Removed on reload: its task ends. Shutdown ends the rest, connection tasks included.
    let cfg2 = parse_ini_str("", std::path::Path::new("t.ini")).expect("config");
    clusters.reconcile(&cfg2);
    assert!(clusters.get("c").is_none());
    shutdown.cancel();
    tasks.close();
    tokio::time::timeout(Duration::from_secs(10), tasks.wait())
        .await
        .expect("every discovery task ends at shutdown");
}
