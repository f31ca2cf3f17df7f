//! A raw PostgreSQL-protocol client for the admin console tests: it shows what tokio-postgres
//! hides (RowDescription type OIDs, the exact ErrorResponse fields, NOTICEs, command tags, and
//! whether the server closed the connection), and can send messages a driver would not.
//!
//! Also a tiny HTTP/1.1 GET client and a Prometheus text-format parser for tests/metrics.rs.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Bound on any single wait for the pooler.
const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// An ErrorResponse or NoticeResponse.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fields {
    pub severity: String,
    pub code: String,
    pub message: String,
    pub detail: Option<String>,
}

/// Everything the server said in answer to one Query, up to ReadyForQuery (or EOF).
#[derive(Debug, Clone, Default)]
pub struct Answer {
    /// RowDescription: (name, type OID).
    pub columns: Vec<(String, u32)>,
    pub rows: Vec<Vec<Option<String>>>,
    /// CommandComplete tag.
    pub tag: Option<String>,
    pub error: Option<Fields>,
    pub notices: Vec<Fields>,
    /// The connection closed instead of ReadyForQuery.
    pub closed: bool,
}

impl Answer {
    /// Column names only.
    pub fn names(&self) -> Vec<&str> {
        self.columns.iter().map(|(n, _)| n.as_str()).collect()
    }

    /// Index of a column, panicking with the column list if absent.
    pub fn col(&self, name: &str) -> usize {
        self.columns
            .iter()
            .position(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no column {name} in {:?}", self.names()))
    }

    /// The rows whose column `key` equals `value`.
    pub fn rows_where(&self, key: &str, value: &str) -> Vec<&Vec<Option<String>>> {
        let i = self.col(key);
        self.rows
            .iter()
            .filter(|r| r[i].as_deref() == Some(value))
            .collect()
    }

    /// Column `name` of the single row whose `key` is `value`.
    pub fn get(&self, key: &str, value: &str, name: &str) -> Option<String> {
        let rows = self.rows_where(key, value);
        assert!(rows.len() <= 1, "several rows with {key}={value}");
        rows.first().and_then(|r| r[self.col(name)].clone())
    }

    /// Like `get`, parsed as a number (panics when absent or not a number).
    pub fn num(&self, key: &str, value: &str, name: &str) -> i64 {
        let v = self
            .get(key, value, name)
            .unwrap_or_else(|| panic!("no {name} for {key}={value}: {:?}", self.rows));
        v.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number"))
    }

    /// Panics unless the answer is a result set with tag SHOW.
    pub fn expect_show(&self) -> &Self {
        assert!(self.error.is_none(), "unexpected error {:?}", self.error);
        assert_eq!(self.tag.as_deref(), Some("SHOW"), "tag");
        self
    }
}

/// One frame: (tag, body).
type Frame = (u8, BytesMut);

/// A raw connection.
pub struct Raw {
    stream: TcpStream,
    buf: BytesMut,
    /// ParameterStatus pairs of the welcome.
    pub params: Vec<(String, String)>,
    /// BackendKeyData.
    pub key: Option<(u32, u32)>,
    /// NoticeResponses of the login (login_notify_message).
    pub notices: Vec<Fields>,
}

fn cstr(body: &mut BytesMut) -> String {
    let end = body.iter().position(|b| *b == 0).unwrap_or(body.len());
    let s = String::from_utf8_lossy(&body[..end]).into_owned();
    body.advance((end + 1).min(body.len()));
    s
}

fn fields(mut body: BytesMut) -> Fields {
    let mut f = Fields::default();
    while !body.is_empty() {
        let t = body.get_u8();
        if t == 0 {
            break;
        }
        let v = cstr(&mut body);
        match t {
            b'S' => f.severity = v,
            b'C' => f.code = v,
            b'M' => f.message = v,
            b'D' => f.detail = Some(v),
            _ => {}
        }
    }
    f
}

impl Raw {
    /// Connects and logs in (cleartext or md5 password). Err = the FATAL the server sent.
    pub async fn connect(port: u16, user: &str, password: &str, db: &str) -> Result<Raw, Fields> {
        Raw::connect_with(port, user, password, db, &[]).await
    }

