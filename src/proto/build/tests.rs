//! Tests for message builders and body decoders: roundtrips through our own decoders and
//! through postgres-protocol's backend parser, exact bytes, and garbage input.

use super::*;
use bytes::Buf;
use postgres_protocol::message::backend::Message;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Splits one tagged message off `buf`, checking the length field matches.
fn take(buf: &mut BytesMut) -> (u8, BytesMut) {
    let tag = buf.get_u8();
    let len = buf.get_u32() as usize;
    assert!(len >= 4 && buf.len() >= len - 4, "bad length {len}");
    (tag, buf.split_to(len - 4))
}

/// Builds one message and returns its tag and body; the buffer must hold nothing else.
fn built(f: impl FnOnce(&mut BytesMut)) -> (u8, BytesMut) {
    let mut buf = BytesMut::new();
    f(&mut buf);
    let msg = take(&mut buf);
    assert!(buf.is_empty());
    msg
}

/// Parses with postgres-protocol; the whole buffer must be exactly one message.
fn pp_parse(f: impl FnOnce(&mut BytesMut)) -> Message {
    let mut buf = BytesMut::new();
    f(&mut buf);
    let msg = Message::parse(&mut buf).unwrap().expect("complete message");
    assert!(buf.is_empty());
    msg
}

#[test]
fn error_response_roundtrip() {
    let (tag, body) = built(|b| error_response(b, Severity::Fatal, "08P01", "bad \u{e9}"));
    assert_eq!(tag, b'E');
    let f = parse_error_fields(&body).unwrap();
    assert_eq!(f.severity, "FATAL");
    assert_eq!(f.code, "08P01");
    assert_eq!(f.message, "bad \u{e9}");
    assert_eq!(f.detail, None);
    assert_eq!(f.hint, None);
    let kinds: Vec<u8> = f.all.iter().map(|(k, _)| *k).collect();
    assert_eq!(kinds, b"SVCM");
    assert!(matches!(
        pp_parse(|b| error_response(b, Severity::Error, "42000", "x")),
        Message::ErrorResponse(_)
    ));
    // Exact bytes for a tiny message.
    let mut buf = BytesMut::new();
    error_response(&mut buf, Severity::Error, "X", "m");
    assert_eq!(&buf[..], b"E\0\0\0\x19SERROR\0VERROR\0CX\0Mm\0\0");
}

#[test]
fn error_fields_forwarding_roundtrip() {
    let fields: &[(u8, &str)] = &[
        (b'S', "ERREUR"),
        (b'V', "ERROR"),
        (b'C', "23505"),
        (b'M', "duplicate key"),
        (b'D', "Key (id)=(1) exists."),
        (b'H', "try another"),
        (b'n', "pkey"),
        (0, "skipped"),
    ];
    let (tag, body) = built(|b| error_response_fields(b, fields));
    assert_eq!(tag, b'E');
    let f = parse_error_fields(&body).unwrap();
    assert_eq!(f.severity, "ERROR"); // V wins over the localized S
    assert_eq!(f.code, "23505");
    assert_eq!(f.detail.as_deref(), Some("Key (id)=(1) exists."));
    assert_eq!(f.hint.as_deref(), Some("try another"));
    assert_eq!(f.all.len(), 7);
    // Forward what we parsed: byte-identical.
    let again: Vec<(u8, &str)> = f.all.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (_, body2) = built(|b| error_response_fields(b, &again));
    assert_eq!(body, body2);
}

#[test]
fn notice_response_roundtrip() {
    let (tag, body) = built(|b| notice_response(b, "01000", "careful", Some("details")));
    assert_eq!(tag, b'N');
    let f = parse_error_fields(&body).unwrap();
    assert_eq!(
        (f.severity.as_str(), f.code.as_str(), f.message.as_str()),
        ("NOTICE", "01000", "careful")
    );
    assert_eq!(f.detail.as_deref(), Some("details"));
    let (_, body) = built(|b| notice_response(b, "01000", "m", None));
    assert_eq!(parse_error_fields(&body).unwrap().detail, None);
    assert!(matches!(
        pp_parse(|b| notice_response(b, "01000", "m", None)),
        Message::NoticeResponse(_)
    ));
}

