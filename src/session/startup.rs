//! The first packets of a client connection: SSL/GSS negotiation (`S` and the TLS handshake when
//! client TLS is configured, else `N`), CancelRequest, and the StartupMessage with its parameters
//! checked the PgBouncer way.

use std::sync::Arc;

use bytes::BytesMut;
use tokio_rustls::rustls::ServerConfig;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::net::{self, ReadError, Stream};
use crate::proto::startup::{self, RawParams, StartupPacket};
use std::borrow::Cow;

/// Startup packets are small; PgBouncer caps them near its packet buffer.
const MAX_STARTUP_LEN: u32 = 10_000;

/// What a new connection asked for.
pub enum Opening {
    /// A session: the startup parameters.
    Session(RawParams),
    /// A cancel request for the client holding this key.
    Cancel { pid: u32, key: u32 },
    /// An SSLRequest we will accept: the caller answers `S`, runs the handshake
    /// ([`accept_tls`]) and reads the opening again over TLS.
    Tls,
}

/// Reads packets until a StartupMessage or CancelRequest arrives, or an SSLRequest that
/// `tls_offered` says we accept. The buffer lives only as long as this call: nothing a client
/// sent after its SSLRequest may outlive the switch to TLS.
pub async fn read_opening(stream: &mut Stream, tls_offered: bool) -> Result<Opening> {
    // READ_ROOM: any smaller and the first read grows it (a second allocation and a copy).
    let mut buf = BytesMut::with_capacity(crate::net::frame::READ_ROOM);
    loop {
        let packet = match net::read_startup(stream, &mut buf, MAX_STARTUP_LEN).await {
            Ok(p) => p,
            Err(ReadError::Io(e)) => return Err(Error::ClientIo(e)),
            Err(ReadError::Eof) => return Err(Error::ClientGone),
            Err(ReadError::Frame(e)) => {
                return Err(Error::ClientProtocol(format!("bad startup packet: {e}")))
            }
        };
        match packet {
            p @ (StartupPacket::SslRequest | StartupPacket::GssEncRequest) => {
                // Bytes sent before the handshake would be read as if they came over TLS
                // (CVE-2021-23222's class of bug): refuse them.
                if !buf.is_empty() {
                    return Err(Error::ClientProtocol(
                        "data after SSL/GSS request".to_string(),
                    ));
                }
                // Empty, so the next read gets all of the buffer's room back: the few bytes the
                // request took from its front made the room short, and the read grew it.
                let _ = buf.try_reclaim(crate::net::frame::READ_ROOM);
                if matches!(p, StartupPacket::SslRequest) && tls_offered && !stream.is_tls() {
                    return Ok(Opening::Tls);
                }
                stream.send(b"N").await.map_err(Error::ClientIo)?;
            }
            StartupPacket::Cancel { pid, key } => return Ok(Opening::Cancel { pid, key }),
            StartupPacket::V2 => return Err(Error::OldProtocol),
            StartupPacket::Startup { params, .. } => return Ok(Opening::Session(params)),
        }
    }
}

/// Answers `S` and runs the server side of the handshake. A plain-TCP stream only (the caller
/// checks); on failure the socket is gone, so the error is not reported to the client.
pub async fn accept_tls(stream: Stream, cfg: Arc<ServerConfig>) -> Result<Stream> {
    let Stream::Tcp(mut tcp) = stream else {
        return Err(Error::ClientProtocol("TLS over this socket".to_string()));
    };
    tokio::io::AsyncWriteExt::write_all(&mut tcp, b"S")
        .await
        .map_err(Error::ClientIo)?;
    let tls = tokio_rustls::TlsAcceptor::from(cfg)
        .accept(tcp)
        .await
        .map_err(|e| Error::ClientTls(e.to_string()))?;
    Ok(Stream::Tls(Box::new(tokio_rustls::TlsStream::Server(tls))))
}

