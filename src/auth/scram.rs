//! SCRAM-SHA-256 (RFC 5802 / RFC 7677) as PostgreSQL speaks it, in both directions:
//! [`ScramServer`] verifies a client against a stored [`ScramSecret`], and [`ScramClient`]
//! logs in to a PostgreSQL server either with a cleartext password or with the keys
//! recovered from a client's proof (PgBouncer's "SCRAM pass-through").
//!
//! Why hand-written: postgres-protocol's `authentication::sasl::ScramSha256` is a client
//! that only knows a password (it cannot sign with a ClientKey it never derived) and there
//! is no server side at all. We still lean on it for SASLprep (see `prepare_password`).
//!
//! Scope: no channel binding. Clients may send the GS2 header `n,,` or `y,,` (we never
//! advertise SCRAM-SHA-256-PLUS, so `y` is not a downgrade); `p=...` is refused. As
//! PostgreSQL does, the username inside the SCRAM messages is ignored: the startup
//! packet's user is the one that counts. Pure code: no I/O, no logging, no config.

use std::fmt;
use std::mem;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use rand::RngCore;
use sha2::{Digest, Sha256};

use super::ct_eq;

/// The SASL mechanism name to advertise in `AuthenticationSASL` and to expect back.
pub const SCRAM_SHA_256: &str = "SCRAM-SHA-256";

/// Largest iteration count a server may ask us to run when we log in with a password:
/// PBKDF2 cost is chosen by the peer, so it must be bounded (postgres-protocol and pgjdbc
/// use the same cap). Pass-through logins with keys run no PBKDF2 and are not limited.
pub const MAX_CLIENT_ITERATIONS: u32 = 100_000;

/// Random bytes in each side's nonce (PostgreSQL uses 18, i.e. 24 base64 characters).
const NONCE_BYTES: usize = 18;

/// `base64("n,,")`: the channel-binding attribute of a client-final-message without binding.
const CBIND_NONE: &str = "biws";

type HmacSha256 = Hmac<Sha256>;

/// A SCRAM-SHA-256 verifier as PostgreSQL stores it in `pg_authid.rolpassword`:
/// `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>` (base64 fields).
///
/// `Debug` redacts the keys: either key lets its holder impersonate the user somewhere
/// (ServerKey to a client, StoredKey+a sniffed exchange to a server).
#[derive(Clone, PartialEq, Eq)]
pub struct ScramSecret {
    /// PBKDF2 iteration count used to derive the keys (at least 1).
    pub iterations: u32,
    /// Salt given to clients in the server-first-message (non-empty).
    pub salt: Vec<u8>,
    /// `SHA256(ClientKey)`: checks a client's proof.
    pub stored_key: [u8; 32],
    /// `HMAC(SaltedPassword, "Server Key")`: signs the server-final-message.
    pub server_key: [u8; 32],
}

impl ScramSecret {
    /// Parses PostgreSQL's textual form. Returns `None` for anything else (an MD5 secret,
    /// a cleartext password, bad base64, keys that are not 32 bytes, zero iterations).
    pub fn parse(s: &str) -> Option<ScramSecret> {
        let rest = s.strip_prefix("SCRAM-SHA-256$")?;
        let (iter_salt, keys) = rest.split_once('$')?;
        let (iterations, salt) = iter_salt.split_once(':')?;
        let (stored_key, server_key) = keys.split_once(':')?;
        if !iterations.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let iterations: u32 = iterations.parse().ok().filter(|&i| i > 0)?;
        let salt = STANDARD.decode(salt).ok().filter(|s| !s.is_empty())?;
        Some(ScramSecret {
            iterations,
            salt,
            stored_key: decode_key(stored_key)?,
            server_key: decode_key(server_key)?,
        })
    }