#[test]
fn nul_in_text_cannot_break_framing() {
    let (_, body) = built(|b| error_response(b, Severity::Error, "XX000", "a\0b"));
    assert_eq!(parse_error_fields(&body).unwrap().message, "ab");
    let (_, body) = built(|b| parameter_status(b, "n\0", "v"));
    assert_eq!(parse_parameter_status(&body).unwrap(), ("n", "v"));
}

#[test]
fn parameter_status_roundtrip() {
    let (tag, body) = built(|b| parameter_status(b, "server_version", "16.2"));
    assert_eq!(tag, b'S');
    assert_eq!(
        parse_parameter_status(&body).unwrap(),
        ("server_version", "16.2")
    );
    let (_, body) = built(|b| parameter_status(b, "application_name", ""));
    assert_eq!(
        parse_parameter_status(&body).unwrap(),
        ("application_name", "")
    );
    match pp_parse(|b| parameter_status(b, "TimeZone", "UTC")) {
        Message::ParameterStatus(p) => {
            assert_eq!(p.name().unwrap(), "TimeZone");
            assert_eq!(p.value().unwrap(), "UTC");
        }
        _ => panic!("wrong message"),
    }
}

#[test]
fn backend_key_data_roundtrip() {
    let (tag, body) = built(|b| backend_key_data(b, 0xdead_beef, 7));
    assert_eq!(tag, b'K');
    assert_eq!(parse_backend_key_data(&body).unwrap(), (0xdead_beef, 7));
    match pp_parse(|b| backend_key_data(b, 42, u32::MAX)) {
        Message::BackendKeyData(k) => {
            assert_eq!(k.process_id(), 42);
            assert_eq!(k.secret_key() as u32, u32::MAX);
        }
        _ => panic!("wrong message"),
    }
    assert!(parse_backend_key_data(&[0; 7]).is_err());
    assert!(parse_backend_key_data(&[0; 36]).is_err()); // protocol 3.2 long key
}

#[test]
fn ready_for_query_roundtrip() {
    for status in [b'I', b'T', b'E'] {
        let mut buf = BytesMut::new();
        ready_for_query(&mut buf, status);
        assert_eq!(&buf[..], &[b'Z', 0, 0, 0, 5, status]);
        match pp_parse(|b| ready_for_query(b, status)) {
            Message::ReadyForQuery(r) => assert_eq!(r.status(), status),
            _ => panic!("wrong message"),
        }
    }
}

