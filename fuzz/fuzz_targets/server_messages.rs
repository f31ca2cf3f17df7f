//! Fuzz target for the message bodies the pooler decodes at login, from servers (ErrorResponse /
//! NoticeResponse fields, ParameterStatus, BackendKeyData, authentication requests) and from
//! clients (PasswordMessage, SASLInitialResponse): the decoders of `proto::build`.
//!
//! Input layout: the whole input is one message body (header already stripped), given to every
//! decoder.
//!
//! Invariants checked (roundtrip): whatever a decoder accepts, our builder for that message
//! writes back as exactly the same body, and `read_frame` splits the built message into that
//! body again. Where the decoder is lossy (non-UTF-8 error field values), decoding what was built
//! gives the same fields.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use ollyscale_pooler::proto::build::{
    self, parse_auth_request, parse_backend_key_data, parse_error_fields, parse_parameter_status,
    parse_password_message, parse_sasl_initial_response, AuthRequest,
};
use ollyscale_pooler::proto::read_frame;

/// Known `R` codes, which must never come back as `AuthRequest::Other`.
const KNOWN_AUTH_CODES: [u32; 6] = [0, 3, 5, 10, 11, 12];

fuzz_target!(|body: &[u8]| {
    error_fields(body);
    parameter_status(body);
    backend_key_data(body);
    auth_request(body);
    password_message(body);
    sasl_initial_response(body);
});

/// Splits the one message `build` wrote and checks its tag; returns the body.
fn built(tag: u8, build: impl FnOnce(&mut BytesMut)) -> Vec<u8> {
    let mut buf = BytesMut::new();
    build(&mut buf);
    let frame = read_frame(&mut buf, u32::MAX)
        .expect("our builder writes a valid header")
        .expect("our builder writes a whole message");
    assert!(buf.is_empty(), "the builder wrote more than one message");
    assert_eq!(frame.tag, tag);
    frame.body.to_vec()
}

fn error_fields(body: &[u8]) {
    let Ok(fields) = parse_error_fields(body) else {
        return;
    };
    // The named fields are the first of their kind in `all`.
    let get = |kind: u8| {
        fields
            .all
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, v)| v.clone())
    };
    assert!(fields.all.iter().all(|(k, v)| *k != 0 && !v.contains('\0')));
    let severity = get(b'V').or_else(|| get(b'S')).unwrap_or_default();
    assert_eq!(fields.severity, severity);
    assert_eq!(fields.code, get(b'C').unwrap_or_default());
    assert_eq!(fields.message, get(b'M').unwrap_or_default());
    assert_eq!(fields.detail, get(b'D'));
    assert_eq!(fields.hint, get(b'H'));
    let all: Vec<(u8, &str)> = fields.all.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let again = built(b'E', |buf| build::error_response_fields(buf, &all));
    // Values are decoded lossily; without a replacement character, nothing was lost.
    if !fields.all.iter().any(|(_, v)| v.contains('\u{fffd}')) {
        assert_eq!(again, body, "ErrorResponse roundtrip");
    }
    assert_eq!(parse_error_fields(&again).as_ref(), Ok(&fields));
}

fn parameter_status(body: &[u8]) {
    let Ok((name, value)) = parse_parameter_status(body) else {
        return;
    };
    let again = built(b'S', |buf| build::parameter_status(buf, name, value));
    assert_eq!(again, body, "ParameterStatus roundtrip");
}

fn backend_key_data(body: &[u8]) {
    let result = parse_backend_key_data(body);
    assert_eq!(result.is_ok(), body.len() == 8);
    let Ok((pid, key)) = result else {
        return;
    };
    let again = built(b'K', |buf| build::backend_key_data(buf, pid, key));
    assert_eq!(again, body, "BackendKeyData roundtrip");
}

fn auth_request(body: &[u8]) {
    let Ok(request) = parse_auth_request(body) else {
        return;
    };
    if let AuthRequest::Other(code) = request {
        // Unsupported methods (GSS, SSPI...) are not re-encoded: their code leads the body.
        assert!(
            !KNOWN_AUTH_CODES.contains(&code),
            "known code {code} reported as Other"
        );
        assert_eq!(&body[..4], &code.to_be_bytes());
        return;
    }
    let again = built(b'R', |buf| match &request {
        AuthRequest::Ok => build::auth_ok(buf),
        AuthRequest::Cleartext => build::auth_cleartext(buf),
        AuthRequest::Md5 { salt } => build::auth_md5(buf, *salt),
        AuthRequest::Sasl { mechanisms } => {
            assert!(mechanisms
                .iter()
                .all(|m| !m.is_empty() && !m.contains('\0')));
            build::auth_sasl(buf, mechanisms)
        }
        AuthRequest::SaslContinue(data) => build::auth_sasl_continue(buf, data),
        AuthRequest::SaslFinal(data) => build::auth_sasl_final(buf, data),
        AuthRequest::Other(_) => unreachable!("handled above"),
    });
    assert_eq!(again, body, "authentication request roundtrip");
}

fn password_message(body: &[u8]) {
    let Ok(password) = parse_password_message(body) else {
        return;
    };
    let again = built(b'p', |buf| {
        build::password_message(buf, password).expect("an accepted password has no NUL")
    });
    assert_eq!(again, body, "PasswordMessage roundtrip");
}

fn sasl_initial_response(body: &[u8]) {
    let Ok((mechanism, data)) = parse_sasl_initial_response(body) else {
        return;
    };
    match data {
        Some(data) => {
            let again = built(b'p', |buf| {
                build::sasl_initial_response(buf, mechanism, data)
                    .expect("an accepted mechanism has no NUL")
            });
            assert_eq!(again, body, "SASLInitialResponse roundtrip");
        }
        None => {
            // Length -1, no data: our builder never writes that form, so check the layout.
            let mut expected = mechanism.as_bytes().to_vec();
            expected.push(0);
            expected.extend_from_slice(&(-1i32).to_be_bytes());
            assert_eq!(expected, body, "SASLInitialResponse without data");
        }
    }
}