    /// The client side's port of the connection.
    pub fn local_port(&self) -> u16 {
        self.stream.local_addr().expect("local address").port()
    }

    /// Like `connect`, with `extra` startup parameters (e.g. `replication`).
    pub async fn connect_with(
        port: u16,
        user: &str,
        password: &str,
        db: &str,
        extra: &[(&str, &str)],
    ) -> Result<Raw, Fields> {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect to the pooler");
        let mut raw = Raw {
            stream,
            buf: BytesMut::new(),
            params: Vec::new(),
            key: None,
            notices: Vec::new(),
        };
        let mut out = BytesMut::new();
        postgres_protocol::message::frontend::startup_message(
            [("user", user), ("database", db)]
                .into_iter()
                .chain(extra.iter().copied()),
            &mut out,
        )
        .expect("startup message");
        raw.send(&out).await;
        loop {
            let Some((tag, mut body)) = raw.frame().await else {
                return Err(Fields {
                    message: "connection closed during login".into(),
                    ..Default::default()
                });
            };
            match tag {
                b'R' => {
                    let code = body.get_i32();
                    let pw = match code {
                        0 => continue,
                        3 => password.to_string(),
                        5 => {
                            let salt = [body[0], body[1], body[2], body[3]];
                            postgres_protocol::authentication::md5_hash(
                                user.as_bytes(),
                                password.as_bytes(),
                                salt,
                            )
                        }
                        other => panic!("unsupported auth request {other}"),
                    };
                    let mut out = BytesMut::new();
                    postgres_protocol::message::frontend::password_message(pw.as_bytes(), &mut out)
                        .expect("password message");
                    raw.send(&out).await;
                }
                b'S' => {
                    let k = cstr(&mut body);
                    let v = cstr(&mut body);
                    raw.params.push((k, v));
                }
                b'K' => raw.key = Some((body.get_u32(), body.get_u32())),
                b'N' => raw.notices.push(fields(body)),
                b'E' => return Err(fields(body)),
                b'Z' => return Ok(raw),
                _ => {}
            }
        }
    }

    /// Sends raw bytes.
    pub async fn send(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes).await;
    }