    /// Derives the secret PostgreSQL would store for `password` with this salt and
    /// iteration count (`iterations` of 0 is treated as 1). Pass a non-empty random salt
    /// (PostgreSQL uses 16 bytes and 4096 iterations): clients refuse an empty one.
    ///
    /// The password goes through SASLprep like in PostgreSQL; a password that SASLprep
    /// rejects is used as raw bytes. One rare case cannot be honoured exactly without
    /// Unicode normalisation tables (a non-ASCII password that NFKC would change, e.g.
    /// full-width letters): the secret then comes from postgres-protocol, with its own
    /// random salt and 4096 iterations. It is still correct for every client.
    pub fn from_password(password: &str, salt: &[u8], iterations: u32) -> ScramSecret {
        let iterations = iterations.max(1);
        if let Some(prepared) = prepare_password(password) {
            return Self::from_prepared(&prepared, salt, iterations);
        }
        let generated = postgres_protocol::password::scram_sha_256(password.as_bytes());
        // postgres-protocol's output always parses; raw bytes are only a fallback against
        // a future format change, so this function never panics.
        ScramSecret::parse(&generated)
            .unwrap_or_else(|| Self::from_prepared(password.as_bytes(), salt, iterations))
    }

    fn from_prepared(prepared: &[u8], salt: &[u8], iterations: u32) -> ScramSecret {
        let salted = hi(prepared, salt, iterations);
        let (client_key, server_key) = keys_from_salted(&salted);
        ScramSecret {
            iterations,
            salt: salt.to_vec(),
            stored_key: sha256(&client_key),
            server_key,
        }
    }
}

impl fmt::Display for ScramSecret {
    /// The `pg_authid` form accepted by [`ScramSecret::parse`].
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SCRAM-SHA-256${}:{}${}:{}",
            self.iterations,
            STANDARD.encode(&self.salt),
            STANDARD.encode(self.stored_key),
            STANDARD.encode(self.server_key)
        )
    }
}

impl fmt::Debug for ScramSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramSecret")
            .field("iterations", &self.iterations)
            .field("salt_len", &self.salt.len())
            .finish_non_exhaustive()
    }
}

/// Why a SCRAM exchange failed. Every malformed input maps here; nothing panics.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ScramError {
    /// The peer's message does not follow the SCRAM grammar (or came out of order).
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    /// The nonce does not extend / repeat the one negotiated earlier.
    #[error("SCRAM nonce mismatch")]
    NonceMismatch,
    /// The client's proof is wrong: wrong password (or wrong pass-through keys).
    #[error("SCRAM proof does not match: password authentication failed")]
    BadProof,
    /// The server's signature is wrong: it does not know the user's ServerKey.
    #[error("SCRAM server signature does not match")]
    ServerSignature,
    /// The client asked for channel binding (`p=`), which we do not offer.
    #[error("SCRAM channel binding is not supported")]
    ChannelBindingUnsupported,
    /// The server ended the exchange with `e=<reason>`.
    #[error("SCRAM error from server: {0}")]
    ServerError(String),
}

/// Server side of the exchange: we verify a client that knows the password (or keys).
///
/// Use once: [`client_first`](Self::client_first), then [`client_final`](Self::client_final).
/// Any error ends the exchange; later calls return `Malformed`.
pub struct ScramServer {
    /// The verifier the client must match.
    secret: ScramSecret,
    /// Our half of the nonce (base64 of random bytes).
    server_nonce: String,
    state: ServerState,
}

enum ServerState {
    Initial,
    SentFirst {
        /// The GS2 header the client used; `c=` must echo it.
        gs2_header: &'static str,
        client_first_bare: String,
        server_first: String,
        /// Client nonce + server nonce.
        nonce: String,
    },
    Done,
}

impl ScramServer {
    /// Starts an exchange for one client, with a fresh random server nonce.
    pub fn new(secret: ScramSecret) -> Self {
        ScramServer {
            secret,
            server_nonce: random_nonce(),
            state: ServerState::Initial,
        }
    }

