//! Tests for startup-phase packet parsing and the `options` parameter.

use super::*;
use bytes::BufMut;
use postgres_protocol::message::frontend;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const MAX: u32 = 10_000;

/// A raw startup-phase packet: length, code, body.
fn packet(code: u32, body: &[u8]) -> BytesMut {
    let mut buf = BytesMut::new();
    buf.put_u32(8 + body.len() as u32);
    buf.put_u32(code);
    buf.put_slice(body);
    buf
}

fn parse_all(bytes: &[u8]) -> Result<Option<StartupPacket>, StartupError> {
    parse_startup(&mut BytesMut::from(bytes), MAX)
}

#[test]
fn startup_roundtrip_with_postgres_protocol() {
    let params = [
        ("user", "alice"),
        ("database", "app"),
        ("application_name", "psql \u{e9}"),
        ("options", "-c search_path=x"),
        ("empty", ""),
    ];
    let mut buf = BytesMut::new();
    frontend::startup_message(params.iter().copied(), &mut buf).unwrap();
    let got = parse_startup(&mut buf, MAX).unwrap().unwrap();
    assert_eq!(
        got,
        StartupPacket::Startup {
            params: RawParams::from_pairs(params),
            minor: 0
        }
    );
    let StartupPacket::Startup { params: raw, .. } = got else {
        unreachable!()
    };
    assert_eq!(raw.iter().collect::<Vec<_>>(), params);
    assert!(buf.is_empty());
}

#[test]
fn startup_without_params_and_newer_minor() {
    assert_eq!(
        parse_all(&packet(PROTOCOL_3_0, b"\0")).unwrap(),
        Some(StartupPacket::Startup {
            params: RawParams::from_pairs([]),
            minor: 0
        })
    );
    assert_eq!(
        parse_all(&packet(PROTOCOL_3_0 | 2, b"user\0u\0_pq_.x\0y\0\0")).unwrap(),
        Some(StartupPacket::Startup {
            params: RawParams::from_pairs([("user", "u"), ("_pq_.x", "y")]),
            minor: 2
        })
    );
}

#[test]
fn request_codes_roundtrip_with_postgres_protocol() {
    let mut buf = BytesMut::new();
    frontend::ssl_request(&mut buf);
    assert_eq!(
        parse_startup(&mut buf, MAX),
        Ok(Some(StartupPacket::SslRequest))
    );

    let mut buf = BytesMut::new();
    frontend::cancel_request(-2, 0x1234_5678, &mut buf);
    assert_eq!(
        parse_startup(&mut buf, MAX),
        Ok(Some(StartupPacket::Cancel {
            pid: u32::MAX - 1,
            key: 0x1234_5678
        }))
    );

    assert_eq!(
        parse_all(&packet(GSSENC_REQUEST_CODE, b"")),
        Ok(Some(StartupPacket::GssEncRequest))
    );
    assert_eq!(
        parse_all(&packet(2 << 16, b"anything, V2 layout differs")),
        Ok(Some(StartupPacket::V2))
    );
}

#[test]
fn incomplete_packets_wait_and_keep_the_buffer() {
    let mut full = BytesMut::new();
    frontend::startup_message([("user", "bob")], &mut full).unwrap();
    for cut in 0..full.len() {
        let mut buf = BytesMut::from(&full[..cut]);
        assert_eq!(parse_startup(&mut buf, MAX), Ok(None), "cut {cut}");
        assert_eq!(&buf[..], &full[..cut]);
    }
}

/// libpq's sslmode=prefer opens every plain connection with an SSLRequest alone in its read:
/// the buffer must keep its memory for the StartupMessage after it (it used to go with the
/// SSLRequest, and the next read allocated a fresh one).
#[test]
fn a_lone_ssl_request_leaves_the_buffer_its_memory() {
    for code in [SSL_REQUEST_CODE, GSSENC_REQUEST_CODE] {
        let mut buf = BytesMut::with_capacity(1024);
        buf.put_slice(&packet(code, b""));
        assert!(matches!(parse_startup(&mut buf, MAX), Ok(Some(_))));
        assert!(buf.is_empty());
        assert!(
            buf.capacity() >= 1024 - 8,
            "code {code}: {}",
            buf.capacity()
        );
    }
    let mut buf = BytesMut::with_capacity(1024);
    buf.put_slice(&packet(CANCEL_REQUEST_CODE, &[0, 0, 0, 7, 0, 0, 0, 9]));
    assert_eq!(
        parse_startup(&mut buf, MAX),
        Ok(Some(StartupPacket::Cancel { pid: 7, key: 9 }))
    );
    assert!(buf.capacity() >= 1024 - 16);
}