/// The checked contents of a StartupMessage, borrowed from the packet where they can be.
#[derive(Debug, Default, Clone)]
pub struct StartupParams<'a> {
    pub user: &'a str,
    pub database: &'a str,
    /// Tracked parameters the client asked for (name as given, value); owned only when they
    /// came out of `options` or were changed (application_name_add_host).
    pub tracked: Vec<(Cow<'a, str>, Cow<'a, str>)>,
    /// `_pq_.*` protocol options we must report as unrecognized.
    pub unrecognized_protocol_options: Vec<&'a str>,
    /// `replication=` as the client sent it, when it asks for a replication connection
    /// (`database`, or a true boolean); `None` for a normal session.
    pub replication: Option<&'a str>,
    /// Replication connections only: `options` and other keys a pooled session could not take,
    /// handed to the dedicated server as they are (PgBouncer does the same).
    pub passthrough: Vec<(&'a str, &'a str)>,
}

/// `replication=` values that ask for a replication connection.
fn wants_replication(v: &str) -> bool {
    ["database", "true", "on", "yes", "1"]
        .iter()
        .any(|w| v.eq_ignore_ascii_case(w))
}

/// PgBouncer's fixed set of tracked parameters. The last two are in PgBouncer's set since 1.26:
/// without them one client's `SET default_transaction_read_only = on` or `SET SESSION
/// AUTHORIZATION` stays on the server for the next client of transaction pooling. PostgreSQL
/// reports both (default_transaction_read_only since 14), so following them costs nothing
/// until a client changes one.
const TRACKED: [&str; 7] = [
    "client_encoding",
    "DateStyle",
    "TimeZone",
    "standard_conforming_strings",
    "application_name",
    "default_transaction_read_only",
    "session_authorization",
];

/// The tracked parameter names for this config: PgBouncer's fixed set plus track_extra_parameters
/// (each name once, first spelling wins).
pub fn tracked_names(cfg: &Config) -> impl Iterator<Item = &str> + Clone {
    // An iterator, not a Vec: this runs twice per login, and the list is a constant plus a
    // usually empty config list.
    let extras = &cfg.general.track_extra_parameters;
    TRACKED
        .into_iter()
        .chain(extras.iter().enumerate().filter_map(|(i, extra)| {
            let seen = TRACKED.iter().any(|n| n.eq_ignore_ascii_case(extra))
                || extras[..i].iter().any(|n| n.eq_ignore_ascii_case(extra));
            (!seen).then_some(extra.as_str())
        }))
}