    /// The next frame, or None at EOF.
    pub async fn frame(&mut self) -> Option<Frame> {
        loop {
            if self.buf.len() >= 5 {
                let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]);
                let total = 1 + len as usize;
                if self.buf.len() >= total {
                    let mut f = self.buf.split_to(total);
                    let tag = f.get_u8();
                    f.advance(4);
                    return Some((tag, f));
                }
            }
            let read = tokio::time::timeout(IO_TIMEOUT, self.stream.read_buf(&mut self.buf))
                .await
                .expect("the pooler answered in time");
            match read {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    /// Sends a simple Query and collects the answer.
    pub async fn query(&mut self, sql: &str) -> Answer {
        let mut out = BytesMut::new();
        postgres_protocol::message::frontend::query(sql, &mut out).expect("query message");
        self.send(&out).await;
        self.answer().await
    }

    /// Collects frames up to ReadyForQuery or EOF.
    pub async fn answer(&mut self) -> Answer {
        let mut a = Answer::default();
        loop {
            let Some((tag, mut body)) = self.frame().await else {
                a.closed = true;
                return a;
            };
            match tag {
                b'T' => {
                    let n = body.get_i16();
                    for _ in 0..n {
                        let name = cstr(&mut body);
                        body.advance(6);
                        let oid = body.get_u32();
                        body.advance(8);
                        a.columns.push((name, oid));
                    }
                }
                b'D' => {
                    let n = body.get_i16();
                    let mut row = Vec::new();
                    for _ in 0..n {
                        let len = body.get_i32();
                        if len < 0 {
                            row.push(None);
                        } else {
                            let v = body.split_to(len as usize);
                            row.push(Some(String::from_utf8_lossy(&v).into_owned()));
                        }
                    }
                    a.rows.push(row);
                }
                b'C' => a.tag = Some(cstr(&mut body)),
                b'E' => a.error = Some(fields(body)),
                b'N' => a.notices.push(fields(body)),
                b'Z' => return a,
                _ => {}
            }
        }
    }

    /// Sends a Parse+Sync (extended protocol) and collects the answer.
    pub async fn parse(&mut self, sql: &str) -> Answer {
        let mut out = BytesMut::new();
        postgres_protocol::message::frontend::parse("", sql, std::iter::empty(), &mut out)
            .expect("parse message");
        postgres_protocol::message::frontend::sync(&mut out);
        self.send(&out).await;
        self.answer().await
    }

    /// Sends Terminate.
    pub async fn terminate(mut self) {
        let mut out = BytesMut::new();
        out.put_u8(b'X');
        out.put_i32(4);
        self.send(&out).await;
    }
}

/// `GET path` (or another method) on 127.0.0.1:port; (status, body). None if refused/closed.
pub async fn http(port: u16, method: &str, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    let req = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.ok()?;
    let mut resp = Vec::new();
    tokio::time::timeout(IO_TIMEOUT, s.read_to_end(&mut resp))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&resp).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

/// One sample of a Prometheus text exposition.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A parsed exposition: `# TYPE` per family, and every sample.
#[derive(Debug, Default)]
pub struct Exposition {
    pub types: BTreeMap<String, String>,
    pub helps: BTreeMap<String, String>,
    pub samples: Vec<Sample>,
}

impl Exposition {
    /// Samples of `name` whose labels include every `(k, v)` of `want`.
    pub fn find(&self, name: &str, want: &[(&str, &str)]) -> Vec<&Sample> {
        self.samples
            .iter()
            .filter(|s| s.name == name)
            .filter(|s| {
                want.iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .collect()
    }

    /// The value of the single sample matching, panicking otherwise.
    pub fn value(&self, name: &str, want: &[(&str, &str)]) -> f64 {
        let found = self.find(name, want);
        assert_eq!(found.len(), 1, "{name} {want:?}: {found:?}");
        found[0].value
    }
}

/// Parses the Prometheus text format 0.0.4 strictly enough to catch malformed output: every
/// sample line must be `name{k="v",...} value`, names and label names valid, values floats.
pub fn parse_prometheus(text: &str) -> Result<Exposition, String> {
    let valid_name = |n: &str| {
        !n.is_empty()
            && n.chars().enumerate().all(|(i, c)| {
                c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit())
            })
    };
    let mut e = Exposition::default();
    for (no, line) in text.lines().enumerate() {
        let err = |what: &str| format!("line {}: {what}: {line:?}", no + 1);
        if line.trim().is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, ty) = rest.split_once(' ').ok_or_else(|| err("TYPE"))?;
            if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&ty) {
                return Err(err("unknown type"));
            }
            if e.types.insert(name.to_string(), ty.to_string()).is_some() {
                return Err(err("duplicate TYPE"));
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            e.helps.insert(name.to_string(), help.to_string());
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let (name_labels, value) = line.rsplit_once(' ').ok_or_else(|| err("no value"))?;
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().map_err(|_| err("bad value"))?,
        };
        let (name, labels) = match name_labels.split_once('{') {
            None => (name_labels, BTreeMap::new()),
            Some((name, rest)) => {
                let body = rest
                    .strip_suffix('}')
                    .ok_or_else(|| err("unclosed labels"))?;
                (name, parse_labels(body).map_err(|w| err(&w))?)
            }
        };
        if !valid_name(name) || labels.keys().any(|k| !valid_name(k)) {
            return Err(err("bad name"));
        }
        e.samples.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    Ok(e)
}

fn parse_labels(mut body: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    while !body.is_empty() {
        let (k, rest) = body.split_once("=\"").ok_or("label without =\"")?;
        let mut v = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next() {
                None => return Err("unterminated label value".into()),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => v.push('\n'),
                    Some((_, c)) => v.push(c),
                    None => return Err("dangling escape".into()),
                },
                Some((_, c)) => v.push(c),
            }
        };
        out.insert(k.to_string(), v);
        body = &rest[end + 1..];
        body = body.strip_prefix(',').unwrap_or(body);
    }
    Ok(out)
}
