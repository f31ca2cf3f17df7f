//! Authenticating a client with a method (auth_type, or the HBA line that matched) against the
//! secret the provider found: trust, any, plain, md5, SCRAM-SHA-256 (md5 falls back to SCRAM for
//! SCRAM-stored users, as PgBouncer does), cert, peer, ldap, reject. Unknown users get a mock
//! exchange that always fails, so they look exactly like wrong passwords.

use bytes::BytesMut;

use crate::auth::{md5, scram};
use crate::config::{AuthType, Secret};
use crate::error::{Error, Result};
use crate::logsafe::Clean;
use crate::net::{ReadError, Stream};
use crate::proto::build;

/// Login messages from a client are small.
const MAX_AUTH_MSG: u32 = 64 * 1024;

/// What a successful login leaves behind.
#[derive(Default)]
pub struct Authenticated {
    /// SCRAM keys recovered from the client's proof (for SCRAM pass-through to the server).
    pub scram_keys: Option<([u8; 32], [u8; 32])>,
    /// The cleartext password LDAP accepted: the server login uses it, as PgBouncer does.
    pub password: Option<String>,
}

/// An HBA line's `map=`: the name and the loaded `auth_ident_file` (None when unset, which lets
/// nobody in through that map).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserMap<'a> {
    /// The map name.
    pub name: &'a str,
    /// The loaded ident file.
    pub ident: Option<&'a crate::auth::ident::IdentMap>,
}

/// Whether the identity the client proved (`system`: certificate CN or OS user) may log in as
/// `user`: the same name without a map, and only what the map allows with one (as PostgreSQL).
fn identity_allows(system: &str, user: &str, map: Option<UserMap<'_>>) -> bool {
    match map {
        None => system == user,
        Some(m) => m.ident.is_some_and(|i| i.allows(m.name, system, user)),
    }
}

/// The exchange a login goes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method<'a> {
    /// auth_type any: nothing asked, any user name.
    Any,
    /// No password; the user must be known.
    Trust,
    /// Cleartext password.
    Plain,
    /// MD5 challenge (SCRAM for SCRAM-stored users).
    Md5,
    /// SCRAM-SHA-256.
    Scram,
    /// TLS client certificate whose CN is the user name, or maps to it.
    Cert(Option<UserMap<'a>>),
    /// Unix-socket peer credentials: the client's OS user has the name it logs in with, or maps
    /// to it.
    Peer(Option<UserMap<'a>>),
    /// Cleartext password, checked by binding to LDAP with these options.
    Ldap(&'a crate::auth::ldap::LdapOptions),
    /// Refused before any exchange (HBA reject).
    Reject,
}

impl<'a> Method<'a> {
    /// The method of a global auth_type (hba is resolved per connection by the caller);
    /// `ldap` is the parsed `auth_ldap_options`, which the configuration has for auth_type ldap.
    pub fn of(t: AuthType, ldap: Option<&'a crate::auth::ldap::LdapOptions>) -> Method<'a> {
        match t {
            AuthType::Any => Method::Any,
            AuthType::Trust => Method::Trust,
            AuthType::Plain => Method::Plain,
            AuthType::Md5 | AuthType::Hba => Method::Md5,
            AuthType::ScramSha256 => Method::Scram,
            AuthType::Cert => Method::Cert(None),
            AuthType::Peer => Method::Peer(None),
            AuthType::Ldap => match ldap {
                Some(o) => Method::Ldap(o),
                // Config::load refuses auth_type ldap without valid options; fail closed.
                None => Method::Reject,
            },
        }
    }

    /// The method an HBA line names, with its map resolved against the loaded ident file.
    pub fn of_hba(
        rule: &'a crate::auth::hba::HbaRule,
        ident: Option<&'a crate::auth::ident::IdentMap>,
    ) -> Method<'a> {
        use crate::auth::hba::HbaMethod as H;
        let map = rule.map.as_deref().map(|name| UserMap { name, ident });
        match rule.method {
            H::Trust => Method::Trust,
            H::Reject => Method::Reject,
            H::Md5 => Method::Md5,
            H::Password => Method::Plain,
            H::ScramSha256 => Method::Scram,
            H::Cert => Method::Cert(map),
            H::Peer => Method::Peer(map),
            H::Ldap => match &rule.ldap {
                Some(o) => Method::Ldap(o),
                None => Method::Reject,
            },
        }
    }
}

/// A password message's body: taken whole, or split off a buffer read into again.
enum Body {
    Owned(BytesMut),
    Shared(bytes::Bytes),
}

impl std::ops::Deref for Body {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Body::Owned(b) => b,
            Body::Shared(b) => b,
        }
    }
}

async fn send(stream: &mut Stream, buf: &BytesMut) -> Result<()> {
    stream.send(buf).await.map_err(Error::ClientIo)
}

