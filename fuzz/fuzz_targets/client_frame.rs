//! Fuzz target for the wire framing (`proto::read_frame` and `proto::Scanner`): the first
//! decoder every byte from a client or a server goes through.
//!
//! Input layout: byte 0 picks `max_packet` (mostly small, so `TooLarge` is reached, sometimes
//! above `WHOLE_FRAME_CAP` so streamed frames are too), byte 1 picks which tags the scanner
//! must see whole, byte 2 seeds the chunk sizes the stream arrives in; the rest is the stream.
//!
//! Invariants checked, against an independent reference walk of the stream:
//! - `read_frame` yields exactly the reference frames; the frames it returns re-concatenate to
//!   the prefix of the input it consumed; a body is never longer than the input; an incomplete
//!   frame leaves the buffer's bytes untouched; errors are the reference's errors.
//! - the scanner, fed the stream in chunks and forwarding what it has scanned (as the session
//!   does), forwards exactly a prefix of the stream; every `Whole` item is the reference frame at
//!   that offset, every `Partial` one starts a reference frame that is not all there and that
//!   the caller did not ask to see whole (or that is over `WHOLE_FRAME_CAP`); when it stops at
//!   a frame boundary, `needs()` asks for more than the buffer holds.
//! - `front_needs` agrees with the reference about the first frame.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use ollyscale_pooler::proto::{
    front_needs, read_frame, FrameError, Item, Scanner, HEADER_LEN, WHOLE_FRAME_CAP,
};

/// One step of the reference walk at some offset of the stream.
#[derive(Debug, PartialEq)]
enum Step {
    /// A header announcing a frame of `total` bytes (header included).
    Frame { tag: u8, total: usize },
    /// Fewer than 5 bytes left.
    ShortHeader,
    /// The header is refused.
    Error(FrameError),
}

/// What the protocol says is at `stream[at..]`, written without looking at the crate's code.
fn reference(stream: &[u8], at: usize, max: u32) -> Step {
    let rest = &stream[at..];
    if rest.len() < HEADER_LEN {
        return Step::ShortHeader;
    }
    let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]);
    if len < 4 {
        Step::Error(FrameError::BadLength(len))
    } else if len > max {
        Step::Error(FrameError::TooLarge { len, max })
    } else {
        Step::Frame {
            tag: rest[0],
            total: len as usize + 1,
        }
    }
}

fn pick_max(b: u8) -> u32 {
    if b & 0x80 == 0 {
        // Small limits: 4 (empty bodies only) up to 4 + 127 * 8.
        4 + u32::from(b) * 8
    } else {
        // Over WHOLE_FRAME_CAP, so whole-wanted frames can still be streamed.
        WHOLE_FRAME_CAP as u32 + u32::from(b & 0x7f) * 1024
    }
}

fuzz_target!(|data: &[u8]| {
    let [max_byte, whole_byte, chunk_seed, stream @ ..] = data else {
        return;
    };
    let max = pick_max(*max_byte);
    let whole_byte = *whole_byte;
    // Tags the session wants whole: none, all, or those whose low bits match.
    let whole_tag = move |tag: u8| match whole_byte {
        0 => false,
        0xff => true,
        b => tag & 0x0f == b & 0x0f,
    };
    // Capped as the session's server side caps it, so whole-wanted frames can still stream.
    let whole = move |tag: u8, total: usize, _: &[u8]| whole_tag(tag) && total <= WHOLE_FRAME_CAP;
    check_read_frame(stream, max);
    check_front_needs(stream, max, whole);
    check_scanner(stream, max, whole, *chunk_seed);
});

/// `front_needs` (may a server be taken for this buffer yet?) agrees with the reference walk.
fn check_front_needs(stream: &[u8], max: u32, whole: impl Fn(u8, usize, &[u8]) -> bool) {
    let got = front_needs(stream, max, &whole);
    match reference(stream, 0, max) {
        Step::ShortHeader => assert_eq!(got, Ok(Some(HEADER_LEN))),
        Step::Error(e) => assert_eq!(got, Err(e)),
        Step::Frame { tag, total } => {
            let wait = stream.len() < total && whole(tag, total, &stream[HEADER_LEN..]);
            assert_eq!(got, Ok(wait.then_some(total)));
        }
    }
}

