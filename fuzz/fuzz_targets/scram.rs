//! Fuzz target for SCRAM-SHA-256 (`auth::scram`): the stored-secret parser and both sides of
//! the exchange, which read what a client (server side) or a server (client side) sends.
//!
//! Input layout: byte 0 picks the mode, the rest is split at the first NUL byte into two
//! messages. In a message, `@N` is replaced by the nonce negotiated so far, so the fuzzer can
//! get past the nonce checks (it cannot guess a random nonce) into the proof/signature checks.
//!
//! Invariants checked:
//! - `ScramSecret::parse`: what it accepts has iterations > 0 and a non-empty salt, and prints
//!   (`Display`) to a string that parses to the same secret.
//! - arbitrary bytes never authenticate: `ScramServer::client_final` never accepts a proof and
//!   `ScramClient::server_final` never accepts a signature that did not come from the secret.
//! - after an error the exchange is over: the next step is refused as `Malformed`.
//! - what each side sends has the RFC 5802 shape and carries the negotiated nonce.
//! - roundtrip: for any password and salt, our client logs in to our server holding the secret
//!   derived from that password, and the ClientKey recovered by the server logs in again
//!   (pass-through).
#![no_main]

use libfuzzer_sys::fuzz_target;
use ollyscale_pooler::auth::scram::{
    ScramClient, ScramCredential, ScramError, ScramSecret, ScramServer,
};

/// A fixed verifier: postgres-protocol's vector for the password "secret" (salt 1..=16, 4096
/// iterations), as in the crate's unit tests. The server never runs PBKDF2; the client side is
/// only given the password "pencil" or made-up keys, so no exchange with the fuzzer can succeed.
const SECRET: &str = "SCRAM-SHA-256$4096:AQIDBAUGBwgJCgsMDQ4PEA==$\
                      8rrDg00OqaiWXJ7p+sCgHEIaBSHY89ZJl3mfIsf32oY=:\
                      05L1f+yZbiN8O0AnO40Og85NNRhvzTS57naKRWCcsIA=";

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let (first, second) = match rest.iter().position(|&b| b == 0) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };
    match mode % 4 {
        0 => secret_parse(&String::from_utf8_lossy(rest)),
        1 => server_side(first, second),
        2 => client_side(first, second, mode & 0x80 != 0),
        _ => exchange(first, second, 1 + u32::from(mode >> 2) % 4),
    }
});

fn secret() -> ScramSecret {
    ScramSecret::parse(SECRET).expect("the fixed secret parses")
}

fn splice(msg: &[u8], nonce: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(msg.len() + nonce.len());
    let mut rest = msg;
    while let Some(i) = rest.windows(2).position(|w| w == b"@N") {
        out.extend_from_slice(&rest[..i]);
        out.extend_from_slice(nonce.as_bytes());
        rest = &rest[i + 2..];
    }
    out.extend_from_slice(rest);
    out
}

fn is_malformed<T>(r: Result<T, ScramError>) -> bool {
    matches!(r, Err(ScramError::Malformed(_)))
}

fn secret_parse(s: &str) {
    let Some(secret) = ScramSecret::parse(s) else {
        return;
    };
    assert!(secret.iterations > 0);
    assert!(!secret.salt.is_empty());
    let printed = secret.to_string();
    assert_eq!(
        ScramSecret::parse(&printed).as_ref(),
        Some(&secret),
        "secret roundtrip"
    );
}

/// We are the server; the fuzzer is the client.
fn server_side(client_first: &[u8], client_final: &[u8]) {
    let secret = secret();
    let mut server = ScramServer::new(secret.clone());
    let server_first = match server.client_first(client_first) {
        Ok(out) => out,
        Err(_) => {
            assert!(
                is_malformed(server.client_final(client_final)),
                "exchange went on"
            );
            return;
        }
    };
    let server_first = String::from_utf8(server_first).expect("we send UTF-8");
    let (nonce, tail) = server_first
        .strip_prefix("r=")
        .and_then(|s| s.split_once(','))
        .expect("server-first starts with r=<nonce>,");
    assert!(nonce
        .bytes()
        .all(|b| (0x21..=0x7e).contains(&b) && b != b','));
    let expected_tail = format!("s={},i={}", base64_of(&secret.salt), secret.iterations);
    assert_eq!(tail, expected_tail);
    // The client nonce the fuzzer sent is the prefix of the combined nonce.
    let sent = std::str::from_utf8(client_first).expect("accepted input is UTF-8");
    let client_nonce = sent
        .split(',')
        .find_map(|a| a.strip_prefix("r="))
        .expect("accepted client-first has r=");
    assert!(nonce.starts_with(client_nonce) && nonce.len() > client_nonce.len());

    let result = server.client_final(&splice(client_final, nonce));
    assert!(result.is_err(), "a forged proof was accepted");
    assert!(
        is_malformed(server.client_final(b"")),
        "a finished exchange went on"
    );
    assert!(
        is_malformed(server.client_first(b"n,,n=,r=x")),
        "a finished exchange restarted"
    );
}