    /// Test hook: a fixed server nonce, to check published test vectors.
    #[cfg(test)]
    pub(crate) fn with_nonce(secret: ScramSecret, server_nonce: &str) -> Self {
        ScramServer {
            secret,
            server_nonce: server_nonce.to_owned(),
            state: ServerState::Initial,
        }
    }

    /// Handles the client-first-message (the data of `SASLInitialResponse`) and returns the
    /// server-first-message to send in `AuthenticationSASLContinue`.
    pub fn client_first(&mut self, data: &[u8]) -> Result<Vec<u8>, ScramError> {
        if !matches!(
            mem::replace(&mut self.state, ServerState::Done),
            ServerState::Initial
        ) {
            return Err(ScramError::Malformed("unexpected client-first-message"));
        }
        let msg = utf8(data)?;
        let (gs2_header, bare) = split_gs2_header(msg)?;
        let mut attrs = bare.split(',');
        // reserved-mext ("m=") would come first; PostgreSQL refuses it too.
        let user = attrs.next().unwrap_or_default();
        if user.starts_with("m=") {
            return Err(ScramError::Malformed(
                "mandatory SCRAM extensions are not supported",
            ));
        }
        // The username is ignored (the startup packet's user counts), but must be present.
        attr_value(user, b'n').ok_or(ScramError::Malformed("expected username attribute"))?;
        let client_nonce = attrs
            .next()
            .and_then(|a| attr_value(a, b'r'))
            .filter(|n| is_valid_nonce(n))
            .ok_or(ScramError::Malformed("expected client nonce"))?;
        // Optional extensions after the nonce are ignored, as PostgreSQL does.

        let nonce = format!("{client_nonce}{}", self.server_nonce);
        let server_first = format!(
            "r={nonce},s={},i={}",
            STANDARD.encode(&self.secret.salt),
            self.secret.iterations
        );
        let out = server_first.clone().into_bytes();
        self.state = ServerState::SentFirst {
            gs2_header,
            client_first_bare: bare.to_owned(),
            server_first,
            nonce,
        };
        Ok(out)
    }

    /// Handles the client-final-message (the data of `SASLResponse`). On success returns
    /// the server-final-message (`v=...`, for `AuthenticationSASLFinal`) and the ClientKey
    /// recovered from the proof, which lets us log in to servers sharing this secret.
    pub fn client_final(&mut self, data: &[u8]) -> Result<(Vec<u8>, [u8; 32]), ScramError> {
        let ServerState::SentFirst {
            gs2_header,
            client_first_bare,
            server_first,
            nonce,
        } = mem::replace(&mut self.state, ServerState::Done)
        else {
            return Err(ScramError::Malformed("unexpected client-final-message"));
        };
        let msg = utf8(data)?;
        // The proof is the last attribute and is not part of the signed AuthMessage.
        let (without_proof, proof) = msg
            .rsplit_once(",p=")
            .ok_or(ScramError::Malformed("expected client proof"))?;
        let proof = decode_key(proof).ok_or(ScramError::Malformed("invalid client proof"))?;
        let mut attrs = without_proof.split(',');
        let cbind = attrs
            .next()
            .and_then(|a| attr_value(a, b'c'))
            .ok_or(ScramError::Malformed("expected channel binding attribute"))?;
        let cbind = STANDARD
            .decode(cbind)
            .map_err(|_| ScramError::Malformed("invalid channel binding data"))?;
        if cbind != gs2_header.as_bytes() {
            return Err(ScramError::Malformed(
                "channel binding data does not match the GS2 header",
            ));
        }
        let final_nonce = attrs
            .next()
            .and_then(|a| attr_value(a, b'r'))
            .ok_or(ScramError::Malformed("expected nonce"))?;
        if final_nonce != nonce {
            return Err(ScramError::NonceMismatch);
        }

        let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
        let client_signature = hmac(&self.secret.stored_key, auth_message.as_bytes());
        let client_key = xor32(&proof, &client_signature);
        if !ct_eq(&sha256(&client_key), &self.secret.stored_key) {
            return Err(ScramError::BadProof);
        }
        let signature = hmac(&self.secret.server_key, auth_message.as_bytes());
        let server_final = format!("v={}", STANDARD.encode(signature));
        Ok((server_final.into_bytes(), client_key))
    }
}

