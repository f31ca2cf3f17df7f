//! Opening a server connection: TCP/Unix connect, TLS as server_tls_sslmode asks, StartupMessage,
//! the authentication the server
//! asks for (cleartext, md5, SCRAM-SHA-256 with a password or pass-through keys), then the
//! ParameterStatus/BackendKeyData burst up to the first ReadyForQuery. Also the one-shot
//! CancelRequest connection.

use bytes::BytesMut;
use postgres_protocol::message::frontend;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

use super::dns::DnsCache;
use super::{CancelTarget, ServerConn, ServerCredential, ServerTarget};
use crate::auth::{md5, scram};
use crate::config::ServerHost;
use crate::error::{Error, Result};
use crate::net::{Stream, TcpOptions};
use crate::proto::build::{self, AuthRequest};

/// Where a TCP server is: a literal address as it is; a name through the DNS cache (`None`:
/// no cache, e.g. a `[peers]` cancel), its addresses tried in turn until one answers.
async fn tcp_addrs(
    host: &str,
    port: u16,
    dns: Option<&DnsCache>,
) -> std::io::Result<Vec<std::net::SocketAddr>> {
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return Ok(vec![(ip, port).into()]);
    }
    match dns {
        Some(cache) => Ok(cache
            .resolve(host)
            .await?
            .into_iter()
            .map(|ip| (ip, port).into())
            .collect()),
        None => Ok(tokio::net::lookup_host((host, port)).await?.collect()),
    }
}

/// Connects to the first address that answers (PgBouncer tries one address per connect; falling
/// through saves a failed login round when one address of a name is dead).
async fn open(
    host: &ServerHost,
    port: u16,
    tcp: &TcpOptions,
    dns: Option<&DnsCache>,
) -> std::io::Result<(Stream, (String, u16), Option<std::net::SocketAddr>)> {
    match host {
        ServerHost::Tcp(h) => {
            let mut last = None;
            for addr in tcp_addrs(h, port, dns).await? {
                match tcp.connect(addr).await {
                    Ok(s) => {
                        let local = s
                            .local_addr()
                            .map(|a| (a.ip().to_string(), a.port()))
                            .unwrap_or_else(|_| (String::new(), 0));
                        return Ok((Stream::Tcp(s), local, Some(addr)));
                    }
                    Err(e) => last = Some(e),
                }
            }
            Err(last.unwrap_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::NotFound, "no address to connect to")
            }))
        }
        ServerHost::Unix(dir) => {
            let path = dir.join(format!(".s.PGSQL.{port}"));
            let s = UnixStream::connect(path).await?;
            Ok((Stream::Unix(s), ("unix".to_string(), 0), None))
        }
    }
}

/// SSLRequest, then the handshake if the server answers `S`. prefer/require and stricter modes
/// ask; disable and allow stay plain (libpq's allow tries plain first, and a server that insists
/// on TLS refuses the plain login, which is reported as its error).
async fn negotiate_tls(mut tcp: TcpStream, host: &str, target: &ServerTarget) -> Result<Stream> {
    use crate::config::SslMode;
    let tls = &target.tls;
    if tls.mode <= SslMode::Allow {
        return Ok(Stream::Tcp(tcp));
    }
    let mut out = BytesMut::with_capacity(8);
    frontend::ssl_request(&mut out);
    tcp.write_all(&out).await.map_err(Error::ServerIo)?;
    let answer = tcp.read_u8().await.map_err(Error::ServerIo)?;
    match answer {
        b'S' => {}
        b'N' if tls.mode == SslMode::Prefer => return Ok(Stream::Tcp(tcp)),
        b'N' => {
            return Err(Error::ServerTls(format!(
                "server {host}:{} does not support TLS",
                target.port
            )))
        }
        _ => return Err(proto_err("unexpected answer to SSLRequest")),
    }
    // Looked at only once the server agreed to TLS: settings rustls cannot honour (a TLS 1.0-only
    // server_tls_protocols) fail the handshakes they would fail in PgBouncer, and leave prefer's
    // plain fallback to servers without TLS alone.
    let config = match (&tls.config, &tls.error) {
        (Some(c), _) => c.clone(),
        (None, e) => {
            return Err(Error::ServerTls(
                e.clone().unwrap_or_else(|| "no TLS configuration".into()),
            ))
        }
    };
    let name = rustls_pki_types::ServerName::try_from(host.to_string())
        .map_err(|e| Error::ServerTls(format!("{host}: {e}")))?;
    let s = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| {
            let why = crate::net::tls::handshake_error(&e);
            Error::ServerTls(format!("{host}:{}: {why}", target.port))
        })?;
    Ok(Stream::Tls(Box::new(tokio_rustls::TlsStream::Client(s))))
}

