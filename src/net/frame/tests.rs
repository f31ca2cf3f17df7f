//! The buffered reader over real sockets (a Unix pair and loopback TLS): units split across
//! writes and TLS records, bytes after a unit kept, limits checked before the body arrives.

use std::time::Duration;

use bytes::{BufMut, BytesMut};
use postgres_protocol::message::frontend;
use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;

use super::super::test_tls::tls_pair;
use super::*;

const MAX: u32 = 10_000;

fn startup_bytes() -> BytesMut {
    let mut b = BytesMut::new();
    frontend::startup_message([("user", "alice"), ("database", "app")], &mut b).unwrap();
    b
}

fn alice() -> StartupPacket {
    StartupPacket::Startup {
        params: crate::proto::startup::RawParams::from_pairs([
            ("user", "alice"),
            ("database", "app"),
        ]),
        minor: 0,
    }
}

/// The pooler's end as a `Stream`, and the peer's raw end.
fn unix_pair() -> (Stream, UnixStream) {
    let (a, b) = UnixStream::pair().unwrap();
    (Stream::Unix(a), b)
}

/// A startup packet that arrives a byte at a time (even its length field split) is read
/// whole; while it is incomplete the reader waits rather than failing.
#[tokio::test]
async fn startup_packet_split_into_single_bytes() {
    let (mut ours, mut peer) = unix_pair();
    let bytes = startup_bytes();
    peer.write_all(&bytes[..6]).await.unwrap();
    let mut buf = BytesMut::new();
    {
        let read = read_startup(&mut ours, &mut buf, MAX);
        tokio::pin!(read);
        // Six bytes can never make a packet: the reader must still be waiting.
        assert!(tokio::time::timeout(Duration::from_millis(50), &mut read)
            .await
            .is_err());
        let rest = bytes[6..].to_vec();
        let writer = tokio::spawn(async move {
            for b in rest {
                peer.write_all(&[b]).await.unwrap();
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            peer
        });
        assert_eq!(read.await.unwrap(), alice());
        drop(writer.await.unwrap());
    }
    assert!(buf.is_empty());
}

/// The announced length is refused as soon as it is read, before any body is sent or buffered.
#[tokio::test]
async fn oversized_startup_length_refused_before_the_body() {
    let (mut ours, mut peer) = unix_pair();
    let mut head = BytesMut::new();
    head.put_u32(MAX + 1);
    head.put_u32(startup::PROTOCOL_3_0);
    peer.write_all(&head).await.unwrap();
    let mut buf = BytesMut::new();
    match read_startup(&mut ours, &mut buf, MAX).await {
        Err(ReadError::Frame(StartupError::TooLarge(n))) => assert_eq!(n, MAX + 1),
        other => panic!("expected TooLarge, got {other:?}"),
    }
    // Same for a tagged message over its limit.
    let mut buf = BytesMut::new();
    peer.write_all(&[b'Q', 0, 1, 0, 0]).await.unwrap();
    match read_frame(&mut ours, &mut buf, 1024).await {
        Err(ReadError::Frame(FrameError::TooLarge { len, max })) => {
            assert_eq!((len, max), (65_536, 1024))
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
}

/// A peer that closes half-way through a unit is `Eof`, not a protocol error.
#[tokio::test]
async fn close_mid_packet_is_eof() {
    let (mut ours, mut peer) = unix_pair();
    peer.write_all(&startup_bytes()[..10]).await.unwrap();
    drop(peer);
    let mut buf = BytesMut::new();
    assert!(matches!(
        read_startup(&mut ours, &mut buf, MAX).await,
        Err(ReadError::Eof)
    ));
}

/// Over TLS: a startup packet split across three TLS records, then a startup packet and a
/// password message in one record. Bytes after a unit stay in the buffer for the next read.
#[tokio::test]
async fn split_and_coalesced_units_over_tls() {
    let (mut ours, mut peer) = tls_pair().await;
    let bytes = startup_bytes();
    let mut buf = BytesMut::new();
    let writer = tokio::spawn(async move {
        for piece in [&bytes[..2], &bytes[2..9], &bytes[9..]] {
            peer.write_all(piece).await.unwrap();
            peer.flush().await.unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let mut both = startup_bytes();
        frontend::password_message(b"secret", &mut both).unwrap();
        peer.write_all(&both).await.unwrap();
        peer.flush().await.unwrap();
        peer
    });
    assert_eq!(
        read_startup(&mut ours, &mut buf, MAX).await.unwrap(),
        alice()
    );
    assert_eq!(
        read_startup(&mut ours, &mut buf, MAX).await.unwrap(),
        alice()
    );
    let f = read_frame(&mut ours, &mut buf, 1024).await.unwrap();
    assert_eq!((f.tag, &f.body[..]), (b'p', &b"secret\0"[..]));
    assert!(buf.is_empty());
    drop(writer.await.unwrap());
}

/// A tagged message whose header is split (the tag alone first) is read whole.
#[tokio::test]
async fn frame_header_split_from_its_tag() {
    let (mut ours, mut peer) = unix_pair();
    let mut q = BytesMut::new();
    frontend::query("SHOW POOLS", &mut q).unwrap();
    let writer = tokio::spawn(async move {
        peer.write_all(&q[..1]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        peer.write_all(&q[1..3]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        peer.write_all(&q[3..]).await.unwrap();
        peer
    });
    let mut buf = BytesMut::new();
    let f = read_frame(&mut ours, &mut buf, 1024).await.unwrap();
    assert_eq!((f.tag, &f.body[..]), (b'Q', &b"SHOW POOLS\0"[..]));
    drop(writer.await.unwrap());
}
