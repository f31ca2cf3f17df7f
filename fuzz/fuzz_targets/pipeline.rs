//! Fuzz target for `session::pipeline`: arbitrary client and server frames, interleaved, through
//! a tracked link (shared statements, a small LRU), as a hostile client or a confused server
//! could send them.
//!
//! Input layout: a sequence of records `[side, tag, len, body[len]]`; `side` even = a client
//! frame, odd = a server frame; a body cut short by the end of the input ends the sequence.
//!
//! Invariants checked: nothing panics; ReadyForQuery owed never exceeds the Sync/Query frames
//! the client sent; every replacement the pipeline makes is a sequence of well-formed frames;
//! the server never holds more statements than the cap plus those waiting to be closed.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use ollyscale_pooler::server::statements::{ServerStatements, StatementCache};
use ollyscale_pooler::session::pipeline::{Pipeline, Stmts, ToClient, ToServer};
use ollyscale_pooler::session::prepared::ClientStatements;

const CAP: usize = 3;

fn well_formed(bytes: &[u8]) {
    let mut rest = bytes;
    while !rest.is_empty() {
        assert!(rest.len() >= 5, "a frame header");
        let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
        assert!(len >= 4 && 1 + len <= rest.len(), "a whole frame");
        rest = &rest[1 + len..];
    }
}

fuzz_target!(|data: &[u8]| {
    let cache = StatementCache::default();
    let mut client: Option<Box<ClientStatements>> = None;
    let mut server = ServerStatements::default();
    let mut p = Pipeline::default();
    let mut syncs = 0u32;
    let mut client_frames = 0usize;
    let mut rest = data;
    while rest.len() >= 3 {
        let (side, tag, len) = (rest[0], rest[1], rest[2] as usize);
        rest = &rest[3..];
        if rest.len() < len {
            break;
        }
        let (body, tail) = rest.split_at(len);
        rest = tail;
        let mut st = Stmts {
            client: &mut client,
            server: &mut server,
            cache: &cache,
            cap: CAP,
        };
        if side % 2 == 0 {
            client_frames += 1;
            if matches!(tag, b'S' | b'Q' | b'F') {
                syncs += 1;
            }
            if let ToServer::Replace(b) = p.client_frame(tag, Some(body), Some(&mut st)) {
                well_formed(&b);
            }
        } else if let ToClient::Replace(b) = p.server_frame(tag, Some(body), Some(&mut st)) {
            well_formed(&b);
        }
        let mut synth = BytesMut::new();
        p.take_synthetic(&mut synth);
        well_formed(&synth);
        assert!(p.ready_owed() <= syncs);
        // Beyond the cap only statements whose eviction the server skipped, to close next.
        assert!(server.len() <= CAP + client_frames, "{}", server.len());
    }
});