#[test]
fn auth_requests_roundtrip() {
    let (tag, body) = built(auth_ok);
    assert_eq!(tag, b'R');
    assert_eq!(parse_auth_request(&body).unwrap(), AuthRequest::Ok);
    assert!(matches!(pp_parse(auth_ok), Message::AuthenticationOk));

    let (_, body) = built(auth_cleartext);
    assert_eq!(parse_auth_request(&body).unwrap(), AuthRequest::Cleartext);
    assert!(matches!(
        pp_parse(auth_cleartext),
        Message::AuthenticationCleartextPassword
    ));

    let salt = [1, 2, 0, 255];
    let (_, body) = built(|b| auth_md5(b, salt));
    assert_eq!(
        parse_auth_request(&body).unwrap(),
        AuthRequest::Md5 { salt }
    );
    match pp_parse(|b| auth_md5(b, salt)) {
        Message::AuthenticationMd5Password(m) => assert_eq!(m.salt(), salt),
        _ => panic!("wrong message"),
    }

    let mechs = ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"];
    let (_, body) = built(|b| auth_sasl(b, &mechs));
    assert_eq!(
        parse_auth_request(&body).unwrap(),
        AuthRequest::Sasl {
            mechanisms: mechs.to_vec()
        }
    );
    assert!(matches!(
        pp_parse(|b| auth_sasl(b, &mechs)),
        Message::AuthenticationSasl(_)
    ));
    let (_, body) = built(|b| auth_sasl(b, &[]));
    assert_eq!(
        parse_auth_request(&body).unwrap(),
        AuthRequest::Sasl { mechanisms: vec![] }
    );

    let (_, body) = built(|b| auth_sasl_continue(b, b"r=abc,s=c2FsdA==,i=4096"));
    assert_eq!(
        parse_auth_request(&body).unwrap(),
        AuthRequest::SaslContinue(b"r=abc,s=c2FsdA==,i=4096")
    );
    match pp_parse(|b| auth_sasl_continue(b, b"data")) {
        Message::AuthenticationSaslContinue(m) => assert_eq!(m.data(), b"data"),
        _ => panic!("wrong message"),
    }
    let (_, body) = built(|b| auth_sasl_final(b, b"v=xyz"));
    assert_eq!(
        parse_auth_request(&body).unwrap(),
        AuthRequest::SaslFinal(b"v=xyz")
    );
    match pp_parse(|b| auth_sasl_final(b, b"v=xyz")) {
        Message::AuthenticationSaslFinal(m) => assert_eq!(m.data(), b"v=xyz"),
        _ => panic!("wrong message"),
    }
    // GSS (7) and friends.
    assert_eq!(
        parse_auth_request(&7u32.to_be_bytes()).unwrap(),
        AuthRequest::Other(7)
    );
}

#[test]
fn auth_request_malformed() {
    let cases: &[&[u8]] = &[
        b"",
        b"\0\0\0",
        b"\0\0\0\0x",              // Ok with payload
        b"\0\0\0\x03x",            // Cleartext with payload
        b"\0\0\0\x05\x01\x02\x03", // short salt
        b"\0\0\0\x05\x01\x02\x03\x04\x05",
        b"\0\0\0\x0aSCRAM",    // unterminated list
        b"\0\0\0\x0aSCRAM\0",  // missing final empty name
        b"\0\0\0\x0a\0x",      // data after list
        b"\0\0\0\x0a\xff\0\0", // non-UTF-8 name
    ];
    for body in cases {
        assert!(parse_auth_request(body).is_err(), "{body:?}");
    }
}

/// Reads a RowDescription body back (postgres-protocol's field iterator needs a crate we
/// do not depend on, so this mirrors its layout checks).
fn read_row_description(mut body: &[u8]) -> Vec<(String, u32, u32, i16, i16, i32, i16)> {
    let n = body.get_u16();
    let mut out = Vec::new();
    for _ in 0..n {
        let (name, rest) = split_cstr(body).unwrap();
        let name = String::from_utf8(name.to_vec()).unwrap();
        body = rest;
        let table = body.get_u32();
        let attnum = body.get_i16();
        let oid = body.get_u32();
        let typlen = body.get_i16();
        let typmod = body.get_i32();
        let format = body.get_i16();
        assert_eq!(attnum, 0);
        out.push((name, table, oid, typlen, format, typmod, attnum));
    }
    assert!(body.is_empty());
    out
}

#[test]
fn row_description_layout() {
    let cols = [
        ("database", 25),
        ("cl_active", 23),
        ("total_xact_count", 20),
        ("ok", 16),
    ];
    let (tag, body) = built(|b| row_description(b, &cols));
    assert_eq!(tag, b'T');
    let fields = read_row_description(&body);
    let got: Vec<(&str, u32, i16)> = fields
        .iter()
        .map(|(n, _, oid, len, _, _, _)| (n.as_str(), *oid, *len))
        .collect();
    assert_eq!(
        got,
        [
            ("database", 25, -1),
            ("cl_active", 23, 4),
            ("total_xact_count", 20, 8),
            ("ok", 16, 1)
        ]
    );
    assert!(fields.iter().all(|f| f.1 == 0 && f.4 == 0 && f.5 == -1));
    assert!(matches!(
        pp_parse(|b| row_description(b, &cols)),
        Message::RowDescription(_)
    ));
}

