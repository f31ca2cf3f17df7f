use super::*;

fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![tag];
    v.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    v.extend_from_slice(body);
    v
}

#[test]
fn read_frame_roundtrip_and_incomplete() {
    let bytes = frame(b'Q', b"select 1\0");
    for cut in 0..bytes.len() {
        let mut buf = BytesMut::from(&bytes[..cut]);
        assert_eq!(read_frame(&mut buf, 1 << 20), Ok(None), "cut {cut}");
    }
    let mut buf = BytesMut::from(&bytes[..]);
    buf.extend_from_slice(b"X");
    let f = read_frame(&mut buf, 1 << 20).unwrap().unwrap();
    assert_eq!(f.tag, b'Q');
    assert_eq!(&f.body[..], b"select 1\0");
    assert_eq!(&buf[..], b"X");
}

#[test]
fn take_frame_takes_a_buffer_holding_just_the_frame() {
    let bytes = frame(b'p', b"md5abc\0");
    for cut in 0..bytes.len() {
        let mut buf = BytesMut::from(&bytes[..cut]);
        assert_eq!(take_frame(&mut buf, 1 << 20), Ok(None), "cut {cut}");
    }
    let mut buf = BytesMut::with_capacity(1024);
    buf.extend_from_slice(&bytes);
    let mem = buf.as_ptr();
    let (tag, body) = take_frame(&mut buf, 1 << 20).unwrap().unwrap();
    assert_eq!((tag, &body[..]), (b'p', &b"md5abc\0"[..]));
    // The buffer's own memory, not a shared split of it.
    assert_eq!(body.as_ptr(), mem.wrapping_add(5));
    assert_eq!(buf.capacity(), 0);
    // More than the frame: split, and the rest stays.
    let mut buf = BytesMut::from(&bytes[..]);
    buf.extend_from_slice(b"X");
    let (_, body) = take_frame(&mut buf, 1 << 20).unwrap().unwrap();
    assert_eq!(&body[..], b"md5abc\0");
    assert_eq!(&buf[..], b"X");
    let mut buf = BytesMut::from(&[b'p', 0, 0, 0, 3][..]);
    assert_eq!(take_frame(&mut buf, 100), Err(FrameError::BadLength(3)));
}

#[test]
fn read_frame_rejects_bad_and_oversized_lengths_before_buffering() {
    let mut buf = BytesMut::from(&[b'Q', 0, 0, 0, 3][..]);
    assert_eq!(read_frame(&mut buf, 100), Err(FrameError::BadLength(3)));
    let mut buf = BytesMut::from(&[b'Q', 0x7f, 0xff, 0xff, 0xff][..]);
    assert!(matches!(
        read_frame(&mut buf, 1000),
        Err(FrameError::TooLarge { .. })
    ));
    assert!(buf.capacity() < 1 << 20);
}

#[test]
fn scanner_yields_whole_frames_and_streams_large_ones() {
    let mut stream = frame(b'T', b"abc");
    stream.extend(frame(b'D', &[7u8; 100]));
    stream.extend(frame(b'Z', b"I"));
    let mut sc = Scanner::default();
    // Feed byte by byte: every whole() frame comes out whole, others may stream.
    let mut seen = Vec::new();
    for end in 1..=stream.len() {
        while let Some(item) = sc
            .next(&stream[..end], 1 << 20, |t, _, _| t == b'Z')
            .unwrap()
        {
            match item {
                Item::Whole { tag, bytes } => seen.push((tag, bytes.len(), true)),
                Item::Partial { tag, total } => seen.push((tag, total, false)),
            }
        }
    }
    assert_eq!(sc.scanned(), stream.len());
    assert!(sc.at_boundary());
    assert_eq!(seen.last(), Some(&(b'Z', 6, true)));
    assert!(seen.iter().any(|s| s.0 == b'D' && !s.2));
}