fn check_read_frame(stream: &[u8], max: u32) {
    let mut buf = BytesMut::from(stream);
    let mut rebuilt = Vec::with_capacity(stream.len());
    loop {
        let at = stream.len() - buf.len();
        let before = buf.clone();
        let expected = reference(stream, at, max);
        match read_frame(&mut buf, max) {
            Ok(Some(frame)) => {
                assert!(
                    frame.body.len() <= stream.len(),
                    "body longer than the input"
                );
                let Step::Frame { tag, total } = expected else {
                    panic!("read_frame returned a frame where the reference has {expected:?}");
                };
                assert_eq!(frame.tag, tag);
                assert_eq!(frame.body.len() + HEADER_LEN, total);
                assert!(frame.body.len() + 4 <= max as usize);
                rebuilt.push(frame.tag);
                rebuilt.extend_from_slice(&((frame.body.len() + 4) as u32).to_be_bytes());
                rebuilt.extend_from_slice(&frame.body);
                assert_eq!(
                    &rebuilt[..],
                    &stream[..at + total],
                    "frames do not re-concatenate"
                );
                assert_eq!(&buf[..], &stream[at + total..]);
            }
            Ok(None) => {
                match expected {
                    Step::ShortHeader => {}
                    Step::Frame { total, .. } => assert!(stream.len() - at < total),
                    Step::Error(e) => panic!("read_frame waits where the reference fails: {e}"),
                }
                assert_eq!(buf, before, "an incomplete frame changed the buffer");
                return;
            }
            Err(e) => {
                assert_eq!(Step::Error(e), expected);
                return;
            }
        }
    }
}

fn check_scanner(
    stream: &[u8],
    max: u32,
    whole: impl Fn(u8, usize, &[u8]) -> bool + Copy,
    chunk_seed: u8,
) {
    let mut scanner = Scanner::default();
    // The session's read buffer: bytes received and not yet forwarded.
    let mut buf: Vec<u8> = Vec::new();
    let mut forwarded: Vec<u8> = Vec::new();
    let mut received = 0;
    // Reference cursor: offset in `stream` of the next frame start.
    let mut next_frame = 0usize;
    let mut chunk = usize::from(chunk_seed % 16) + 1;
    while received < stream.len() {
        let n = chunk.min(stream.len() - received);
        buf.extend_from_slice(&stream[received..received + n]);
        received += n;
        chunk = (chunk * 7 + usize::from(chunk_seed)) % 23 + 1;

        loop {
            // `forwarded.len()` is the stream offset of buf[0].
            assert!(forwarded.len() + scanner.scanned() <= next_frame.max(received));
            let item = match scanner.next(&buf, max, whole) {
                Ok(Some(item)) => item,
                Ok(None) => break,
                Err(e) => {
                    // Only a frame start can fail, and only as the reference does.
                    assert_eq!(Step::Error(e), reference(stream, next_frame, max));
                    return;
                }
            };
            let Step::Frame {
                tag: ref_tag,
                total,
            } = reference(stream, next_frame, max)
            else {
                panic!("scanner yielded an item where the reference has none");
            };
            match item {
                Item::Whole { tag, bytes } => {
                    let offset = bytes.as_ptr() as usize - buf.as_ptr() as usize;
                    assert_eq!(forwarded.len() + offset, next_frame, "not at a frame start");
                    assert_eq!(tag, ref_tag);
                    assert_eq!(bytes, &stream[next_frame..next_frame + total]);
                    assert_eq!(forwarded.len() + scanner.scanned(), next_frame + total);
                }
                Item::Partial { tag, total: t } => {
                    assert_eq!(tag, ref_tag);
                    assert_eq!(t, total);
                    assert!(
                        received < next_frame + total,
                        "a complete frame was streamed"
                    );
                    assert!(!whole(tag, total, &[]), "a frame wanted whole was streamed");
                    assert_eq!(scanner.scanned(), buf.len());
                    assert!(!scanner.at_boundary());
                }
            }
            next_frame += total;
        }
        let scanned = scanner.scanned();
        assert!(scanned <= buf.len(), "scanned past the buffer");
        if scanner.at_boundary() {
            // What it waits for is not there yet: a caller that reads until it is never spins.
            assert!(
                scanned + scanner.needs() > buf.len(),
                "waits for bytes it has"
            );
        }
        if scanner.at_boundary() {
            assert_eq!(forwarded.len() + scanned, next_frame);
        } else {
            assert_eq!(scanned, buf.len());
            assert!(next_frame > received);
        }
        // Forward what was scanned, as the session does.
        forwarded.extend_from_slice(&buf[..scanned]);
        buf.drain(..scanned);
        scanner.consumed(scanned);
        assert_eq!(scanner.scanned(), 0);
        assert_eq!(
            &forwarded[..],
            &stream[..forwarded.len()],
            "forwarded bytes differ"
        );
        assert_eq!(forwarded.len() + buf.len(), received);
    }
    // At the end, what is left unforwarded is not a whole frame (or a streamed frame's tail).
    if scanner.at_boundary() {
        match reference(stream, forwarded.len(), max) {
            Step::ShortHeader => {}
            Step::Frame { tag, total } => {
                assert!(buf.len() < total, "a whole frame was left unscanned");
                assert!(whole(tag, total, &[]));
            }
            Step::Error(e) => panic!("the scanner missed an error: {e}"),
        }
    } else {
        assert!(
            buf.is_empty(),
            "bytes of a streamed frame were left unforwarded"
        );
    }
}