#[test]
fn data_row_layout() {
    let values: [Option<&[u8]>; 4] = [Some(b"pgbouncer"), None, Some(b""), Some(b"12")];
    let (tag, body) = built(|b| data_row(b, &values));
    assert_eq!(tag, b'D');
    assert_eq!(
        &body[..],
        b"\0\x04\0\0\0\x09pgbouncer\xff\xff\xff\xff\0\0\0\0\0\0\0\x0212"
    );
    match pp_parse(|b| data_row(b, &values)) {
        // The body after the column count, as postgres-protocol sees it.
        Message::DataRow(r) => assert_eq!(r.buffer(), &body[2..]),
        _ => panic!("wrong message"),
    }
}

#[test]
fn command_complete_and_empty_query() {
    match pp_parse(|b| command_complete(b, "SELECT 3")) {
        Message::CommandComplete(c) => assert_eq!(c.tag().unwrap(), "SELECT 3"),
        _ => panic!("wrong message"),
    }
    assert!(matches!(
        pp_parse(empty_query_response),
        Message::EmptyQueryResponse
    ));
    let mut buf = BytesMut::new();
    empty_query_response(&mut buf);
    assert_eq!(&buf[..], b"I\0\0\0\x04");
}

#[test]
fn negotiate_protocol_version_layout() {
    let (tag, body) = built(|b| negotiate_protocol_version(b, 0x3_0000, &["_pq_.a", "_pq_.bb"]));
    assert_eq!(tag, b'v');
    assert_eq!(&body[..], b"\0\x03\0\0\0\0\0\x02_pq_.a\0_pq_.bb\0");
    let (_, body) = built(|b| negotiate_protocol_version(b, 2, &[]));
    assert_eq!(&body[..], b"\0\0\0\x02\0\0\0\0");
}

#[test]
fn frontend_wrappers_roundtrip() {
    let mut buf = BytesMut::new();
    startup_message(&mut buf, &[("user", "u"), ("database", "d")]).unwrap();
    assert_eq!(
        crate::proto::startup::parse_startup(&mut buf, 1024).unwrap(),
        Some(crate::proto::startup::StartupPacket::Startup {
            params: crate::proto::startup::RawParams::from_pairs([
                ("user", "u"),
                ("database", "d")
            ]),
            minor: 0
        })
    );

    let (tag, body) = built(|b| password_message(b, b"md5abc").unwrap());
    assert_eq!(tag, b'p');
    assert_eq!(parse_password_message(&body).unwrap(), b"md5abc");

    let (tag, body) = built(|b| sasl_initial_response(b, "SCRAM-SHA-256", b"n,,n=,r=x").unwrap());
    assert_eq!(tag, b'p');
    assert_eq!(
        parse_sasl_initial_response(&body).unwrap(),
        ("SCRAM-SHA-256", Some(&b"n,,n=,r=x"[..]))
    );
    let (_, body) = built(|b| sasl_initial_response(b, "M", b"").unwrap());
    assert_eq!(
        parse_sasl_initial_response(&body).unwrap(),
        ("M", Some(&b""[..]))
    );

    let (tag, body) = built(|b| sasl_response(b, b"c=biws").unwrap());
    assert_eq!((tag, &body[..]), (b'p', &b"c=biws"[..]));
    let (tag, body) = built(|b| query(b, "DISCARD ALL").unwrap());
    assert_eq!((tag, &body[..]), (b'Q', &b"DISCARD ALL\0"[..]));
    let (tag, body) = built(terminate);
    assert_eq!((tag, body.len()), (b'X', 0));

    let mut buf = BytesMut::new();
    cancel_request(&mut buf, u32::MAX, 5);
    assert_eq!(
        crate::proto::startup::parse_startup(&mut buf, 1024).unwrap(),
        Some(crate::proto::startup::StartupPacket::Cancel {
            pid: u32::MAX,
            key: 5
        })
    );
}

