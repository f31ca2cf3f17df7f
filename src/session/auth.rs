//! Authenticating a client against the auth_file: trust, any, plain, md5 and SCRAM-SHA-256
//! (md5 falls back to SCRAM for SCRAM-stored users, as PgBouncer does). Unknown users get a
//! mock exchange that always fails, so they look exactly like wrong passwords.

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::auth::{md5, scram};
use crate::config::{AuthType, Config, Secret};
use crate::error::{Error, Result};
use crate::net::Stream;
use crate::proto::{self, build};

/// Login messages from a client are small.
const MAX_AUTH_MSG: u32 = 64 * 1024;

/// What a successful login leaves behind.
#[derive(Default)]
pub struct Authenticated {
    /// SCRAM keys recovered from the client's proof (for SCRAM pass-through to the server).
    pub scram_keys: Option<([u8; 32], [u8; 32])>,
}

async fn send(stream: &mut Stream, buf: &BytesMut) -> Result<()> {
    stream.write_all(buf).await.map_err(Error::ClientIo)
}

async fn read_password_msg(stream: &mut Stream, buf: &mut BytesMut) -> Result<bytes::Bytes> {
    loop {
        match proto::read_frame(buf, MAX_AUTH_MSG) {
            Ok(Some(f)) if f.tag == b'p' => return Ok(f.body),
            Ok(Some(f)) => {
                return Err(Error::ClientProtocol(format!(
                    "expected password message, got '{}'",
                    f.tag as char
                )))
            }
            Ok(None) => {}
            Err(e) => return Err(Error::ClientProtocol(e.to_string())),
        }
        if stream.read_buf(buf).await.map_err(Error::ClientIo)? == 0 {
            return Err(Error::ClientGone);
        }
    }
}

/// Runs the exchange `auth_type` calls for. Sends AuthenticationOk on success.
pub async fn authenticate(stream: &mut Stream, cfg: &Config, user: &str) -> Result<Authenticated> {
    let secret = cfg.userlist.get(user).cloned();
    let mut out = BytesMut::with_capacity(128);
    let mut inbuf = BytesMut::with_capacity(256);
    let result = match cfg.general.auth_type {
        AuthType::Any => Ok(Authenticated::default()),
        // PgBouncer 1.23+: trust skips the password, not the lookup. A user known only from
        // `[users]` (settings, no credentials) gets the mock login and so fails like a stranger.
        AuthType::Trust => match secret {
            Some(_) => Ok(Authenticated::default()),
            None => Err(Error::TrustAuthFailed),
        },
        AuthType::Plain => {
            build::auth_cleartext(&mut out);
            send(stream, &out).await?;
            let body = read_password_msg(stream, &mut inbuf).await?;
            let pw = build::parse_password_message(&body)
                .map_err(|e| Error::ClientProtocol(e.to_string()))?;
            let pw = String::from_utf8_lossy(pw);
            match &secret {
                Some(s) if check_plain(s, user, &pw) => Ok(Authenticated::default()),
                _ => Err(Error::PasswordAuthFailed),
            }
        }
        AuthType::Md5 => match &secret {
            Some(Secret::Scram(s)) => {
                scram_exchange(stream, &mut inbuf, scram::ScramSecret::parse(s)).await
            }
            _ => {
                let salt: [u8; 4] = rand::random();
                build::auth_md5(&mut out, salt);
                send(stream, &out).await?;
                let body = read_password_msg(stream, &mut inbuf).await?;
                let resp = build::parse_password_message(&body)
                    .map_err(|e| Error::ClientProtocol(e.to_string()))?;
                let stored = match &secret {
                    Some(Secret::Plain(p)) => Some(md5::md5_secret(user, p)),
                    Some(Secret::Md5(m)) => Some(m.clone()),
                    _ => None,
                };
                match stored {
                    Some(m) if md5::verify_md5_response(&m, salt, resp) => {
                        Ok(Authenticated::default())
                    }
                    _ => Err(Error::PasswordAuthFailed),
                }
            }
        },
        // PgBouncer's login_as_unix_peer: a known user, over the Unix socket, from the OS user
        // of the same name.
        AuthType::Peer => match (secret, unix_peer_uid(stream)) {
            (Some(_), Some(uid)) if crate::sys::user_name(uid).as_deref() == Some(user) => {
                Ok(Authenticated::default())
            }
            _ => Err(Error::UnixSocketLoginRejected),
        },
        AuthType::ScramSha256 => {
            let parsed = match &secret {
                Some(Secret::Scram(s)) => scram::ScramSecret::parse(s),
                Some(Secret::Plain(p)) => {
                    let salt: [u8; 16] = rand::random();
                    Some(scram::ScramSecret::from_password(p, &salt, 4096))
                }
                _ => None,
            };
            scram_exchange(stream, &mut inbuf, parsed).await
        }
    };
    let auth = result?;
    out.clear();
    build::auth_ok(&mut out);
    send(stream, &out).await?;
    Ok(auth)
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
) -> Result<Authenticated> {
    let real = secret.is_some();
    let secret = secret.unwrap_or_else(|| {
        let salt: [u8; 16] = rand::random();
        let pw: [u8; 16] = rand::random();
        scram::ScramSecret::from_password(&String::from_utf8_lossy(&pw), &salt, 4096)
    });
    let server_key = secret.server_key;
    let mut server = scram::ScramServer::new(secret);
    let mut out = BytesMut::with_capacity(256);
    build::auth_sasl(&mut out, &["SCRAM-SHA-256"]);
    send(stream, &out).await?;

    let body = read_password_msg(stream, inbuf).await?;
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

    let body = read_password_msg(stream, inbuf).await?;
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
    })
}
