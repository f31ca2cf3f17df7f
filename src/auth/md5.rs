//! PostgreSQL MD5 password arithmetic: the stored secret `"md5" + hex(md5(password || user))`
//! and the salted response `"md5" + hex(md5(hex_secret || salt))` that travels on the wire.
//!
//! Owns only the hashing and a constant-time check. It never sees sockets, never decides
//! whether MD5 is allowed, and never logs secrets.

use ::md5::{Digest, Md5};

use super::ct_eq;

/// Prefix PostgreSQL puts in front of every MD5 secret and response.
const PREFIX: &str = "md5";

/// Lower-case hex MD5 digest of `data` (32 characters).
pub fn md5_hex(data: &[u8]) -> String {
    hex_str(&hex_of(Md5::new().chain_update(data)))
}

/// The lower-case hex of a finished digest, on the stack: a client login computes two of them,
/// and as Strings they were five allocations and a `format!` each.
fn hex_of(md5: Md5) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (i, byte) in md5.finalize().into_iter().enumerate() {
        out[2 * i] = hex_digit(byte >> 4);
        out[2 * i + 1] = hex_digit(byte & 0x0f);
    }
    out
}

fn hex_digit(nibble: u8) -> u8 {
    b"0123456789abcdef"[usize::from(nibble & 0x0f)]
}

fn hex_str(hex: &[u8]) -> String {
    // Only ASCII hex digits and the prefix go in.
    String::from_utf8_lossy(hex).into_owned()
}

/// `hex(md5(password || user))`, the secret without its prefix.
fn secret_hex(user: &str, password: &str) -> [u8; 32] {
    hex_of(
        Md5::new()
            .chain_update(password.as_bytes())
            .chain_update(user.as_bytes()),
    )
}

/// `"md5" + hex(md5(hex_part || salt))`, on the stack.
fn response_of(hex_part: &[u8], salt: [u8; 4]) -> [u8; 35] {
    let mut out = [0u8; 35];
    out[..3].copy_from_slice(PREFIX.as_bytes());
    out[3..].copy_from_slice(&hex_of(
        Md5::new().chain_update(hex_part).chain_update(salt),
    ));
    out
}

/// The secret PostgreSQL stores in `pg_authid` (and PgBouncer in `auth_file`) for an
/// MD5 password: `"md5" + hex(md5(password || user))`.
pub fn md5_secret(user: &str, password: &str) -> String {
    let mut out = String::with_capacity(35);
    out.push_str(PREFIX);
    out.push_str(&hex_str(&secret_hex(user, password)));
    out
}

/// The answer to an `AuthenticationMD5Password` challenge, computed from the stored secret
/// (so the cleartext password is never needed): `"md5" + hex(md5(hex_part || salt))`.
///
/// This is what a client sends us and what we send to a server. If `md5_secret` lacks the
/// `md5` prefix the whole string is used as the hex part; [`verify_md5_response`] rejects
/// such secrets outright.
pub fn md5_response_from_secret(md5_secret: &str, salt: [u8; 4]) -> String {
    let hex = md5_secret.strip_prefix(PREFIX).unwrap_or(md5_secret);
    hex_str(&response_of(hex.as_bytes(), salt))
}

/// Checks a client's MD5 response (the `PasswordMessage` body without its trailing NUL)
/// against the stored secret, in constant time. A stored secret that is not of the form
/// `md5` + 32 hex digits never verifies.
pub fn verify_md5_response(stored_md5_secret: &str, salt: [u8; 4], response: &[u8]) -> bool {
    if !is_md5_secret(stored_md5_secret) {
        return false;
    }
    let expected = response_of(&stored_md5_secret.as_bytes()[PREFIX.len()..], salt);
    ct_eq(&expected, response)
}

/// [`verify_md5_response`] for a user whose auth_file line holds the cleartext password: the
/// secret is derived on the stack, nothing is allocated.
pub fn verify_md5_response_plain(
    user: &str,
    password: &str,
    salt: [u8; 4],
    response: &[u8],
) -> bool {
    let expected = response_of(&secret_hex(user, password), salt);
    ct_eq(&expected, response)
}

/// True when `s` looks like a PostgreSQL MD5 secret: `md5` followed by 32 hex digits.
fn is_md5_secret(s: &str) -> bool {
    s.len() == PREFIX.len() + 32
        && s.starts_with(PREFIX)
        && s.as_bytes()[PREFIX.len()..]
            .iter()
            .all(u8::is_ascii_hexdigit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_secret_admin_1234() {
        assert_eq!(
            md5_secret("admin", "1234"),
            "md545f2603610af569b6155c45067268c6b"
        );
    }

    #[test]
    fn md5_hex_empty() {
        assert_eq!(md5_hex(b""), "d41d8cd98f00b204e9800998ecf8427e");
    }

    #[test]
    fn secret_matches_postgres_protocol() {
        assert_eq!(
            md5_secret("foo", "secret"),
            postgres_protocol::password::md5(b"secret", "foo")
        );
    }

    #[test]
    fn response_matches_postgres_protocol_client() {
        let salt = [0x2a, 0x3d, 0x8f, 0xe0];
        let secret = md5_secret("md5_user", "password");
        let ours = md5_response_from_secret(&secret, salt);
        assert_eq!(ours, "md562af4dd09bbb41884907a838a3233294");
        assert_eq!(
            ours,
            postgres_protocol::authentication::md5_hash(b"md5_user", b"password", salt)
        );
    }

    #[test]
    fn verify_accepts_right_and_rejects_wrong() {
        let salt = [1, 2, 3, 4];
        let secret = md5_secret("admin", "1234");
        let good = md5_response_from_secret(&secret, salt);
        assert!(verify_md5_response(&secret, salt, good.as_bytes()));
        // Wrong salt, wrong password, truncated, empty, garbage.
        assert!(!verify_md5_response(&secret, [4, 3, 2, 1], good.as_bytes()));
        let other = md5_response_from_secret(&md5_secret("admin", "12345"), salt);
        assert!(!verify_md5_response(&secret, salt, other.as_bytes()));
        assert!(!verify_md5_response(&secret, salt, &good.as_bytes()[..34]));
        assert!(!verify_md5_response(&secret, salt, b""));
        assert!(!verify_md5_response(&secret, salt, &[0xff; 35]));
    }

    #[test]
    fn verify_plain_agrees_with_the_stored_secret_path() {
        let salt = [9, 8, 7, 6];
        let good = md5_response_from_secret(&md5_secret("md5_user", "password"), salt);
        assert!(verify_md5_response_plain(
            "md5_user",
            "password",
            salt,
            good.as_bytes()
        ));
        assert!(!verify_md5_response_plain(
            "md5_user",
            "passwort",
            salt,
            good.as_bytes()
        ));
        assert!(!verify_md5_response_plain(
            "md5_user",
            "password",
            [9, 8, 7, 5],
            good.as_bytes()
        ));
        assert!(!verify_md5_response_plain(
            "md5_user", "password", salt, b""
        ));
    }

    #[test]
    fn verify_rejects_non_md5_stored_secret() {
        let salt = [1, 2, 3, 4];
        // A cleartext "secret" must not verify even against its own computed response.
        let resp = md5_response_from_secret("1234", salt);
        assert!(!verify_md5_response("1234", salt, resp.as_bytes()));
        assert!(!verify_md5_response("md5xyz", salt, resp.as_bytes()));
        assert!(!verify_md5_response("", salt, b""));
    }
}