#[test]
fn frontend_wrappers_leave_buffer_intact_on_error() {
    let mut buf = BytesMut::from(&b"keep"[..]);
    assert!(startup_message(&mut buf, &[("user", "a\0b")]).is_err());
    assert!(password_message(&mut buf, b"a\0b").is_err());
    assert!(query(&mut buf, "select\0").is_err());
    assert!(sasl_initial_response(&mut buf, "M\0", b"").is_err());
    assert_eq!(&buf[..], b"keep");
}

#[test]
fn password_and_sasl_initial_malformed() {
    assert!(parse_password_message(b"").is_err());
    assert!(parse_password_message(b"abc").is_err());
    assert!(parse_password_message(b"a\0b\0").is_err());
    assert_eq!(parse_password_message(b"\0").unwrap(), b"");

    let none = b"SCRAM-SHA-256\0\xff\xff\xff\xff";
    assert_eq!(
        parse_sasl_initial_response(none).unwrap(),
        ("SCRAM-SHA-256", None)
    );
    let cases: &[&[u8]] = &[
        b"",
        b"SCRAM-SHA-256",
        b"SCRAM-SHA-256\0",
        b"SCRAM-SHA-256\0\0\0\0",
        b"SCRAM-SHA-256\0\0\0\0\x05abc",
        b"SCRAM-SHA-256\0\0\0\0\x01ab",
        b"SCRAM-SHA-256\0\xff\xff\xff\xffx",
        b"SCRAM-SHA-256\0\xff\xff\xff\xfe",
        b"SCRAM-SHA-256\0\x7f\xff\xff\xff",
        b"\xff\0\0\0\0\0",
    ];
    for body in cases {
        assert!(parse_sasl_initial_response(body).is_err(), "{body:?}");
    }
}

#[test]
fn error_and_status_malformed() {
    for body in [&b""[..], b"Mx", b"Mx\0", b"Mx\0\0junk", b"M"] {
        assert!(parse_error_fields(body).is_err(), "{body:?}");
    }
    // Non-UTF-8 error text is kept, lossily.
    let f = parse_error_fields(b"M\xff\0\0").unwrap();
    assert_eq!(f.message, "\u{fffd}");
    assert_eq!(parse_error_fields(b"\0").unwrap().severity, "");
    for body in [&b""[..], b"a", b"a\0", b"a\0b", b"a\0b\0c", b"\xff\0b\0"] {
        assert!(parse_parameter_status(body).is_err(), "{body:?}");
    }
}

#[test]
fn decoders_never_panic() {
    let mut rng = StdRng::seed_from_u64(0xb0d7);
    let mut seeds: Vec<Vec<u8>> = Vec::new();
    for f in [
        (|b: &mut BytesMut| error_response(b, Severity::Error, "XX000", "m")) as fn(&mut BytesMut),
        |b| parameter_status(b, "a", "b"),
        |b| backend_key_data(b, 1, 2),
        |b| auth_sasl(b, &["SCRAM-SHA-256"]),
        |b| auth_md5(b, [1, 2, 3, 4]),
        |b| password_message(b, b"pw").unwrap(),
        |b| sasl_initial_response(b, "SCRAM-SHA-256", b"n,,n=,r=x").unwrap(),
    ] {
        let (_, body) = built(f);
        seeds.push(body.to_vec());
    }
    for round in 0..20_000 {
        let mut input = if round % 3 == 0 {
            let len = rng.gen_range(0..24);
            (0..len).map(|_| rng.gen()).collect()
        } else {
            seeds[rng.gen_range(0..seeds.len())].clone()
        };
        for _ in 0..rng.gen_range(0..3) {
            if !input.is_empty() {
                let i = rng.gen_range(0..input.len());
                input[i] = rng.gen();
            }
        }
        let cut = rng.gen_range(0..=input.len());
        let input = &input[..cut];
        let _ = parse_error_fields(input);
        let _ = parse_parameter_status(input);
        let _ = parse_backend_key_data(input);
        let _ = parse_auth_request(input);
        let _ = parse_password_message(input);
        let _ = parse_sasl_initial_response(input);
    }
}
