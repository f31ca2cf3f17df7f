//! Tests for SCRAM-SHA-256: published vectors, full exchanges in both directions,
//! pass-through, interop with postgres-protocol's client, and malformed input.

use super::*;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const RFC_CLIENT_NONCE: &str = "rOprNGfwEbeRWgbNEkqO";
const RFC_SERVER_NONCE: &str = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
const RFC_SERVER_FIRST: &str =
    "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
const RFC_CLIENT_FINAL: &str = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                                p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
const RFC_SERVER_FINAL: &str = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";

fn rfc_secret() -> ScramSecret {
    let salt = STANDARD.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
    ScramSecret::from_password("pencil", &salt, 4096)
}

/// Runs a whole exchange; returns the ClientKey the server recovered.
fn exchange(client: &mut ScramClient, server: &mut ScramServer) -> Result<[u8; 32], ScramError> {
    let first = client.client_first();
    let server_first = server.client_first(&first)?;
    let client_final = client.server_first(&server_first)?;
    let (server_final, client_key) = server.client_final(&client_final)?;
    client.server_final(&server_final)?;
    Ok(client_key)
}

fn password(p: &str) -> ScramCredential {
    ScramCredential::Password(p.to_owned())
}

#[test]
fn rfc7677_client_vector() {
    let mut client = ScramClient::with_nonce(password("pencil"), "user", RFC_CLIENT_NONCE);
    assert_eq!(client.client_first(), b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
    let client_final = client.server_first(RFC_SERVER_FIRST.as_bytes()).unwrap();
    assert_eq!(String::from_utf8(client_final).unwrap(), RFC_CLIENT_FINAL);
    client.server_final(RFC_SERVER_FINAL.as_bytes()).unwrap();
}

#[test]
fn rfc7677_server_vector() {
    let mut server = ScramServer::with_nonce(rfc_secret(), RFC_SERVER_NONCE);
    let server_first = server
        .client_first(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO")
        .unwrap();
    assert_eq!(String::from_utf8(server_first).unwrap(), RFC_SERVER_FIRST);
    let (server_final, _) = server.client_final(RFC_CLIENT_FINAL.as_bytes()).unwrap();
    assert_eq!(String::from_utf8(server_final).unwrap(), RFC_SERVER_FINAL);
}

#[test]
fn rfc7677_client_rejects_forged_server_signature() {
    let mut client = ScramClient::with_nonce(password("pencil"), "user", RFC_CLIENT_NONCE);
    client.client_first();
    client.server_first(RFC_SERVER_FIRST.as_bytes()).unwrap();
    let forged = "v=7rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";
    assert_eq!(
        client.server_final(forged.as_bytes()),
        Err(ScramError::ServerSignature)
    );
}

#[test]
fn full_exchange_with_password() {
    let secret = ScramSecret::from_password("s3cr3t", b"0123456789abcdef", 4096);
    let mut client = ScramClient::new(password("s3cr3t"));
    let first = String::from_utf8(client.client_first()).unwrap();
    let nonce = first.strip_prefix("n,,n=,r=").unwrap();
    assert_eq!(nonce.len(), 24);
    let mut server = ScramServer::new(secret.clone());
    // client_first is idempotent: `exchange` calls it again and gets the same message.
    let client_key = exchange(&mut client, &mut server).unwrap();
    assert_eq!(sha256(&client_key), secret.stored_key);
}

#[test]
fn wrong_password_is_bad_proof() {
    let secret = ScramSecret::from_password("right", b"salt", 4096);
    let mut client = ScramClient::new(password("wrong"));
    let mut server = ScramServer::new(secret);
    assert_eq!(
        exchange(&mut client, &mut server),
        Err(ScramError::BadProof)
    );
    // The exchange is over: nothing more is accepted.
    assert!(matches!(
        server.client_final(b"c=biws,r=x,p=x"),
        Err(ScramError::Malformed(_))
    ));
}

#[test]
fn keys_pass_through() {
    let secret = ScramSecret::from_password("pass-through", b"saltsalt", 4096);
    // A client proves itself to us...
    let mut client = ScramClient::new(password("pass-through"));
    let mut front = ScramServer::new(secret.clone());
    let client_key = exchange(&mut client, &mut front).unwrap();
    // ...and we reuse its ClientKey to log in to a server storing the same secret.
    let keys = ScramCredential::Keys {
        client_key,
        server_key: secret.server_key,
    };
    let mut pooler = ScramClient::new(keys.clone());
    let mut backend = ScramServer::new(secret.clone());
    assert_eq!(exchange(&mut pooler, &mut backend).unwrap(), client_key);

    // A server with another secret for the same password (other salt) refuses the keys.
    let other = ScramSecret::from_password("pass-through", b"other salt", 4096);
    let mut pooler = ScramClient::new(keys);
    let mut backend = ScramServer::new(other);
    assert_eq!(
        exchange(&mut pooler, &mut backend),
        Err(ScramError::BadProof)
    );
}

#[test]
fn keys_with_wrong_server_key_reject_server() {
    let secret = ScramSecret::from_password("pw", b"salt", 16);
    let (client_key, _) = keys_from_salted(&hi(b"pw", b"salt", 16));
    let mut pooler = ScramClient::new(ScramCredential::Keys {
        client_key,
        server_key: [7; 32],
    });
    let mut backend = ScramServer::new(secret);
    assert_eq!(
        exchange(&mut pooler, &mut backend),
        Err(ScramError::ServerSignature)
    );
}

#[test]
fn postgres_protocol_client_logs_in_to_our_server() {
    for gs2 in [ChannelBinding::unsupported(), ChannelBinding::unrequested()] {
        let mut pp = ScramSha256::new(b"pencil", gs2);
        let mut server = ScramServer::new(rfc_secret());
        let server_first = server.client_first(pp.message()).unwrap();
        pp.update(&server_first).unwrap();
        let (server_final, _) = server.client_final(pp.message()).unwrap();
        pp.finish(&server_final).unwrap();
    }
}

#[test]
fn secret_known_vectors() {
    // postgres-protocol's own vector (password "secret", salt 1..=16).
    let pp = "SCRAM-SHA-256$4096:AQIDBAUGBwgJCgsMDQ4PEA==$8rrDg00OqaiWXJ7p+sCgHEIaBSHY89ZJl3mfIsf32oY=:05L1f+yZbiN8O0AnO40Og85NNRhvzTS57naKRWCcsIA=";
    let salt: Vec<u8> = (1..=16).collect();
    let ours = ScramSecret::from_password("secret", &salt, 4096);
    assert_eq!(ours.to_string(), pp);
    assert_eq!(ScramSecret::parse(pp), Some(ours));
    // "foobar", salt 0..16, computed independently with Python's hashlib.pbkdf2_hmac.
    let foobar = "SCRAM-SHA-256$4096:AAECAwQFBgcICQoLDA0ODw==$GVtA56Y/lI7cWaw+uvT029t5aIIH9Yjaj0lWHY4kSCk=:ReztaHy2G2wk1v0TdtyzDIj82oO8wMQkIOONam3o6Zg=";
    let salt: Vec<u8> = (0..16).collect();
    let ours = ScramSecret::from_password("foobar", &salt, 4096);
    assert_eq!(ours.to_string(), foobar);
    assert_eq!(ScramSecret::parse(foobar).unwrap(), ours);
}

#[test]
fn secret_parse_roundtrip_and_generated() {
    let s = ScramSecret::from_password("x", b"\x00\xff salt", 7);
    assert_eq!(ScramSecret::parse(&s.to_string()), Some(s.clone()));
    let generated = postgres_protocol::password::scram_sha_256(b"hunter2");
    let parsed = ScramSecret::parse(&generated).unwrap();
    assert_eq!(parsed.to_string(), generated);
    assert_eq!(
        ScramSecret::from_password("hunter2", &parsed.salt, parsed.iterations),
        parsed
    );
    // Debug never shows key material.
    let dbg = format!("{s:?}");
    assert!(!dbg.contains(&STANDARD.encode(s.stored_key)));
}

#[test]
fn secret_parse_rejects_garbage() {
    let good = ScramSecret::from_password("x", b"salt", 4096).to_string();
    assert!(ScramSecret::parse(&good).is_some());
    let bad = [
        "",
        "md545f2603610af569b6155c45067268c6b",
        "1234",
        "SCRAM-SHA-256$",
        "SCRAM-SHA-256$4096:c2FsdA==",
        "SCRAM-SHA-256$0:c2FsdA==$AAAA:AAAA",
        "SCRAM-SHA-256$-1:c2FsdA==$AAAA:AAAA",
        "SCRAM-SHA-256$+4:c2FsdA==$AAAA:AAAA",
        "SCRAM-SHA-256$99999999999:c2FsdA==$AAAA:AAAA",
        "SCRAM-SHA-256$4096:$GVtA56Y/lI7cWaw+uvT029t5aIIH9Yjaj0lWHY4kSCk=:ReztaHy2G2wk1v0TdtyzDIj82oO8wMQkIOONam3o6Zg=",
        "SCRAM-SHA-256$4096:!!!!$GVtA56Y/lI7cWaw+uvT029t5aIIH9Yjaj0lWHY4kSCk=:ReztaHy2G2wk1v0TdtyzDIj82oO8wMQkIOONam3o6Zg=",
        "SCRAM-SHA-256$4096:c2FsdA==$GVtA56Y/lI7cWaw+uvT029t5aIIH9Yjaj0lWHY4kSC=:ReztaHy2G2wk1v0TdtyzDIj82oO8wMQkIOONam3o6Zg=",
        "SCRAM-SHA-256$4096:c2FsdA==$GVtA56Y/lI7cWaw+uvT029t5aIIH9Yjaj0lWHY4kSCk=:ReztaHy2G2wk1v0TdtyzDIj82oO8wMQkIOONam3o6Zg",
        "SCRAM-SHA-256$4096:c2FsdA==$GVtA56Y/lI7cWaw+uvT029t5aIIH9Yjaj0lWHY4kSCk=",
    ];
    for s in bad {
        assert_eq!(ScramSecret::parse(s), None, "{s}");
    }
    assert_eq!(ScramSecret::parse(&format!("{good}x")), None);
    assert_eq!(ScramSecret::parse(&format!("x{good}")), None);
}

#[test]
fn server_rejects_bad_client_first() {
    let cases: &[(&[u8], ScramError)] = &[
        (
            b"p=tls-server-end-point,,n=,r=abc",
            ScramError::ChannelBindingUnsupported,
        ),
        (b"", ScramError::Malformed("invalid GS2 header")),
        (b"x,,n=,r=abc", ScramError::Malformed("invalid GS2 header")),
        (b"n,n=,r=abc", ScramError::Malformed("invalid GS2 header")),
        (
            b"n,a=admin,n=,r=abc",
            ScramError::Malformed("authorization identity is not supported"),
        ),
        (
            b"n,,m=ext,n=,r=abc",
            ScramError::Malformed("mandatory SCRAM extensions are not supported"),
        ),
        (
            b"n,,r=abc",
            ScramError::Malformed("expected username attribute"),
        ),
        (b"n,,n=", ScramError::Malformed("expected client nonce")),
        (b"n,,n=,r=", ScramError::Malformed("expected client nonce")),
        (
            b"n,,n=,r=a b",
            ScramError::Malformed("expected client nonce"),
        ),
        (
            b"n,,n=,r=\xff",
            ScramError::Malformed("message is not UTF-8"),
        ),
    ];
    for (input, want) in cases {
        let mut server = ScramServer::new(rfc_secret());
        assert_eq!(server.client_first(input).as_ref(), Err(want), "{input:?}");
    }
    // Extensions after the nonce are tolerated; the username is ignored.
    let mut server = ScramServer::new(rfc_secret());
    assert!(server.client_first(b"y,,n=whoever,r=abc,x=ext").is_ok());
    // Only one client-first per exchange.
    assert!(server.client_first(b"n,,n=,r=abc").is_err());
}

#[test]
fn server_rejects_bad_client_final() {
    let start = || {
        let mut server = ScramServer::with_nonce(rfc_secret(), RFC_SERVER_NONCE);
        server
            .client_first(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO")
            .unwrap();
        server
    };
    let nonce = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
    let proof = "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    let cases: Vec<(String, ScramError)> = vec![
        (
            format!("c=biws,r={nonce}"),
            ScramError::Malformed("expected client proof"),
        ),
        (
            format!("c=biws,r={nonce},p=AAAA"),
            ScramError::Malformed("invalid client proof"),
        ),
        (
            format!("c=biws,r={nonce},p={proof},x=1"),
            ScramError::Malformed("invalid client proof"),
        ),
        (
            format!("r={nonce},p={proof}"),
            ScramError::Malformed("expected channel binding attribute"),
        ),
        (
            format!("c=eSws,r={nonce},p={proof}"), // "y,," but the client sent "n,,"
            ScramError::Malformed("channel binding data does not match the GS2 header"),
        ),
        (
            format!("c=!!,r={nonce},p={proof}"),
            ScramError::Malformed("invalid channel binding data"),
        ),
        (
            format!("c=biws,p={proof}"),
            ScramError::Malformed("expected nonce"),
        ),
        (
            format!("c=biws,r={RFC_CLIENT_NONCE},p={proof}"),
            ScramError::NonceMismatch,
        ),
        (
            format!("c=biws,r={nonce},p=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="),
            ScramError::BadProof,
        ),
    ];
    for (input, want) in cases {
        assert_eq!(start().client_final(input.as_bytes()), Err(want), "{input}");
    }
    // Out of order.
    let mut server = ScramServer::new(rfc_secret());
    assert_eq!(
        server.client_final(RFC_CLIENT_FINAL.as_bytes()),
        Err(ScramError::Malformed("unexpected client-final-message"))
    );
}

#[test]
fn client_rejects_bad_server_first() {
    let start = || {
        let mut client = ScramClient::with_nonce(password("pencil"), "", "abc");
        client.client_first();
        client
    };
    let cases: &[(&str, ScramError)] = &[
        (
            "e=other-error",
            ScramError::ServerError("other-error".into()),
        ),
        (
            "r=abcdef,s=c2FsdA==,i=0",
            ScramError::Malformed("expected iteration count"),
        ),
        (
            "r=abcdef,s=c2FsdA==,i=",
            ScramError::Malformed("expected iteration count"),
        ),
        (
            "r=abcdef,s=c2FsdA==,i=-1",
            ScramError::Malformed("expected iteration count"),
        ),
        (
            "r=abcdef,s=c2FsdA==,i=4294967296",
            ScramError::Malformed("expected iteration count"),
        ),
        (
            "r=abcdef,s=c2FsdA==",
            ScramError::Malformed("expected iteration count"),
        ),
        ("r=abcdef,s=,i=1", ScramError::Malformed("expected salt")),
        ("r=abcdef,s=*,i=1", ScramError::Malformed("expected salt")),
        ("r=abcdef,i=1", ScramError::Malformed("expected salt")),
        (
            "r=,s=c2FsdA==,i=1",
            ScramError::Malformed("expected server nonce"),
        ),
        (
            "s=c2FsdA==,i=1",
            ScramError::Malformed("expected server nonce"),
        ),
        (
            "m=x,r=abcdef,s=c2FsdA==,i=1",
            ScramError::Malformed("mandatory SCRAM extensions are not supported"),
        ),
        ("r=abc,s=c2FsdA==,i=1", ScramError::NonceMismatch),
        ("r=xbcdef,s=c2FsdA==,i=1", ScramError::NonceMismatch),
        ("r=ab,s=c2FsdA==,i=1", ScramError::NonceMismatch),
        (
            "r=abcdef,s=c2FsdA==,i=100001",
            ScramError::Malformed("iteration count too large"),
        ),
    ];
    for (input, want) in cases {
        assert_eq!(
            start().server_first(input.as_bytes()).as_ref(),
            Err(want),
            "{input}"
        );
    }
    assert!(start()
        .server_first(b"r=abcdef,s=c2FsdA==,i=1,x=ext")
        .is_ok());
    // Out of order: server_first before client_first, server_final before server_first.
    let mut client = ScramClient::new(password("x"));
    assert!(client.server_first(b"r=abcdef,s=c2FsdA==,i=1").is_err());
    let mut client = ScramClient::new(password("x"));
    client.client_first();
    assert!(client.server_final(RFC_SERVER_FINAL.as_bytes()).is_err());
}

#[test]
fn client_rejects_bad_server_final() {
    let start = || {
        let mut client = ScramClient::with_nonce(password("pencil"), "user", RFC_CLIENT_NONCE);
        client.client_first();
        client.server_first(RFC_SERVER_FIRST.as_bytes()).unwrap();
        client
    };
    let cases: &[(&str, ScramError)] = &[
        (
            "e=invalid-proof",
            ScramError::ServerError("invalid-proof".into()),
        ),
        ("", ScramError::Malformed("expected server signature")),
        ("x=1", ScramError::Malformed("expected server signature")),
        (
            "v=",
            ScramError::Malformed("invalid server signature encoding"),
        ),
        (
            "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4",
            ScramError::Malformed("invalid server signature encoding"),
        ),
    ];
    for (input, want) in cases {
        assert_eq!(
            start().server_final(input.as_bytes()).as_ref(),
            Err(want),
            "{input}"
        );
    }
    // Extensions after the verifier are allowed.
    let ext = format!("{RFC_SERVER_FINAL},x=1");
    assert_eq!(start().server_final(ext.as_bytes()), Ok(()));
    // Only once.
    let mut client = start();
    client.server_final(RFC_SERVER_FINAL.as_bytes()).unwrap();
    assert!(client.server_final(RFC_SERVER_FINAL.as_bytes()).is_err());
}

#[test]
fn saslprep_mapping_is_applied() {
    // U+00A0 maps to a space and U+00AD to nothing: all three spellings are one password.
    let salt = b"nbsp-salt";
    let plain = ScramSecret::from_password("pass word", salt, 4096);
    // Computed independently with Python's hashlib.pbkdf2_hmac over "pass word".
    assert_eq!(
        plain.to_string(),
        "SCRAM-SHA-256$4096:bmJzcC1zYWx0$clacHzdEQJvsQYoxEhu+rCCJ+s3qaJygigwKRgz6UBI=:HH4wtr2eB4nzsAeBf4Mngc6Rn15em8EjvQTM2E7gjdw="
    );
    assert_eq!(
        ScramSecret::from_password("pass\u{a0}word", salt, 4096),
        plain
    );
    assert_eq!(
        ScramSecret::from_password("pass\u{ad} word", salt, 4096),
        plain
    );
    let mut client = ScramClient::new(password("pass\u{a0}word"));
    let mut server = ScramServer::new(plain);
    exchange(&mut client, &mut server).unwrap();
}

#[test]
fn saslprep_rejected_password_uses_raw_bytes() {
    // A control character makes SASLprep fail; PostgreSQL then hashes the raw bytes.
    let pw = "caf\u{e9}\u{7}";
    assert_eq!(prepare_password(pw), Some(pw.as_bytes().to_vec()));
    // Non-ASCII but already normalised: SASLprep leaves it alone.
    assert_eq!(
        prepare_password("caf\u{e9}"),
        Some("caf\u{e9}".as_bytes().to_vec())
    );
    // ASCII never changes, even with control characters.
    assert_eq!(prepare_password("a\tb"), Some(b"a\tb".to_vec()));
}

#[test]
fn saslprep_nfkc_falls_back_to_postgres_protocol() {
    // Full-width letters: NFKC turns them into "pass", which we cannot compute ourselves.
    let wide = "\u{ff50}\u{ff41}\u{ff53}\u{ff53}";
    assert_eq!(prepare_password(wide), None);
    let secret = ScramSecret::from_password(wide, b"requested salt", 4096);
    assert_eq!(secret.iterations, 4096); // postgres-protocol's choice
    let mut client = ScramClient::new(password("pass"));
    exchange(&mut client, &mut ScramServer::new(secret)).unwrap();

    // The client side delegates to postgres-protocol for such a password.
    let plain = ScramSecret::from_password("pass", b"salt", 4096);
    let mut client = ScramClient::new(password(wide));
    let key = exchange(&mut client, &mut ScramServer::new(plain.clone())).unwrap();
    assert_eq!(sha256(&key), plain.stored_key);

    let wrong = ScramSecret::from_password("pasS", b"salt", 4096);
    let mut client = ScramClient::new(password(wide));
    assert_eq!(
        exchange(&mut client, &mut ScramServer::new(wrong)),
        Err(ScramError::BadProof)
    );

    // Delegated client: typed errors still come from our own checks.
    let mut client = ScramClient::new(password(wide));
    client.client_first();
    assert_eq!(
        client.server_first(b"r=zzz,s=c2FsdA==,i=1"),
        Err(ScramError::NonceMismatch)
    );
    let mut client = ScramClient::new(password(wide));
    let mut server = ScramServer::new(plain);
    let first = client.client_first();
    let sf = server.client_first(&first).unwrap();
    client.server_first(&sf).unwrap();
    assert_eq!(
        client.server_final(RFC_SERVER_FINAL.as_bytes()),
        Err(ScramError::ServerSignature)
    );
}

#[test]
fn no_panic_on_garbage() {
    let mut rng = StdRng::seed_from_u64(0x5c4a);
    let secret = ScramSecret::from_password("pw", b"salt", 2);
    let valid_first: &[u8] = b"n,,n=,r=abcdefgh";
    for round in 0..3000 {
        let len = rng.gen_range(0..64);
        let mut garbage: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
        // Half the time start from a valid prefix so deeper branches are reached.
        if round % 2 == 0 {
            let cut = rng.gen_range(0..=valid_first.len());
            garbage.splice(0..0, valid_first[..cut].iter().copied());
        }
        let _ = ScramServer::new(secret.clone()).client_first(&garbage);
        let _ = ScramSecret::parse(&String::from_utf8_lossy(&garbage));

        let mut server = ScramServer::new(secret.clone());
        let sf = server.client_first(valid_first).unwrap();
        let _ = server.client_final(&garbage);

        let mut client = ScramClient::new(ScramCredential::Password("pw".into()));
        let first = client.client_first();
        let _ = client.server_first(&garbage);

        let mut client = ScramClient::new(password("pw"));
        let mut server = ScramServer::new(secret.clone());
        let sf2 = server.client_first(&client.client_first()).unwrap();
        client.server_first(&sf2).unwrap();
        let _ = client.server_final(&garbage);

        // Truncations of valid messages.
        for msg in [&sf[..], &first[..], &sf2[..]] {
            let cut = rng.gen_range(0..=msg.len());
            let _ = ScramServer::new(secret.clone()).client_first(&msg[..cut]);
        }
    }
}
