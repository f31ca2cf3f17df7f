//! Password authentication primitives: MD5 and SCRAM-SHA-256 arithmetic and message
//! exchanges, for both directions (verifying a client, logging in to a server).
//!
//! Pure code only: no sockets, no tokio, no configuration lookups. Where the secrets come
//! from (auth_file, auth_query) and which method a client must use is decided by the
//! session layer; this module only computes and verifies.

pub mod cert;
pub mod hba;
pub mod ident;
pub mod ldap;
pub mod md5;
pub mod scram;

/// Compares two byte strings in time that depends only on their lengths, not on their
/// contents, so a peer cannot learn a secret byte by byte from response timing.
pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    // `black_box` keeps the optimiser from turning the fold into an early-exit loop.
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::ct_eq;

    #[test]
    fn ct_eq_basics() {
        assert!(ct_eq(b"", b""));
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
        assert!(!ct_eq(b"\x00", b"\x80"));
    }
}