/// Reads the client's next password message. `last`: nothing more is read into `buf`, so the
/// message may take the buffer whole ([`crate::proto::take_frame`]: no allocation); SCRAM's
/// first message is split off, as its second is read into the same buffer.
async fn read_password_msg(stream: &mut Stream, buf: &mut BytesMut, last: bool) -> Result<Body> {
    let read = if last {
        crate::net::read_with(stream, buf, |b| crate::proto::take_frame(b, MAX_AUTH_MSG))
            .await
            .map(|(tag, body)| (tag, Body::Owned(body)))
    } else {
        crate::net::read_frame(stream, buf, MAX_AUTH_MSG)
            .await
            .map(|f| (f.tag, Body::Shared(f.body)))
    };
    match read {
        Ok((b'p', body)) => Ok(body),
        Ok((tag, _)) => Err(Error::ClientProtocol(format!(
            "expected password message, got '{}'",
            tag as char
        ))),
        Err(ReadError::Io(e)) => Err(Error::ClientIo(e)),
        Err(ReadError::Eof) => Err(Error::ClientGone),
        Err(ReadError::Frame(e)) => Err(Error::ClientProtocol(e.to_string())),
    }
}

/// Runs the exchange `method` calls for against `secret` (None = unknown user). Sends
/// AuthenticationOk on success.
pub async fn authenticate(
    stream: &mut Stream,
    method: Method<'_>,
    user: &str,
    secret: Option<&Secret>,
    scram_iterations: u32,
) -> Result<Authenticated> {
    let auth = exchange(stream, method, user, secret, scram_iterations).await?;
    let mut out = BytesMut::with_capacity(16);
    build::auth_ok(&mut out);
    send(stream, &out).await?;
    Ok(auth)
}

/// Runs the exchange `method` calls for against `secret` (None = unknown user), without the
/// AuthenticationOk: the caller sends it at the head of the welcome, so a login costs one write
/// less. `scram_iterations` is used where a SCRAM secret must be made up: from a plain password,
/// and for the mock exchange of an unknown user (which must look the same).
pub async fn exchange(
    stream: &mut Stream,
    method: Method<'_>,
    user: &str,
    secret: Option<&Secret>,
    scram_iterations: u32,
) -> Result<Authenticated> {
    // One buffer takes the challenge out and the answer in, made only for the methods that
    // ask (READ_ROOM: any smaller and the first read grows it, a second allocation and a copy).
    let room = || BytesMut::with_capacity(crate::net::frame::READ_ROOM);
    let result = match method {
        Method::Any => Ok(Authenticated::default()),
        Method::Reject => Err(Error::LoginRejected),
        // PgBouncer's login_as_unix_peer: a known user, over the Unix socket, from the OS user
        // of the same name (or one the line's map relates to it).
        Method::Peer(map) => {
            let os_user = unix_peer_uid(stream).and_then(crate::sys::user_name);
            match (&secret, os_user) {
                (Some(_), Some(os)) if identity_allows(&os, user, map) => {
                    Ok(Authenticated::default())
                }
                _ => Err(Error::UnixSocketLoginRejected),
            }
        }
        // The certificate was verified against client_tls_ca_file during the handshake; here
        // only its subject CN must name the user (or map to it).
        Method::Cert(map) => match stream
            .peer_certificate()
            .and_then(crate::auth::cert::subject_common_name)
        {
            Some(cn) if identity_allows(&cn, user, map) => Ok(Authenticated::default()),
            _ => Err(Error::CertAuthFailed),
        },
        // PgBouncer 1.23+: trust skips the password, not the lookup. A `[users]` name counts as
        // known (see `link::login`).
        Method::Trust => match secret {
            Some(_) => Ok(Authenticated::default()),
            None => Err(Error::TrustAuthFailed),
        },
        Method::Plain => {
            let mut buf = room();
            build::auth_cleartext(&mut buf);
            send(stream, &buf).await?;
            buf.clear();
            let body = read_password_msg(stream, &mut buf, true).await?;
            let pw = build::parse_password_message(&body)
                .map_err(|e| Error::ClientProtocol(e.to_string()))?;
            let pw = String::from_utf8_lossy(pw);
            match &secret {
                Some(s) if check_plain(s, user, &pw) => Ok(Authenticated::default()),
                _ => Err(Error::PasswordAuthFailed),
            }
        }
        Method::Ldap(opts) => {
            let mut buf = room();
            build::auth_cleartext(&mut buf);
            send(stream, &buf).await?;
            buf.clear();
            let body = read_password_msg(stream, &mut buf, true).await?;
            let pw = build::parse_password_message(&body)
                .map_err(|e| Error::ClientProtocol(e.to_string()))?;
            let pw = String::from_utf8_lossy(pw).into_owned();
            // Boxed: the LDAP client's state is kilobytes, and inline it sized every login's
            // future (built and copied at each login, whatever the method).
            match Box::pin(crate::session::ldap::check(opts, user, &pw)).await {
                Ok(()) => Ok(Authenticated {
                    scram_keys: None,
                    password: Some(pw),
                }),
                Err(why) => {
                    tracing::warn!(
                        "LDAP authentication failed for user \"{}\": {}",
                        Clean(user),
                        Clean(&why)
                    );
                    Err(Error::LdapAuthFailed)
                }
            }
        }
        // md5 with a plain or md5 secret; a SCRAM secret makes an md5 login a SCRAM one, as in
        // PgBouncer (the arm below).
        Method::Md5 if !matches!(secret, Some(Secret::Scram(_))) => {
            let salt: [u8; 4] = rand::random();
            let mut buf = room();
            build::auth_md5(&mut buf, salt);
            send(stream, &buf).await?;
            buf.clear();
            let body = read_password_msg(stream, &mut buf, true).await?;
            let resp = build::parse_password_message(&body)
                .map_err(|e| Error::ClientProtocol(e.to_string()))?;
            // Checked on the stack: no secret is copied or derived into a String.
            let ok = match secret {
                Some(Secret::Plain(p)) => md5::verify_md5_response_plain(user, p, salt, resp),
                Some(Secret::Md5(m)) => md5::verify_md5_response(m, salt, resp),
                _ => false,
            };
            if ok {
                Ok(Authenticated::default())
            } else {
                Err(Error::PasswordAuthFailed)
            }
        }
        Method::Md5 | Method::Scram => {
            // A plain secret reaches here only under scram-sha-256 (md5 took it above).
            let parsed = match &secret {
                Some(Secret::Scram(s)) => scram::ScramSecret::parse(s),
                Some(Secret::Plain(p)) => {
                    let salt: [u8; 16] = rand::random();
                    Some(scram::ScramSecret::from_password(
                        p,
                        &salt,
                        scram_iterations,
                    ))
                }
                _ => None,
            };
            // Boxed: the exchange's state inline sized every login's future, which is built and
            // copied into its box at each login whatever the method.
            Box::pin(scram_exchange(
                stream,
                &mut room(),
                parsed,
                scram_iterations,
            ))
            .await
        }
    };
    result
}