/// Validates startup parameters: known, tracked or ignored keys only (PgBouncer's rule).
pub fn check_params<'a>(cfg: &Config, raw: &'a RawParams) -> Result<StartupParams<'a>> {
    let tracked = tracked_names(cfg);
    let ignored = &cfg.general.ignore_startup_parameters;
    let is_tracked = |k: &str| tracked.clone().any(|t| t.eq_ignore_ascii_case(k));
    let is_ignored = |k: &str| ignored.iter().any(|i| i.eq_ignore_ascii_case(k));
    let mut out = StartupParams::default();
    // A replication connection has a server of its own: nothing needs to match a pool.
    let replication = raw
        .iter()
        .any(|(k, v)| k == "replication" && wants_replication(v));
    for (k, v) in raw.iter() {
        match k {
            "user" | "database" | "replication" => {}
            _ if replication && !k.starts_with("_pq_.") && !is_tracked(k) => {
                out.passthrough.push((k, v));
                continue;
            }
            _ => {}
        }
        match k {
            "user" => out.user = v,
            "database" => out.database = v,
            "replication" => {
                // PostgreSQL's spellings: `database` (logical) or a boolean (physical).
                let off = ["false", "off", "no", "0"]
                    .iter()
                    .any(|w| v.eq_ignore_ascii_case(w));
                if wants_replication(v) {
                    out.replication = Some(v);
                } else if !off {
                    return Err(Error::UnsupportedStartupParameter(k.to_string()));
                }
            }
            "options" => {
                let opts = match startup::parse_options(v) {
                    Ok(o) => o,
                    Err(_) if is_ignored("options") => continue,
                    Err(_) => return Err(Error::UnsupportedOptions),
                };
                for (ok, ov) in opts {
                    if is_tracked(&ok) {
                        out.tracked.push((Cow::Owned(ok), Cow::Owned(ov)));
                    } else if !is_ignored(&ok) && !is_ignored("options") {
                        return Err(Error::UnsupportedOptionsParameter(ok));
                    }
                }
            }
            _ if k.starts_with("_pq_.") => out.unrecognized_protocol_options.push(k),
            _ if is_tracked(k) => out.tracked.push((Cow::Borrowed(k), Cow::Borrowed(v))),
            _ if is_ignored(k) => {}
            _ => return Err(Error::UnsupportedStartupParameter(k.to_string())),
        }
    }
    if out.user.is_empty() {
        return Err(Error::NoUsername);
    }
    if out.database.is_empty() {
        out.database = out.user;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracked_names_are_the_fixed_set_then_new_extras_once() {
        let mut cfg = Config::default();
        cfg.general.track_extra_parameters.clear();
        assert_eq!(tracked_names(&cfg).collect::<Vec<_>>(), TRACKED);
        cfg.general.track_extra_parameters = vec![
            "search_path".into(),
            "timezone".into(),
            "Search_Path".into(),
            "work_mem".into(),
        ];
        let mut want = TRACKED.to_vec();
        want.extend(["search_path", "work_mem"]);
        assert_eq!(tracked_names(&cfg).collect::<Vec<_>>(), want);
    }

    fn p(v: &[(&str, &str)]) -> RawParams {
        RawParams::from_pairs(v.iter().copied())
    }

    fn pairs<'a>(v: &'a [(Cow<'a, str>, Cow<'a, str>)]) -> Vec<(&'a str, &'a str)> {
        v.iter().map(|(a, b)| (&**a, &**b)).collect()
    }

    #[test]
    fn known_tracked_and_ignored_params() {
        let mut cfg = Config::default();
        cfg.general.ignore_startup_parameters = vec!["extra_float_digits".into()];
        let raw = p(&[
            ("user", "u"),
            ("application_name", "x"),
            ("extra_float_digits", "3"),
            ("DateStyle", "ISO"),
        ]);
        let s = check_params(&cfg, &raw).unwrap();
        assert_eq!(s.database, "u");
        assert_eq!(
            pairs(&s.tracked),
            [("application_name", "x"), ("DateStyle", "ISO")]
        );
        let raw = p(&[("user", "u"), ("search_path", "a")]);
        let e = check_params(&cfg, &raw).unwrap_err();
        assert_eq!(e.to_string(), "unsupported startup parameter: search_path");
        let raw = p(&[("database", "d")]);
        assert!(matches!(check_params(&cfg, &raw), Err(Error::NoUsername)));
    }

    #[test]
    fn options_may_carry_tracked_params_only() {
        let cfg = Config::default();
        let raw = p(&[("user", "u"), ("options", "-c TimeZone=UTC")]);
        let s = check_params(&cfg, &raw).unwrap();
        assert_eq!(pairs(&s.tracked), [("TimeZone", "UTC")]);
        let raw = p(&[("user", "u"), ("options", "-c work_mem=1MB")]);
        let e = check_params(&cfg, &raw).unwrap_err();
        assert_eq!(
            e.to_string(),
            "unsupported startup parameter in options: work_mem"
        );
    }

    #[test]
    fn replication_connections_pass_options_through() {
        let cfg = Config::default();
        let raw = p(&[
            ("options", "-c enable_seqscan=off"),
            ("user", "u"),
            ("replication", "database"),
            ("application_name", "abc"),
        ]);
        let s = check_params(&cfg, &raw).unwrap();
        assert_eq!(s.replication, Some("database"));
        assert_eq!(s.passthrough, [("options", "-c enable_seqscan=off")]);
        assert_eq!(pairs(&s.tracked), [("application_name", "abc")]);
        let raw = p(&[("user", "u"), ("replication", "off")]);
        let s = check_params(&cfg, &raw).unwrap();
        assert!(s.replication.is_none() && s.passthrough.is_empty());
        let raw = p(&[("user", "u"), ("replication", "OFF")]);
        assert!(check_params(&cfg, &raw).unwrap().replication.is_none());
        let raw = p(&[("user", "u"), ("replication", "maybe")]);
        let e = check_params(&cfg, &raw).unwrap_err();
        assert_eq!(e.to_string(), "unsupported startup parameter: replication");
    }
}
