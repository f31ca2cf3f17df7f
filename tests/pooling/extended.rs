//! Extended-protocol message builders shared by the raw-protocol tests (frames.rs, prepared.rs).

use bytes::{BufMut, BytesMut};
use postgres_protocol::message::frontend;
use postgres_protocol::IsNull;

/// Parse of statement `name` (empty: unnamed) with no parameter types.
pub fn parse(out: &mut BytesMut, name: &str, sql: &str) {
    frontend::parse(name, sql, std::iter::empty(), out).expect("parse message");
}

/// Bind of the unnamed portal to statement `name` with text parameters.
pub fn bind(out: &mut BytesMut, name: &str, params: &[&str]) {
    frontend::bind(
        "",
        name,
        [0i16],
        params.iter(),
        |v, buf| {
            buf.put_slice(v.as_bytes());
            Ok(IsNull::No)
        },
        [0i16],
        out,
    )
    .map_err(|_| "bind")
    .expect("bind message");
}
