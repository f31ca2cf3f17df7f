//! What an idle client costs: the state its task keeps while it waits for a request, held to a
//! budget here so that a new field or an inline `.await` in the session's long-lived futures
//! (which stays allocated for every connected client, 2,000 of them in the idle bench) is seen.

use super::*;

/// Two accepted loopback sockets (the futures take their stream by value).
async fn accepted() -> (Stream, PeerAddr, tokio::net::TcpStream) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let c = tokio::net::TcpStream::connect(l.local_addr().unwrap())
        .await
        .unwrap();
    let (s, peer) = l.accept().await.unwrap();
    (Stream::Tcp(s), PeerAddr::Tcp(peer), c)
}

#[tokio::test]
async fn idle_client_state_stays_small() {
    let ctx = Context::new(crate::config::Config::default());
    let (stream, peer, _c1) = accepted().await;
    let info = ctx.clients.register(peer, registry::LocalAddr::Unknown);
    let fut = session(&ctx, &info, stream, RawParams::default());
    let session_size = std::mem::size_of_val(&fut);
    drop(fut);
    let (stream, peer, _c2) = accepted().await;
    let info2 = ctx.clients.register(peer, registry::LocalAddr::Unknown);
    let registered = isolate::Registered {
        ctx: ctx.clone(),
        info: info2.clone(),
    };
    let task = isolate::isolated(registered, run(ctx.clone(), info2, stream));
    let task_size = std::mem::size_of_val(&task);
    drop(task);
    eprintln!("session future {session_size} B, task future {task_size} B");
    // Debug-build sizes (release ones are a little smaller): 1,640 and 504 bytes before the
    // replication relay, the SUSPEND wait, the drain read and the login were boxed apart and
    // the opening's leftovers kept out of the task's state; 504 and 240 after.
    assert!(session_size <= 600, "session future {session_size} B");
    assert!(task_size <= 320, "task future {task_size} B");
}

/// The login's futures are built, then copied into their boxes, at every login: their size is
/// paid in each connect of a connect-per-transaction load. Rare steps (TLS handshake, LDAP,
/// SCRAM, auth_query, replication, the first server of a pool) are boxed apart so they do not
/// size the common md5 path. Debug-build sizes before: login 9,424 B, negotiate 3,056 B,
/// open 3,248 B; after: 1,776, 608, 800.
#[tokio::test]
async fn login_futures_stay_small() {
    let ctx = Context::new(crate::config::Config::default());
    let (mut stream, peer, _c1) = accepted().await;
    let info = ctx.clients.register(peer, registry::LocalAddr::Unknown);
    let cfg = ctx.config();
    let waiting = AtomicBool::new(false);
    let login = link::login(
        &ctx,
        &info,
        &mut stream,
        RawParams::default(),
        &cfg,
        &waiting,
    );
    let login_size = std::mem::size_of_val(&login);
    drop(login);
    let negotiate_size = std::mem::size_of_val(&negotiate(stream, None, None));
    let (stream, _peer, _c2) = accepted().await;
    let open_size = std::mem::size_of_val(&open(&ctx, &info, stream));
    eprintln!("login {login_size} B, negotiate {negotiate_size} B, open {open_size} B");
    assert!(login_size <= 2_000, "login future {login_size} B");
    assert!(negotiate_size <= 700, "negotiate future {negotiate_size} B");
    assert!(open_size <= 900, "open future {open_size} B");
}