/// What we prove to a server with.
#[derive(Clone)]
pub enum ScramCredential {
    /// A cleartext password (from auth_file / config): keys are derived from the salt and
    /// iteration count the server sends.
    Password(String),
    /// SCRAM pass-through: the ClientKey recovered by [`ScramServer::client_final`] from a
    /// client's proof, plus the ServerKey of the stored secret. Works when the server
    /// stores the same secret as the one the client was verified against.
    Keys {
        /// `HMAC(SaltedPassword, "Client Key")`.
        client_key: [u8; 32],
        /// `HMAC(SaltedPassword, "Server Key")`, to check the server's signature.
        server_key: [u8; 32],
    },
}

impl fmt::Debug for ScramCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScramCredential::Password(_) => f.write_str("Password(<redacted>)"),
            ScramCredential::Keys { .. } => f.write_str("Keys(<redacted>)"),
        }
    }
}

/// Client side of the exchange: we log in to a PostgreSQL server.
///
/// Call [`client_first`](Self::client_first) (send it in `SASLInitialResponse`), then
/// [`server_first`](Self::server_first) with the `AuthenticationSASLContinue` data (send the
/// result in `SASLResponse`), then [`server_final`](Self::server_final) with the
/// `AuthenticationSASLFinal` data. Authentication succeeded only if that returns `Ok`.
pub struct ScramClient {
    cred: ClientCred,
    /// Our nonce, also inside `client_first_bare`.
    nonce: String,
    /// `n=<user>,r=<nonce>` (PostgreSQL sends an empty user).
    client_first_bare: String,
    state: ClientState,
}

/// The credential after SASLprep has been settled.
enum ClientCred {
    /// Password bytes exactly as SCRAM must hash them.
    Prepared(Vec<u8>),
    Keys {
        client_key: [u8; 32],
        server_key: [u8; 32],
    },
    /// A password only postgres-protocol can prepare: it runs the arithmetic and we keep
    /// the message checks (see [`prepare_password`]).
    Delegated(Box<ScramSha256>),
}

enum ClientState {
    Initial,
    SentFirst,
    SentFinal {
        /// `None` when the credential is delegated (it checks the signature itself).
        server_key: Option<[u8; 32]>,
        auth_message: String,
    },
    Done,
}

impl ScramClient {
    /// Prepares an exchange with a fresh random nonce.
    pub fn new(cred: ScramCredential) -> Self {
        let cred = match cred {
            ScramCredential::Keys {
                client_key,
                server_key,
            } => ClientCred::Keys {
                client_key,
                server_key,
            },
            ScramCredential::Password(password) => match prepare_password(&password) {
                Some(bytes) => ClientCred::Prepared(bytes),
                None => return Self::delegated(password),
            },
        };
        Self::build(cred, "", random_nonce())
    }

    /// For a password whose SASLprep form we cannot compute: postgres-protocol's client
    /// runs the exchange (its first message is `n,,n=,r=<nonce>`). Falling back to raw
    /// bytes only guards against a future format change, so nothing here panics.
    fn delegated(password: String) -> Self {
        let engine = ScramSha256::new(password.as_bytes(), ChannelBinding::unsupported());
        let nonce = std::str::from_utf8(engine.message())
            .ok()
            .and_then(|m| m.strip_prefix("n,,n=,r="))
            .map(str::to_owned);
        match nonce {
            Some(nonce) => Self::build(ClientCred::Delegated(Box::new(engine)), "", nonce),
            None => Self::build(
                ClientCred::Prepared(password.into_bytes()),
                "",
                random_nonce(),
            ),
        }
    }

