//! The first packets of a client connection: SSL/GSS negotiation (`S` and the TLS handshake when
//! client TLS is configured, else `N`), CancelRequest, and the StartupMessage with its parameters
//! checked the PgBouncer way.

use std::sync::Arc;

use bytes::BytesMut;
use tokio_rustls::rustls::ServerConfig;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::net::{self, ReadError, Stream};
use crate::proto::startup::{self, StartupPacket};

/// Startup packets are small; PgBouncer caps them near its packet buffer.
const MAX_STARTUP_LEN: u32 = 10_000;

/// What a new connection asked for.
pub enum Opening {
    /// A session: the startup parameters.
    Session(Vec<(String, String)>),
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

/// The checked contents of a StartupMessage.
#[derive(Debug, Default, Clone)]
pub struct StartupParams {
    pub user: String,
    pub database: String,
    /// Tracked parameters the client asked for (name as given, value).
    pub tracked: Vec<(String, String)>,
    /// `_pq_.*` protocol options we must report as unrecognized.
    pub unrecognized_protocol_options: Vec<String>,
    /// `replication=` as the client sent it, when it asks for a replication connection
    /// (`database`, or a true boolean); `None` for a normal session.
    pub replication: Option<String>,
    /// Replication connections only: `options` and other keys a pooled session could not take,
    /// handed to the dedicated server as they are (PgBouncer does the same).
    pub passthrough: Vec<(String, String)>,
}

/// `replication=` values that ask for a replication connection.
fn wants_replication(v: &str) -> bool {
    matches!(
        v.to_ascii_lowercase().as_str(),
        "database" | "true" | "on" | "yes" | "1"
    )
}

/// PgBouncer's fixed set of tracked parameters.
const TRACKED: [&str; 5] = [
    "client_encoding",
    "DateStyle",
    "TimeZone",
    "standard_conforming_strings",
    "application_name",
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
pub fn check_params(cfg: &Config, raw: Vec<(String, String)>) -> Result<StartupParams> {
    let tracked = tracked_names(cfg);
    let ignored = &cfg.general.ignore_startup_parameters;
    let is_tracked = |k: &str| tracked.clone().any(|t| t.eq_ignore_ascii_case(k));
    let is_ignored = |k: &str| ignored.iter().any(|i| i.eq_ignore_ascii_case(k));
    let mut out = StartupParams::default();
    // A replication connection has a server of its own: nothing needs to match a pool.
    let replication = raw
        .iter()
        .any(|(k, v)| k == "replication" && wants_replication(v));
    for (k, v) in raw {
        match k.as_str() {
            "user" | "database" | "replication" => {}
            _ if replication && !k.starts_with("_pq_.") && !is_tracked(&k) => {
                out.passthrough.push((k, v));
                continue;
            }
            _ => {}
        }
        match k.as_str() {
            "user" => out.user = v,
            "database" => out.database = v,
            "replication" => {
                // PostgreSQL's spellings: `database` (logical) or a boolean (physical).
                match v.to_ascii_lowercase().as_str() {
                    "false" | "off" | "no" | "0" => {}
                    _ if wants_replication(&v) => out.replication = Some(v),
                    _ => return Err(Error::UnsupportedStartupParameter(k)),
                }
            }
            "options" => {
                let opts = match startup::parse_options(&v) {
                    Ok(o) => o,
                    Err(_) if is_ignored("options") => continue,
                    Err(_) => return Err(Error::UnsupportedOptions),
                };
                for (ok, ov) in opts {
                    if is_tracked(&ok) {
                        out.tracked.push((ok, ov));
                    } else if !is_ignored(&ok) && !is_ignored("options") {
                        return Err(Error::UnsupportedOptionsParameter(ok));
                    }
                }
            }
            _ if k.starts_with("_pq_.") => out.unrecognized_protocol_options.push(k),
            _ if is_tracked(&k) => out.tracked.push((k, v)),
            _ if is_ignored(&k) => {}
            _ => return Err(Error::UnsupportedStartupParameter(k)),
        }
    }
    if out.user.is_empty() {
        return Err(Error::NoUsername);
    }
    if out.database.is_empty() {
        out.database = out.user.clone();
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

    fn p(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn known_tracked_and_ignored_params() {
        let mut cfg = Config::default();
        cfg.general.ignore_startup_parameters = vec!["extra_float_digits".into()];
        let s = check_params(
            &cfg,
            p(&[
                ("user", "u"),
                ("application_name", "x"),
                ("extra_float_digits", "3"),
                ("DateStyle", "ISO"),
            ]),
        )
        .unwrap();
        assert_eq!(s.database, "u");
        assert_eq!(s.tracked.len(), 2);
        let e = check_params(&cfg, p(&[("user", "u"), ("search_path", "a")])).unwrap_err();
        assert_eq!(e.to_string(), "unsupported startup parameter: search_path");
        assert!(matches!(
            check_params(&cfg, p(&[("database", "d")])),
            Err(Error::NoUsername)
        ));
    }

    #[test]
    fn options_may_carry_tracked_params_only() {
        let cfg = Config::default();
        let s = check_params(&cfg, p(&[("user", "u"), ("options", "-c TimeZone=UTC")])).unwrap();
        assert_eq!(s.tracked, p(&[("TimeZone", "UTC")]));
        let e =
            check_params(&cfg, p(&[("user", "u"), ("options", "-c work_mem=1MB")])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "unsupported startup parameter in options: work_mem"
        );
    }

    #[test]
    fn replication_connections_pass_options_through() {
        let cfg = Config::default();
        let s = check_params(
            &cfg,
            p(&[
                ("options", "-c enable_seqscan=off"),
                ("user", "u"),
                ("replication", "database"),
                ("application_name", "abc"),
            ]),
        )
        .unwrap();
        assert_eq!(s.replication.as_deref(), Some("database"));
        assert_eq!(s.passthrough, p(&[("options", "-c enable_seqscan=off")]));
        assert_eq!(s.tracked, p(&[("application_name", "abc")]));
        let s = check_params(&cfg, p(&[("user", "u"), ("replication", "off")])).unwrap();
        assert!(s.replication.is_none() && s.passthrough.is_empty());
        let e = check_params(&cfg, p(&[("user", "u"), ("replication", "maybe")])).unwrap_err();
        assert_eq!(e.to_string(), "unsupported startup parameter: replication");
    }
}
