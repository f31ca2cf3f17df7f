//! Scripted exchanges over socket pairs: what the transfer forwards, holds back and ends on.

use super::*;
use crate::proto::build::{self, Severity};
use crate::server::statements::StatementCache;
use crate::server::CancelTarget;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// A server connection over one end of a Unix socket pair, for scripted exchanges.
fn unix_server(theirs: UnixStream) -> ServerConn {
    ServerConn::new(
        Stream::Unix(theirs),
        CancelTarget {
            host: crate::config::ServerHost::Tcp("x".into()),
            port: 1,
            addr: None,
            pid: 1,
            key: 1,
            inflight: Default::default(),
        },
        ("unix".into(), 0),
    )
}

/// A transfer of the request in `request` between a client socket pair and a server socket
/// pair; the fake server reads the request and answers `answer` in one write. Returns the
/// transfer's end, what the client received, and what stayed in the server's buffer.
async fn one_request(
    request: &[u8],
    answer: &[u8],
    lone_begin: bool,
) -> (Result<End>, Vec<u8>, usize) {
    let (ours, mut client_peer) = UnixStream::pair().expect("pair");
    let (theirs, mut server_peer) = UnixStream::pair().expect("pair");
    let mut client = Stream::Unix(ours);
    let mut server = unix_server(theirs);
    let mut buf = BytesMut::from(request);
    let mut scan = Scanner::default();
    let mut params = Params::default();
    let answer = answer.to_vec();
    let request_len = request.len();
    let fake = async move {
        let mut got = vec![0u8; request_len];
        server_peer.read_exact(&mut got).await.expect("request");
        server_peer.write_all(&answer).await.expect("answer");
        // Then the server goes away, as a terminated backend does.
    };
    let mut t = Transfer::new(
        &mut client,
        &mut buf,
        &mut scan,
        &mut server,
        &mut params,
        PoolMode::Transaction,
        1 << 20,
        Duration::ZERO,
        Duration::ZERO,
    );
    if lone_begin {
        t.lone_begin();
    }
    let (end, ()) = tokio::join!(t.run(), fake);
    drop(client);
    let mut seen = Vec::new();
    client_peer
        .read_to_end(&mut seen)
        .await
        .expect("client side");
    (end, seen, server.buf.len())
}

fn frames(f: impl Fn(&mut BytesMut)) -> Vec<u8> {
    let mut b = BytesMut::new();
    f(&mut b);
    b.to_vec()
}

#[tokio::test]
async fn bytes_after_the_last_answer_are_not_forwarded() {
    let request = frames(|b| build::query(b, "COMMIT").expect("query"));
    let done = frames(|b| {
        build::command_complete(b, "COMMIT");
        build::ready_for_query(b, b'I');
    });
    let mut answer = done.clone();
    // A fast shutdown's FATAL right after the COMMIT's answer.
    answer.extend(frames(|b| {
        build::error_response(b, Severity::Fatal, "57P01", "terminating connection")
    }));
    let (end, seen, left) = one_request(&request, &answer, false).await;
    assert_eq!(end.expect("released"), End::Released);
    assert_eq!(
        seen, done,
        "the client saw the COMMIT's answer and nothing more"
    );
    assert!(
        left > 0,
        "the FATAL stays with the server, which is closed at release"
    );
}

#[tokio::test]
async fn a_lone_begin_answered_only_by_a_shutdown_fatal_is_not_forwarded() {
    let request = frames(|b| build::query(b, "BEGIN").expect("query"));
    let fatal =
        frames(|b| build::error_response(b, Severity::Fatal, "57P01", "terminating connection"));
    let (end, seen, _) = one_request(&request, &fatal, true).await;
    assert!(matches!(end, Err(Error::ServerGone)));
    assert!(
        seen.is_empty(),
        "the client saw nothing: the BEGIN may go elsewhere"
    );
    // Without the mark (any other request) the client gets the server's error.
    let (end, seen, _) = one_request(&request, &fatal, false).await;
    assert!(matches!(end, Err(Error::ServerGone)));
    assert_eq!(seen, fatal);
}