#[test]
fn consumes_exactly_one_packet() {
    let mut buf = BytesMut::new();
    frontend::ssl_request(&mut buf);
    frontend::startup_message([("user", "bob")], &mut buf).unwrap();
    buf.put_slice(b"Qtrailing");
    assert_eq!(
        parse_startup(&mut buf, MAX),
        Ok(Some(StartupPacket::SslRequest))
    );
    assert!(matches!(
        parse_startup(&mut buf, MAX),
        Ok(Some(StartupPacket::Startup { .. }))
    ));
    assert_eq!(&buf[..], b"Qtrailing");
}

#[test]
fn length_limits_are_checked_first() {
    // Only the length has arrived: a huge announcement is refused at once.
    assert_eq!(
        parse_all(&u32::MAX.to_be_bytes()),
        Err(StartupError::TooLarge(u32::MAX))
    );
    assert_eq!(
        parse_all(&(MAX + 1).to_be_bytes()),
        Err(StartupError::TooLarge(MAX + 1))
    );
    assert_eq!(
        parse_all(&0u32.to_be_bytes()),
        Err(StartupError::TooShort(0))
    );
    assert_eq!(
        parse_all(&7u32.to_be_bytes()),
        Err(StartupError::TooShort(7))
    );
    // Exactly at the limit is fine.
    let mut body = b"k\0".to_vec();
    body.resize(MAX as usize - 8 - 2, b'v');
    body.extend_from_slice(b"\0\0");
    let buf = packet(PROTOCOL_3_0, &body);
    assert_eq!(buf.len(), MAX as usize);
    assert!(matches!(
        parse_all(&buf),
        Ok(Some(StartupPacket::Startup { .. }))
    ));
}

#[test]
fn malformed_packets() {
    let cases: Vec<(BytesMut, StartupError)> = vec![
        (
            packet(SSL_REQUEST_CODE, b"x"),
            StartupError::Malformed("SSLRequest has a body"),
        ),
        (
            packet(GSSENC_REQUEST_CODE, b"x"),
            StartupError::Malformed("GSSENCRequest has a body"),
        ),
        (
            packet(CANCEL_REQUEST_CODE, &[0; 4]),
            StartupError::Malformed("CancelRequest must be 16 bytes"),
        ),
        (
            packet(CANCEL_REQUEST_CODE, &[0; 12]),
            StartupError::Malformed("CancelRequest must be 16 bytes"),
        ),
        (
            packet(CANCEL_REQUEST_CODE, &[0; 36]),
            StartupError::Malformed("CancelRequest must be 16 bytes"),
        ),
        (
            packet(PROTOCOL_3_0, b""),
            StartupError::Malformed("expected terminator as last byte"),
        ),
        (
            packet(PROTOCOL_3_0, b"user\0bob\0"),
            StartupError::Malformed("expected terminator as last byte"),
        ),
        (
            packet(PROTOCOL_3_0, b"user\0bob"),
            StartupError::Malformed("expected terminator as last byte"),
        ),
        (
            packet(PROTOCOL_3_0, b"user\0"),
            StartupError::Malformed("parameter without a value"),
        ),
        (
            packet(PROTOCOL_3_0, b"user\0bob\0\0x"),
            StartupError::Malformed("data after the terminator"),
        ),
        (
            packet(PROTOCOL_3_0, b"user\0\xff\0\0"),
            StartupError::Malformed("startup parameter is not valid UTF-8"),
        ),
        (
            packet(PROTOCOL_3_0, b"\xc3\0v\0\0"),
            StartupError::Malformed("startup parameter is not valid UTF-8"),
        ),
        (
            packet(80_877_105, b""),
            StartupError::UnknownCode(80_877_105),
        ),
        (packet(4 << 16, b"\0"), StartupError::UnknownCode(4 << 16)),
        (packet(1 << 16, b"\0"), StartupError::UnknownCode(1 << 16)),
        (packet(0, b""), StartupError::UnknownCode(0)),
    ];
    for (buf, want) in cases {
        assert_eq!(parse_all(&buf), Err(want), "{:?}", &buf[..]);
    }
    assert_eq!(
        StartupError::UnknownCode(80_877_105).to_string(),
        "unsupported frontend protocol 1234.5681"
    );
}