/// We are the client logging in to a server; the fuzzer is the server.
fn client_side(server_first: &[u8], server_final: &[u8], with_password: bool) {
    let secret = secret();
    let cred = if with_password {
        ScramCredential::Password("pencil".to_owned())
    } else {
        // Not the real ClientKey: the fuzzer cannot tell, and it never gets to check a proof.
        ScramCredential::Keys {
            client_key: [7; 32],
            server_key: secret.server_key,
        }
    };
    let mut client = ScramClient::new(cred);
    let first = String::from_utf8(client.client_first()).expect("we send UTF-8");
    assert_eq!(
        client.client_first(),
        first.as_bytes(),
        "client-first changed"
    );
    let nonce = first
        .strip_prefix("n,,n=,r=")
        .expect("client-first is n,,n=,r=<nonce>")
        .to_owned();
    let server_first = splice(server_first, &nonce);
    let client_final = match client.server_first(&server_first) {
        Ok(out) => out,
        Err(_) => {
            assert!(
                is_malformed(client.server_final(server_final)),
                "exchange went on"
            );
            return;
        }
    };
    let client_final = String::from_utf8(client_final).expect("we send UTF-8");
    let server_nonce = std::str::from_utf8(&server_first)
        .expect("accepted input is UTF-8")
        .split(',')
        .find_map(|a| a.strip_prefix("r="))
        .expect("accepted server-first has r=");
    assert!(server_nonce.starts_with(&nonce) && server_nonce.len() > nonce.len());
    let (without_proof, proof) = client_final.rsplit_once(",p=").expect("a proof is sent");
    assert_eq!(without_proof, format!("c=biws,r={server_nonce}"));
    assert_eq!(proof.len(), 44);

    let result = client.server_final(&splice(server_final, server_nonce));
    assert!(
        result.is_err(),
        "a server signature that did not come from the secret was accepted"
    );
    assert!(
        is_malformed(client.server_final(b"")),
        "a finished exchange went on"
    );
}

/// Our client against our server, with a password and salt from the fuzzer.
fn exchange(password: &[u8], salt: &[u8], iterations: u32) {
    let password = String::from_utf8_lossy(password).into_owned();
    let salt = if salt.is_empty() { &b"salt"[..] } else { salt };
    let secret = ScramSecret::from_password(&password, salt, iterations);
    assert_eq!(
        ScramSecret::parse(&secret.to_string()).as_ref(),
        Some(&secret)
    );

    let client_key = run(&secret, ScramCredential::Password(password));
    // Pass-through: the recovered ClientKey and the stored ServerKey log in again.
    let again = run(
        &secret,
        ScramCredential::Keys {
            client_key,
            server_key: secret.server_key,
        },
    );
    assert_eq!(
        again, client_key,
        "pass-through recovered another ClientKey"
    );
}

/// One whole exchange that must succeed; returns the ClientKey the server recovered.
fn run(secret: &ScramSecret, cred: ScramCredential) -> [u8; 32] {
    let mut server = ScramServer::new(secret.clone());
    let mut client = ScramClient::new(cred);
    let server_first = server
        .client_first(&client.client_first())
        .expect("server accepts our client-first");
    let client_final = client
        .server_first(&server_first)
        .expect("client accepts our server-first");
    let (server_final, client_key) = server
        .client_final(&client_final)
        .expect("server accepts the proof of the right password");
    client
        .server_final(&server_final)
        .expect("client accepts the signature of the right secret");
    client_key
}

fn base64_of(bytes: &[u8]) -> String {
    // The salt as the server sends it: standard alphabet with padding. Derived through the
    // crate's own Display of a secret, so the target needs no base64 dependency.
    let probe = ScramSecret {
        iterations: 1,
        salt: bytes.to_vec(),
        stored_key: [0; 32],
        server_key: [0; 32],
    };
    let printed = probe.to_string();
    let (_, rest) = printed
        .split_once(':')
        .expect("Display has iterations:salt");
    rest.split_once('$')
        .expect("Display has salt$keys")
        .0
        .to_owned()
}