/// A kill (KILL_CLIENT, KILL db) ends a link that sleeps inside a transaction, waiting for
/// the client's next statement: the link watches the client's registry entry itself.
#[tokio::test]
async fn a_kill_ends_a_link_asleep_inside_a_transaction() {
    kill_inside_a_transaction(false).await;
}

/// A query_wait_notify nudge that lands after the checkout takes the session's waker; a
/// kill that comes later, from another task, must still wake the link.
#[tokio::test]
async fn a_kill_after_a_late_nudge_still_ends_the_link() {
    kill_inside_a_transaction(true).await;
}

/// A link inside a transaction (BEGIN answered), killed from another task once it sleeps;
/// with `nudge`, the client is nudged first.
async fn kill_inside_a_transaction(nudge: bool) {
    use crate::net::PeerAddr;
    use crate::pool::Nudge;
    use crate::session::registry::{Clients, KillReason, LocalAddr};
    let (ours, mut client_peer) = UnixStream::pair().expect("pair");
    let (theirs, mut server_peer) = UnixStream::pair().expect("pair");
    let mut client = Stream::Unix(ours);
    let mut server = unix_server(theirs);
    let request = frames(|b| build::query(b, "BEGIN").expect("query"));
    let answer = frames(|b| {
        build::command_complete(b, "BEGIN");
        build::ready_for_query(b, b'T');
    });
    let clients = Clients::default();
    let info = clients.register(PeerAddr::Unix, LocalAddr::Unknown);
    let mut buf = BytesMut::from(&request[..]);
    let mut scan = Scanner::default();
    let mut params = Params::default();
    let mut t = Transfer::new(
        &mut client,
        &mut buf,
        &mut scan,
        &mut server,
        &mut params,
        PoolMode::Transaction,
        1 << 20,
        Duration::ZERO,
        Duration::ZERO,
    );
    t.watch_kill(&info);
    let (request_len, killer) = (request.len(), info.clone());
    let script = async move {
        let mut got = vec![0u8; request_len];
        server_peer.read_exact(&mut got).await.expect("request");
        server_peer.write_all(&answer).await.expect("answer");
        // The client has the BEGIN's answer: the link sleeps, waiting for the client.
        let mut seen = vec![0u8; answer.len()];
        client_peer.read_exact(&mut seen).await.expect("answer");
        if nudge {
            killer.nudge();
        }
        // From another task, so only the link's own registration can wake this one.
        tokio::spawn(async move {
            for _ in 0..16 {
                tokio::task::yield_now().await;
            }
            killer.kill(KillReason::AdminForced);
        });
        (server_peer, client_peer)
    };
    // A link that missed the kill would sleep for good. The guard is biased toward its
    // timer: `timeout` would poll the link once more first, and that poll sees the kill.
    let run = async {
        tokio::select! {
            biased;
            _ = tokio::time::sleep(Duration::from_secs(30)) => None,
            end = t.run() => Some(end),
        }
    };
    let (end, _peers) = tokio::join!(run, script);
    assert!(matches!(
        end.expect("the kill woke the link"),
        Err(Error::AdminForcedDisconnect)
    ));
}

/// The size of the future `f` returns, without a value to call it on.
fn future_size<'a, T: 'a, F>(_: impl FnOnce(&'a mut T) -> F) -> usize {
    std::mem::size_of::<F>()
}

/// Each transaction boxes `Client::transaction`'s future (a malloc and a copy of its full
/// size), so the rare round trips inside it (server_check_query, a tracked SET, the
/// reset query) are boxed where they happen instead of widening it: 5.7 KB before, 3.3 KB
/// after (debug build). A rare path added inline shows up here.
#[test]
fn the_per_transaction_future_stays_small() {
    use crate::session::Client;
    let transaction = future_size(Client::transaction);
    assert!(
        transaction < 4096,
        "transaction future: {transaction} bytes"
    );
    type Linked = (ServerConn, Params);
    let sync = future_size(|p: &'static mut Linked| {
        super::super::params::sync_params(&mut p.0, &mut p.1, 0)
    });
    assert!(sync < 256, "sync_params future: {sync} bytes");
}

fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut f = vec![tag];
    f.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    f.extend_from_slice(body);
    f
}

/// A renamed Bind (pgbench -M prepared's every transaction) is rewritten in the read
/// buffer itself: it goes out in one run with the Execute and Sync behind it, nothing is
/// planned apart, and the buffer the rewrite was made in is kept for the next one.
#[tokio::test]
async fn a_renamed_bind_is_rewritten_in_place() {
    let (ours, _client_peer) = UnixStream::pair().expect("pair");
    let (theirs, _server_peer) = UnixStream::pair().expect("pair");
    let mut client = Stream::Unix(ours);
    let mut server = unix_server(theirs);
    let cache = StatementCache::default();
    let stmt = cache.intern(b"select 1\0\0\0");
    assert!(server.prepared.insert(&stmt, 10).is_empty());
    let mut map = Some(Box::<ClientStatements>::default());
    map.as_mut().expect("map").insert(b"P_0", stmt.clone());
    let mut params = Params::default();
    let request = [
        frame(b'B', b"\0P_0\0\0\0\0\0\0\0"),
        frame(b'E', b"\0\0\0\0\0"),
        frame(b'S', b""),
    ]
    .concat();
    let mut renamed = b"\0".to_vec();
    renamed.extend_from_slice(&stmt.name);
    renamed.extend_from_slice(b"\0\0\0\0\0\0\0");
    let want = [
        frame(b'B', &renamed),
        request[request.len() - 15..].to_vec(),
    ]
    .concat();
    let mut kept = None;
    for round in 0..2 {
        let mut buf = BytesMut::from(&request[..]);
        let mut scan = Scanner::default();
        let mut t = Transfer::new(
            &mut client,
            &mut buf,
            &mut scan,
            &mut server,
            &mut params,
            PoolMode::Transaction,
            1 << 20,
            Duration::ZERO,
            Duration::ZERO,
        );
        t.track_statements(&mut map, &cache, 10);
        t.scan_client().expect("scan");
        assert_eq!(t.c_out.pieces(), 0, "round {round}: one run, nothing apart");
        assert_eq!(&t.cbuf[..], &want[..]);
        assert_eq!(t.cscan.scanned(), want.len());
        drop(t);
        let spare = map.as_mut().expect("map").take_buf();
        assert!(
            spare.capacity() > 0,
            "round {round}: the buffer was handed back"
        );
        if let Some(ptr) = kept {
            assert_eq!(spare.as_ptr(), ptr, "the same buffer serves every rewrite");
        }
        kept = Some(spare.as_ptr());
        map.as_mut().expect("map").give_buf(spare);
    }
}

#[test]
fn only_frames_that_name_a_statement_are_held_whole() {
    let w = client_whole(true);
    let big = 400 * 1024;
    assert!(w(b'P', big, b"s1\0SELECT"));
    assert!(!w(b'P', big, b"\0SELECT"), "unnamed Parse streams");
    assert!(w(b'P', big, b""), "undecided until the name shows");
    assert!(w(b'B', big, b"\0s1\0"));
    assert!(w(b'B', big, b"portal\0s"));
    assert!(!w(b'B', big, b"\0\0\0\x01"), "unnamed Bind streams");
    assert!(!w(b'B', big, b"portal\0\0"));
    assert!(w(b'B', big, b"\0"), "undecided");
    assert!(w(b'B', big, b"port"), "undecided");
    assert!(w(b'D', 10, b"S"));
    assert!(!w(b'Q', big, b"SELECT"));
    assert!(!client_whole(false)(b'B', big, b"\0s1\0"));
}