#[test]
fn no_panic_on_garbage() {
    let mut rng = StdRng::seed_from_u64(0x57a7);
    let mut valid = BytesMut::new();
    frontend::startup_message([("user", "bob"), ("database", "db")], &mut valid).unwrap();
    for round in 0..20_000 {
        let mut input: Vec<u8> = if round % 2 == 0 {
            // Random bytes behind a plausible length.
            let len = rng.gen_range(0..48usize);
            let mut v = (len as u32 + rng.gen_range(0..3)).to_be_bytes().to_vec();
            v.extend((0..len).map(|_| rng.gen::<u8>()));
            v
        } else {
            valid.to_vec()
        };
        // Flip a few bytes, then maybe truncate.
        for _ in 0..rng.gen_range(0..4) {
            if !input.is_empty() {
                let i = rng.gen_range(0..input.len());
                input[i] = rng.gen();
            }
        }
        let cut = rng.gen_range(0..=input.len());
        let mut buf = BytesMut::from(&input[..cut]);
        let before = buf.len();
        match parse_startup(&mut buf, 64) {
            Ok(None) => assert_eq!(buf.len(), before),
            Ok(Some(_)) => assert!(buf.len() < before),
            Err(_) => {}
        }
    }
}

#[test]
fn options_supported_forms() {
    let ok = |s: &str| parse_options(s).unwrap();
    let pairs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
        v.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    assert_eq!(ok(""), pairs(&[]));
    assert_eq!(ok("   "), pairs(&[]));
    assert_eq!(ok("-c timezone=UTC"), pairs(&[("timezone", "UTC")]));
    assert_eq!(ok("-ctimezone=UTC"), pairs(&[("timezone", "UTC")]));
    assert_eq!(ok("--timezone=UTC"), pairs(&[("timezone", "UTC")]));
    assert_eq!(
        ok("-c    a=1\t--b=2  -cc=3 "),
        pairs(&[("a", "1"), ("b", "2"), ("c", "3")])
    );
    assert_eq!(
        ok("-c datestyle=German,\\ YMD"),
        pairs(&[("datestyle", "German, YMD")])
    );
    // Escapes anywhere, including an escaped '=' in the key (PgBouncer's test case).
    assert_eq!(
        ok("-c t\\imezone=\\P\\o\\r\\t\\ugal  -c    dat\\estyle\\=\\Ge\\rman,\\ YMD"),
        pairs(&[("timezone", "Portugal"), ("datestyle", "German, YMD")])
    );
    assert_eq!(ok("-c a=b=c"), pairs(&[("a", "b=c")]));
    assert_eq!(ok("-c a="), pairs(&[("a", "")]));
    assert_eq!(ok("-c a=x\\"), pairs(&[("a", "x")]));
    assert_eq!(
        ok("--search-path=public"),
        pairs(&[("search_path", "public")])
    );
    assert_eq!(
        ok("-c app=\u{e9}t\u{e9}"),
        pairs(&[("app", "\u{e9}t\u{e9}")])
    );
}

#[test]
fn options_unsupported_forms() {
    for s in [
        "-d",
        "-c timezone",
        "-c",
        "--",
        "-c =x",
        "timezone=UTC",
        "-c a=1 -B 10",
        "-c a=1 extra",
        "-",
        "-x a=1",
    ] {
        assert_eq!(parse_options(s), Err(OptionsError::Unsupported), "{s:?}");
    }
    assert_eq!(
        OptionsError::Unsupported.to_string(),
        "unsupported options startup parameter: only '-c config=val' and '--config=val' are allowed"
    );
}

#[test]
fn options_no_panic() {
    let mut rng = StdRng::seed_from_u64(7);
    let alphabet = ['-', 'c', '=', '\\', ' ', '\t', 'a', '\u{e9}', '-'];
    for _ in 0..5000 {
        let len = rng.gen_range(0..16);
        let s: String = (0..len)
            .map(|_| alphabet[rng.gen_range(0..alphabet.len())])
            .collect();
        let _ = parse_options(&s);
    }
}