/// The uid of the process at the other end of a Unix-socket client (SO_PEERCRED).
pub fn unix_peer_uid(stream: &Stream) -> Option<u32> {
    match stream {
        Stream::Unix(s) => s.peer_cred().ok().map(|c| c.uid()),
        _ => None,
    }
}

fn check_plain(secret: &Secret, user: &str, pw: &str) -> bool {
    match secret {
        Secret::Plain(p) => scram_ct_eq(p.as_bytes(), pw.as_bytes()),
        Secret::Md5(m) => scram_ct_eq(md5::md5_secret(user, pw).as_bytes(), m.as_bytes()),
        Secret::Scram(s) => match scram::ScramSecret::parse(s) {
            Some(sec) => {
                let derived = scram::ScramSecret::from_password(pw, &sec.salt, sec.iterations);
                scram_ct_eq(&derived.stored_key, &sec.stored_key)
            }
            None => false,
        },
    }
}

fn scram_ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// SCRAM-SHA-256 as the server side. `secret` None = unknown user or unusable secret: a mock
/// exchange with a random secret that can never verify.
async fn scram_exchange(
    stream: &mut Stream,
    inbuf: &mut BytesMut,
    secret: Option<scram::ScramSecret>,
    mock_iterations: u32,
) -> Result<Authenticated> {
    let real = secret.is_some();
    let secret = secret.unwrap_or_else(|| {
        let salt: [u8; 16] = rand::random();
        let pw: [u8; 16] = rand::random();
        scram::ScramSecret::from_password(&String::from_utf8_lossy(&pw), &salt, mock_iterations)
    });
    let server_key = secret.server_key;
    let mut server = scram::ScramServer::new(secret);
    let mut out = BytesMut::with_capacity(256);
    build::auth_sasl(&mut out, &["SCRAM-SHA-256"]);
    send(stream, &out).await?;

    let body = read_password_msg(stream, inbuf, false).await?;
    let (mech, data) = build::parse_sasl_initial_response(&body)
        .map_err(|e| Error::ClientProtocol(e.to_string()))?;
    if mech != "SCRAM-SHA-256" {
        return Err(Error::ClientProtocol(format!(
            "unsupported SASL mechanism: {mech}"
        )));
    }
    let first = server
        .client_first(data.unwrap_or_default())
        .map_err(|_| Error::SaslAuthFailed)?;
    out.clear();
    build::auth_sasl_continue(&mut out, &first);
    send(stream, &out).await?;

    let body = read_password_msg(stream, inbuf, true).await?;
    let (fin, client_key) = server
        .client_final(&body)
        .map_err(|_| Error::SaslAuthFailed)?;
    if !real {
        return Err(Error::SaslAuthFailed);
    }
    out.clear();
    build::auth_sasl_final(&mut out, &fin);
    send(stream, &out).await?;
    Ok(Authenticated {
        scram_keys: Some((client_key, server_key)),
        password: None,
    })
}
