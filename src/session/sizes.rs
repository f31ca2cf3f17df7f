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
    let fut = session(&ctx, &info, stream, Vec::new());
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
