//! Fuzz target for what a client sends before its session starts:
//! `proto::startup::parse_startup` (SSLRequest, GSSENCRequest, CancelRequest, StartupMessage)
//! and `proto::startup::parse_options` (the libpq `options` parameter).
//!
//! Input layout: byte 0 picks the packet size limit; the rest is the stream of packets, read
//! one after the other as the listener does, and also given to `parse_options` as text.
//!
//! Invariants checked:
//! - `parse_startup` never consumes more than it was given, nor more than the limit; while a
//!   packet is incomplete (`Ok(None)`) it consumes nothing.
//! - roundtrip: every packet it accepts re-encodes to exactly the bytes it consumed.
//! - `parse_options` output, written back as `--key=value` with escapes, parses to itself; keys
//!   are never empty and never contain `-` or `=`.
#![no_main]

use bytes::{BufMut, BytesMut};
use libfuzzer_sys::fuzz_target;
use ollyscale_pooler::proto::build;
use ollyscale_pooler::proto::startup::{
    parse_options, parse_startup, StartupError, StartupPacket, CANCEL_REQUEST_CODE,
    GSSENC_REQUEST_CODE, PROTOCOL_3_0, SSL_REQUEST_CODE,
};

fn pick_limit(b: u8) -> u32 {
    match b {
        0 => u32::MAX,
        1 => 0,
        b => u32::from(b) * 4,
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&limit_byte, stream)) = data.split_first() else {
        return;
    };
    let max_len = pick_limit(limit_byte);
    check_startup(stream, max_len);
    check_options(&String::from_utf8_lossy(stream));
});

fn check_startup(stream: &[u8], max_len: u32) {
    let mut buf = BytesMut::from(stream);
    loop {
        let before = buf.clone();
        let result = parse_startup(&mut buf, max_len);
        assert!(buf.len() <= before.len(), "the buffer grew");
        let consumed = before.len() - buf.len();
        assert_eq!(
            &buf[..],
            &before[consumed..],
            "consumed bytes were not a prefix"
        );
        let packet = match result {
            Ok(Some(packet)) => packet,
            Ok(None) => {
                assert_eq!(consumed, 0, "an incomplete packet was consumed");
                return;
            }
            Err(e) => {
                match e {
                    StartupError::TooLarge(len) => assert!(len > max_len && consumed == 0),
                    StartupError::TooShort(len) => assert!(len < 8 && consumed == 0),
                    StartupError::Malformed(_) | StartupError::UnknownCode(_) => {}
                }
                return;
            }
        };
        let announced = u32::from_be_bytes([before[0], before[1], before[2], before[3]]);
        assert_eq!(
            consumed, announced as usize,
            "consumed a different length than announced"
        );
        assert!(announced <= max_len);
        assert_eq!(encode(&packet, &before[..consumed]), &before[..consumed]);
    }
}

/// Re-encodes an accepted packet. `original` is only used for the protocol-2 packet, whose body
/// we do not decode.
fn encode(packet: &StartupPacket, original: &[u8]) -> Vec<u8> {
    let mut out = BytesMut::new();
    match packet {
        StartupPacket::SslRequest => code_only(&mut out, SSL_REQUEST_CODE),
        StartupPacket::GssEncRequest => code_only(&mut out, GSSENC_REQUEST_CODE),
        StartupPacket::Cancel { pid, key } => {
            build::cancel_request(&mut out, *pid, *key);
            assert_eq!(&out[4..8], &CANCEL_REQUEST_CODE.to_be_bytes());
        }
        StartupPacket::Startup { params, minor } => {
            let mut body = BytesMut::new();
            body.put_u32(PROTOCOL_3_0 | u32::from(*minor));
            for (key, value) in params.iter() {
                assert!(!key.is_empty(), "empty parameter name accepted");
                for s in [key, value] {
                    assert!(!s.contains('\0'));
                    body.put_slice(s.as_bytes());
                    body.put_u8(0);
                }
            }
            body.put_u8(0);
            out.put_u32(body.len() as u32 + 4);
            out.put_slice(&body);
            if *minor == 0 {
                // Our own builder writes the same bytes for protocol 3.0.
                let pairs: Vec<(&str, &str)> = params.iter().collect();
                let mut built = BytesMut::new();
                build::startup_message(&mut built, &pairs).expect("no NUL in accepted params");
                assert_eq!(built, out);
            }
        }
        StartupPacket::V2 => {
            assert_eq!(u16::from_be_bytes([original[4], original[5]]), 2);
            out.put_slice(original);
        }
    }
    out.to_vec()
}

fn code_only(out: &mut BytesMut, code: u32) {
    out.put_u32(8);
    out.put_u32(code);
}

fn check_options(s: &str) {
    let Ok(options) = parse_options(s) else {
        return;
    };
    let mut written = String::new();
    for (key, value) in &options {
        assert!(!key.is_empty(), "empty option name accepted");
        assert!(
            !key.contains('-') && !key.contains('='),
            "bad option name {key:?}"
        );
        written.push_str("--");
        escape(&mut written, key);
        written.push('=');
        escape(&mut written, value);
        written.push(' ');
    }
    assert_eq!(
        parse_options(&written).as_ref(),
        Ok(&options),
        "options roundtrip"
    );
}

/// Backslash-escapes what libpq's `options` splitting would otherwise interpret.
fn escape(out: &mut String, s: &str) {
    for c in s.chars() {
        if matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0b' | '\x0c' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
}