    /// Test hook: fixed nonce and username, to check published test vectors (RFC 7677
    /// sends `n=user`). `user` must not contain `,` or `=`.
    #[cfg(test)]
    pub(crate) fn with_nonce(cred: ScramCredential, user: &str, nonce: &str) -> Self {
        let client = Self::new(cred);
        assert!(!matches!(client.cred, ClientCred::Delegated(_)));
        Self::build(client.cred, user, nonce.to_owned())
    }

    fn build(cred: ClientCred, user: &str, nonce: String) -> Self {
        ScramClient {
            cred,
            client_first_bare: format!("n={user},r={nonce}"),
            nonce,
            state: ClientState::Initial,
        }
    }

    /// The client-first-message, `n,,n=,r=<nonce>`. Calling it again returns the same bytes.
    pub fn client_first(&mut self) -> Vec<u8> {
        if matches!(self.state, ClientState::Initial) {
            self.state = ClientState::SentFirst;
        }
        format!("n,,{}", self.client_first_bare).into_bytes()
    }

    /// Handles the server-first-message and returns the client-final-message.
    pub fn server_first(&mut self, data: &[u8]) -> Result<Vec<u8>, ScramError> {
        if !matches!(
            mem::replace(&mut self.state, ClientState::Done),
            ClientState::SentFirst
        ) {
            return Err(ScramError::Malformed("unexpected server-first-message"));
        }
        let msg = utf8(data)?;
        let first = parse_server_first(msg)?;
        if first.nonce.len() <= self.nonce.len() || !first.nonce.starts_with(&self.nonce) {
            return Err(ScramError::NonceMismatch);
        }

        let (client_key, server_key) = match &mut self.cred {
            ClientCred::Keys {
                client_key,
                server_key,
            } => (*client_key, *server_key),
            ClientCred::Prepared(password) => {
                if first.iterations > MAX_CLIENT_ITERATIONS {
                    return Err(ScramError::Malformed("iteration count too large"));
                }
                keys_from_salted(&hi(password, &first.salt, first.iterations))
            }
            ClientCred::Delegated(engine) => {
                engine
                    .update(data)
                    .map_err(|_| ScramError::Malformed("server-first-message rejected"))?;
                let out = engine.message().to_vec();
                self.state = ClientState::SentFinal {
                    server_key: None,
                    auth_message: String::new(),
                };
                return Ok(out);
            }
        };

        let without_proof = format!("c={CBIND_NONE},r={}", first.nonce);
        let auth_message = format!("{},{msg},{without_proof}", self.client_first_bare);
        let signature = hmac(&sha256(&client_key), auth_message.as_bytes());
        let proof = xor32(&client_key, &signature);
        let out = format!("{without_proof},p={}", STANDARD.encode(proof)).into_bytes();
        self.state = ClientState::SentFinal {
            server_key: Some(server_key),
            auth_message,
        };
        Ok(out)
    }

    /// Checks the server-final-message. `e=<reason>` becomes [`ScramError::ServerError`];
    /// a wrong signature means the server does not know the secret.
    pub fn server_final(&mut self, data: &[u8]) -> Result<(), ScramError> {
        let ClientState::SentFinal {
            server_key,
            auth_message,
        } = mem::replace(&mut self.state, ClientState::Done)
        else {
            return Err(ScramError::Malformed("unexpected server-final-message"));
        };
        let msg = utf8(data)?;
        // server-final = (server-error / verifier) ["," extensions]
        let first = msg.split(',').next().unwrap_or_default();
        if let Some(reason) = attr_value(first, b'e') {
            return Err(ScramError::ServerError(reason.to_owned()));
        }
        let verifier =
            attr_value(first, b'v').ok_or(ScramError::Malformed("expected server signature"))?;
        let verifier = decode_key(verifier)
            .ok_or(ScramError::Malformed("invalid server signature encoding"))?;
        match (server_key, &mut self.cred) {
            (Some(server_key), _) => {
                let expected = hmac(&server_key, auth_message.as_bytes());
                if ct_eq(&expected, &verifier) {
                    Ok(())
                } else {
                    Err(ScramError::ServerSignature)
                }
            }
            (None, ClientCred::Delegated(engine)) => {
                engine.finish(data).map_err(|_| ScramError::ServerSignature)
            }
            (None, _) => Err(ScramError::Malformed("unexpected server-final-message")),
        }
    }
}