fn proto_err(e: impl std::fmt::Display) -> Error {
    Error::ServerProtocol(e.to_string())
}

/// Connects and logs in, bounded by the target's connect timeout.
pub async fn connect(
    target: &ServerTarget,
    cred: &ServerCredential,
    max_packet: u32,
    dns: &DnsCache,
) -> Result<ServerConn> {
    match tokio::time::timeout(
        target.connect_timeout,
        connect_inner(target, cred, max_packet, dns),
    )
    .await
    {
        Ok(r) => r,
        Err(_) => {
            let addr = format!("{}:{}", target.host_text(), target.port);
            // PgBouncer's words for server_connect_timeout, which its operators grep for.
            tracing::warn!("{addr} closing because: connect timeout");
            Err(Error::ServerConnect {
                addr,
                source: std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"),
            })
        }
    }
}

async fn connect_inner(
    target: &ServerTarget,
    cred: &ServerCredential,
    max_packet: u32,
    dns: &DnsCache,
) -> Result<ServerConn> {
    let (stream, local_addr, peer) = open(&target.host, target.port, &target.tcp, Some(dns))
        .await
        .map_err(|source| Error::ServerConnect {
            addr: format!("{}:{}", target.host_text(), target.port),
            source,
        })?;
    let stream = match (stream, &target.host) {
        (Stream::Tcp(tcp), ServerHost::Tcp(host)) => negotiate_tls(tcp, host, target).await?,
        (other, _) => other,
    };
    let mut conn = ServerConn::new(
        stream,
        CancelTarget {
            host: target.host.clone(),
            port: target.port,
            addr: peer,
            pid: 0,
            key: 0,
            inflight: Default::default(),
        },
        local_addr,
    );
    let mut out = BytesMut::with_capacity(256);
    let mut params: Vec<(&str, &str)> = vec![
        ("user", target.user.as_str()),
        ("database", target.dbname.as_str()),
    ];
    for (k, v) in &target.startup_params {
        params.push((k.as_str(), v.as_str()));
    }
    frontend::startup_message(params, &mut out).map_err(proto_err)?;
    conn.stream.send(&out).await.map_err(Error::ServerIo)?;

    let mut sasl: Option<scram::ScramClient> = None;
    loop {
        let frame = conn.read_frame(max_packet).await?;
        match frame.tag {
            b'R' => {
                let req = build::parse_auth_request(&frame.body).map_err(proto_err)?;
                out.clear();
                match req {
                    AuthRequest::Ok => continue,
                    AuthRequest::Cleartext => match cred {
                        ServerCredential::Password(p) => {
                            frontend::password_message(p.as_bytes(), &mut out).map_err(proto_err)?
                        }
                        _ => return Err(Error::ServerAuth("wrong password type".into())),
                    },
                    AuthRequest::Md5 { salt } => {
                        let secret = match cred {
                            ServerCredential::Password(p) => md5::md5_secret(&target.user, p),
                            ServerCredential::Md5Secret(s) => s.clone(),
                            _ => return Err(Error::ServerAuth("wrong password type".into())),
                        };
                        let resp = md5::md5_response_from_secret(&secret, salt);
                        frontend::password_message(resp.as_bytes(), &mut out).map_err(proto_err)?;
                    }
                    AuthRequest::Sasl { mechanisms } => {
                        if !mechanisms.contains(&"SCRAM-SHA-256") {
                            return Err(Error::ServerAuth(
                                "none of the server's SASL authentication mechanisms are supported"
                                    .into(),
                            ));
                        }
                        let c = match cred {
                            ServerCredential::Password(p) => {
                                scram::ScramCredential::Password(p.clone())
                            }
                            ServerCredential::ScramKeys {
                                client_key,
                                server_key,
                            } => scram::ScramCredential::Keys {
                                client_key: *client_key,
                                server_key: *server_key,
                            },
                            _ => return Err(Error::ServerAuth("wrong password type".into())),
                        };
                        let mut client = scram::ScramClient::new(c);
                        let first = client.client_first();
                        frontend::sasl_initial_response("SCRAM-SHA-256", &first, &mut out)
                            .map_err(proto_err)?;
                        sasl = Some(client);
                    }
                    AuthRequest::SaslContinue(data) => {
                        let client = sasl
                            .as_mut()
                            .ok_or_else(|| proto_err("unexpected SASL continue"))?;
                        let fin = client
                            .server_first(data)
                            .map_err(|e| Error::ServerAuth(format!("SCRAM: {e}")))?;
                        frontend::sasl_response(&fin, &mut out).map_err(proto_err)?;
                    }
                    AuthRequest::SaslFinal(data) => {
                        let client = sasl
                            .as_mut()
                            .ok_or_else(|| proto_err("unexpected SASL final"))?;
                        client.server_final(data).map_err(|_| {
                            Error::ServerAuth("failed to verify server signature".into())
                        })?;
                        continue;
                    }
                    AuthRequest::Other(code) => {
                        return Err(Error::ServerAuth(format!(
                            "unsupported authentication method {code}"
                        )))
                    }
                }
                conn.stream.send(&out).await.map_err(Error::ServerIo)?;
            }
            b'E' => {
                let fields = build::parse_error_fields(&frame.body).map_err(proto_err)?;
                return Err(Error::ServerLogin(Box::new(fields)));
            }
            b'S' => {
                let (k, v) = build::parse_parameter_status(&frame.body).map_err(proto_err)?;
                let (k, v) = (k.to_string(), v.to_string());
                conn.set_param(&k, &v);
            }
            b'K' => {
                let (pid, key) = build::parse_backend_key_data(&frame.body).map_err(proto_err)?;
                let cancel = std::sync::Arc::make_mut(&mut conn.cancel);
                cancel.pid = pid;
                cancel.key = key;
            }
            b'Z' => {
                conn.tx_status = frame.body.first().copied().unwrap_or(b'I');
                break;
            }
            // NoticeResponse, NegotiateProtocolVersion: nothing to do.
            _ => {}
        }
    }
    if let Some(q) = target.connect_query.as_deref() {
        if let Some(err) = conn.run_internal(q, max_packet).await? {
            tracing::warn!(
                server = conn.id,
                "connect_query failed: {}",
                crate::logsafe::Clean(&err.message)
            );
        }
    }
    let tsa = target.target_session_attrs;
    if !tsa.accepts(
        conn.param("in_hot_standby"),
        conn.param("default_transaction_read_only"),
    ) {
        let addr = format!("{}:{}", target.host_text(), target.port);
        // PgBouncer's words, which its suite and operators grep for.
        tracing::info!(
            "S-{} {}/{}@{addr} closing because: server does not satisfy target_session_attrs (age=0s)",
            conn.id,
            crate::logsafe::Clean(&target.dbname),
            crate::logsafe::Clean(&target.user)
        );
        return Err(Error::TargetSessionAttrs { addr });
    }
    Ok(conn)
}

/// Opens the connection a CancelRequest will travel on.
/// It goes to the very address the server was reached at: another address of the same name is
/// another server.
pub async fn open_cancel(target: &CancelTarget, tcp: &TcpOptions) -> std::io::Result<Stream> {
    if let Some(addr) = target.addr {
        let s = tcp.connect(addr).await?;
        return Ok(Stream::Tcp(s));
    }
    Ok(open(&target.host, target.port, tcp, None).await?.0)
}

/// Sends a CancelRequest with the server's real key on `stream`, then waits (bounded) for the
/// server to close it.
pub async fn send_cancel(mut stream: Stream, target: &CancelTarget) -> std::io::Result<()> {
    let mut out = BytesMut::with_capacity(16);
    frontend::cancel_request(target.pid as i32, target.key as i32, &mut out);
    stream.write_all(&out).await?;
    let mut b = [0u8; 1];
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        tokio::io::AsyncReadExt::read(&mut stream, &mut b),
    )
    .await;
    Ok(())
}