#[test]
fn scanner_consumed_keeps_position_consistent() {
    let a = frame(b'C', b"SELECT 1\0");
    let mut buf = BytesMut::from(&a[..]);
    buf.extend_from_slice(&frame(b'Z', b"I")[..3]);
    let mut sc = Scanner::default();
    assert!(matches!(
        sc.next(&buf, 1 << 20, |_, _, _| true).unwrap(),
        Some(Item::Whole { tag: b'C', .. })
    ));
    assert_eq!(sc.next(&buf, 1 << 20, |_, _, _| true).unwrap(), None);
    let n = sc.scanned();
    buf.advance(n);
    sc.consumed(n);
    buf.extend_from_slice(&frame(b'Z', b"I")[3..]);
    assert_eq!(
        sc.next(&buf, 1 << 20, |_, _, _| true).unwrap(),
        Some(Item::Whole {
            tag: b'Z',
            bytes: &frame(b'Z', b"I")[..]
        })
    );
}

#[test]
fn scanner_never_panics_on_garbage() {
    let mut seed = 0x1234_5678u32;
    for _ in 0..2000 {
        let len = (seed % 64) as usize;
        let mut v = Vec::with_capacity(len);
        for _ in 0..len {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
            v.push((seed >> 16) as u8);
        }
        let mut sc = Scanner::default();
        while let Ok(Some(_)) = sc.next(&v, 1 << 16, |t, _, _| t == b'Z') {}
        let mut b = BytesMut::from(&v[..]);
        while let Ok(Some(_)) = read_frame(&mut b, 1 << 16) {}
    }
}

#[test]
fn scanner_waits_for_a_wanted_frame_of_any_size_and_says_how_much() {
    // A frame wanted whole, larger than WHOLE_FRAME_CAP and than any read buffer: it is not
    // streamed, and needs() tells the caller to read on until it is all there.
    let big = frame(b'B', &vec![7u8; 400 * 1024]);
    let mut sc = Scanner::default();
    for cut in [0, 3, 5, 8 * 1024, big.len() - 1] {
        assert_eq!(
            sc.next(&big[..cut], u32::MAX, |t, _, _| t == b'B'),
            Ok(None)
        );
        assert_eq!(sc.scanned(), 0);
        let want = if cut < HEADER_LEN {
            HEADER_LEN
        } else {
            big.len()
        };
        assert_eq!(sc.needs(), want, "cut {cut}");
        assert!(sc.needs() > cut, "waiting for bytes it already has");
    }
    assert!(matches!(
        sc.next(&big, u32::MAX, |t, _, _| t == b'B'),
        Ok(Some(Item::Whole { tag: b'B', bytes })) if bytes.len() == big.len()
    ));
    assert_eq!(sc.needs(), 0);
    // Not wanted whole (or capped by the caller): streamed as it comes, nothing to wait for.
    let mut sc = Scanner::default();
    assert!(matches!(
        sc.next(&big[..8 * 1024], u32::MAX, |t, total, _| t == b'B'
            && total <= WHOLE_FRAME_CAP),
        Ok(Some(Item::Partial { tag: b'B', .. }))
    ));
    assert_eq!(sc.scanned(), 8 * 1024);
}

#[test]
fn front_needs_holds_back_only_frames_wanted_whole() {
    let parse = frame(b'P', &vec![b'x'; 9000]);
    let whole = |t: u8, _: usize, _: &[u8]| t == b'P';
    assert_eq!(
        front_needs(&parse[..2], 1 << 20, whole),
        Ok(Some(HEADER_LEN))
    );
    assert_eq!(
        front_needs(&parse[..8192], 1 << 20, whole),
        Ok(Some(parse.len()))
    );
    assert_eq!(front_needs(&parse, 1 << 20, whole), Ok(None));
    // A Query may be streamed: a server can be taken as soon as its header is in.
    let query = frame(b'Q', &vec![b'x'; 9000]);
    assert_eq!(front_needs(&query[..8192], 1 << 20, whole), Ok(None));
    assert!(matches!(
        front_needs(&parse[..8192], 100, whole),
        Err(FrameError::TooLarge { .. })
    ));
}
