//! Fuzz target for the decoders of the TLS/auth work: the subject CN of a client certificate
//! (`auth::cert`, bytes from the network) and the HBA file parser (`auth::hba`, a file).
//!
//! Byte 0 picks the decoder; the rest is its input. Invariants: neither panics; a CN found is a
//! substring of the certificate bytes; a parsed HBA file answers a lookup without panicking and
//! parses again to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ollyscale_pooler::auth::{cert, hba};

fuzz_target!(|data: &[u8]| {
    let [pick, rest @ ..] = data else {
        return;
    };
    if pick & 1 == 0 {
        if let Some(cn) = cert::subject_common_name(rest) {
            let b = cn.as_bytes();
            assert!(b.is_empty() || rest.windows(b.len()).any(|w| w == b));
        }
        return;
    }
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    // `@file` reads come back as a fixed small list, so includes are exercised without I/O.
    let include = |_: &str| Ok("a b,c".to_string());
    if let Ok(h) = hba::Hba::parse(text, &include) {
        let peer = hba::Peer {
            addr: Some(std::net::IpAddr::from([127, 0, 0, 1])),
            tls: pick & 2 != 0,
            database: "a",
            user: "b",
        };
        let _ = h.method(&peer);
        assert_eq!(hba::Hba::parse(text, &include).as_ref(), Ok(&h));
    }
});