/// The fields of a server-first-message we use.
struct ServerFirst<'a> {
    nonce: &'a str,
    salt: Vec<u8>,
    iterations: u32,
}

/// `[m=..,]r=<nonce>,s=<salt>,i=<iterations>[,extensions]`; `e=` is accepted as an error.
fn parse_server_first(msg: &str) -> Result<ServerFirst<'_>, ScramError> {
    let mut attrs = msg.split(',');
    let first = attrs.next().unwrap_or_default();
    if let Some(reason) = attr_value(first, b'e') {
        return Err(ScramError::ServerError(reason.to_owned()));
    }
    if first.starts_with("m=") {
        return Err(ScramError::Malformed(
            "mandatory SCRAM extensions are not supported",
        ));
    }
    let nonce = attr_value(first, b'r')
        .filter(|n| is_valid_nonce(n))
        .ok_or(ScramError::Malformed("expected server nonce"))?;
    let salt = attrs
        .next()
        .and_then(|a| attr_value(a, b's'))
        .and_then(|s| STANDARD.decode(s).ok())
        .filter(|s| !s.is_empty())
        .ok_or(ScramError::Malformed("expected salt"))?;
    let iterations = attrs
        .next()
        .and_then(|a| attr_value(a, b'i'))
        .filter(|i| !i.is_empty() && i.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|i| i.parse::<u32>().ok())
        .filter(|&i| i > 0)
        .ok_or(ScramError::Malformed("expected iteration count"))?;
    Ok(ServerFirst {
        nonce,
        salt,
        iterations,
    })
}

/// Splits `gs2-header` (`n,,` or `y,,`) from client-first-message-bare.
fn split_gs2_header(msg: &str) -> Result<(&'static str, &str), ScramError> {
    let (header, bare) = match msg.as_bytes() {
        [b'n', b',', ..] => ("n,,", &msg[2..]),
        [b'y', b',', ..] => ("y,,", &msg[2..]),
        [b'p', b'=', ..] => return Err(ScramError::ChannelBindingUnsupported),
        _ => return Err(ScramError::Malformed("invalid GS2 header")),
    };
    if bare.starts_with("a=") {
        return Err(ScramError::Malformed(
            "authorization identity is not supported",
        ));
    }
    let bare = bare
        .strip_prefix(',')
        .ok_or(ScramError::Malformed("invalid GS2 header"))?;
    Ok((header, bare))
}

/// The value of attribute `name` in `name=value`, or `None` if `attr` is another one.
fn attr_value(attr: &str, name: u8) -> Option<&str> {
    match attr.as_bytes() {
        [n, b'=', ..] if *n == name => Some(&attr[2..]),
        _ => None,
    }
}

/// RFC 5802 nonce: one or more printable ASCII characters except `,`.
fn is_valid_nonce(nonce: &str) -> bool {
    !nonce.is_empty()
        && nonce
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b',')
}

fn utf8(data: &[u8]) -> Result<&str, ScramError> {
    std::str::from_utf8(data).map_err(|_| ScramError::Malformed("message is not UTF-8"))
}

fn decode_key(b64: &str) -> Option<[u8; 32]> {
    // Bound the input before decoding: 32 bytes are 44 base64 characters.
    if b64.len() != 44 {
        return None;
    }
    STANDARD.decode(b64).ok()?.try_into().ok()
}

fn random_nonce() -> String {
    let mut bytes = [0u8; NONCE_BYTES];
    rand::thread_rng().fill_bytes(&mut bytes);
    STANDARD.encode(bytes)
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key).expect("invariant: HMAC takes any key length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

fn xor32(a: &[u8; 32], b: &[u8; 32]) -> [u8; 32] {
    let mut out = *a;
    for (o, x) in out.iter_mut().zip(b) {
        *o ^= x;
    }
    out
}

/// RFC 5802 `Hi()`: PBKDF2-HMAC-SHA-256 with one output block.
fn hi(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let mac = HmacSha256::new_from_slice(password).expect("invariant: HMAC takes any key length");
    let mut first = mac.clone();
    first.update(salt);
    first.update(&1u32.to_be_bytes());
    let mut prev: [u8; 32] = first.finalize().into_bytes().into();
    let mut result = prev;
    for _ in 1..iterations {
        let mut next = mac.clone();
        next.update(&prev);
        prev = next.finalize().into_bytes().into();
        for (r, p) in result.iter_mut().zip(prev) {
            *r ^= p;
        }
    }
    result
}

/// `(ClientKey, ServerKey)` from a SaltedPassword.
fn keys_from_salted(salted: &[u8; 32]) -> ([u8; 32], [u8; 32]) {
    (hmac(salted, b"Client Key"), hmac(salted, b"Server Key"))
}

/// Salt of the made-up exchange in [`prepare_password`]; any value works.
const ORACLE_SALT: &[u8] = b"ollyscale saslprep oracle";

/// The bytes SCRAM hashes for `password`, following PostgreSQL: SASLprep (RFC 4013) when
/// the password passes it, the raw bytes otherwise. `None` means "only full NFKC knows".
///
/// We have no Unicode normalisation tables, but postgres-protocol runs the real SASLprep
/// inside its SCRAM client. So: ASCII passwords are exact without help (SASLprep either
/// leaves them alone or rejects control characters, and rejection means raw bytes). For
/// others we try the two answers we can compute (raw bytes, RFC 4013 mapping without
/// NFKC) and ask postgres-protocol which one is right by running its client once against
/// a made-up server-first-message with one iteration and comparing proofs.
fn prepare_password(password: &str) -> Option<Vec<u8>> {
    if password.is_ascii() {
        return Some(password.as_bytes().to_vec());
    }
    let mapped: String = password
        .chars()
        .map(|c| if is_non_ascii_space(c) { ' ' } else { c })
        .filter(|&c| !is_mapped_to_nothing(c))
        .collect();
    let candidates = [password.as_bytes().to_vec(), mapped.into_bytes()];

    let mut engine = ScramSha256::new(password.as_bytes(), ChannelBinding::unsupported());
    let client_nonce = std::str::from_utf8(engine.message())
        .ok()?
        .strip_prefix("n,,n=,r=")?
        .to_owned();
    let server_first = format!("r={client_nonce}x,s={},i=1", STANDARD.encode(ORACLE_SALT));
    engine.update(server_first.as_bytes()).ok()?;
    let client_final = std::str::from_utf8(engine.message()).ok()?;
    let (without_proof, proof) = client_final.rsplit_once(",p=")?;
    let proof = decode_key(proof)?;
    let auth_message = format!("n=,r={client_nonce},{server_first},{without_proof}");
    candidates.into_iter().find(|candidate| {
        let (client_key, _) = keys_from_salted(&hi(candidate, ORACLE_SALT, 1));
        let signature = hmac(&sha256(&client_key), auth_message.as_bytes());
        ct_eq(&xor32(&client_key, &signature), &proof)
    })
}

/// RFC 3454 table C.1.2 (SASLprep maps these to U+0020).
fn is_non_ascii_space(c: char) -> bool {
    matches!(
        c,
        '\u{00A0}' | '\u{1680}' | '\u{2000}'..='\u{200B}' | '\u{202F}' | '\u{205F}' | '\u{3000}'
    )
}

/// RFC 3454 table B.1 (SASLprep removes these).
fn is_mapped_to_nothing(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{034F}'
            | '\u{1806}'
            | '\u{180B}'..='\u{180D}'
            | '\u{200B}'..='\u{200D}'
            | '\u{2060}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FEFF}'
    )
}

#[cfg(test)]
mod tests;
