//! Fuzz target for `session::pipeline`, in two modes chosen by byte 0.
//!
//! **Differential (byte 0 odd):** two clients and two servers, in transaction mode with shared
//! named statements and an LRU of 2 per server. Each client's messages go (a) straight to a model
//! PostgreSQL server of its own, the reference, and (b) through a `Pipeline` per transaction to
//! one of two shared model servers, the pooled run, whose replies come back through the same
//! pipeline (forwarded, swallowed, renamed, and the synthetic ParseComplete/CloseComplete
//! added). The invariant: every client sees exactly the replies it would see talking to
//! PostgreSQL directly (tags and bodies, errors included, statement names as the client wrote
//! them), whatever the pooler injected (Parse of a statement the server lacks, Close of an
//! evicted one) or answered itself (Parse of a statement the server has, a client's Close).
//! Where the pooler refuses a message as PgBouncer does (a Parse of a name the client holds, a
//! Bind or Describe of a name it does not hold: the client is closed), the client saw the same
//! replies up to that message, and PostgreSQL would have refused it too (26000 for the unknown
//! name, an error for the Parse) or was skipping it after an error; the client then connects
//! again (a new backend of its own, no names) and the pooled server it held is replaced, as the
//! pooler closes it.
//! The model server follows PostgreSQL's rules for the extended protocol: a failed message makes
//! it ignore everything up to Sync; Parse checks the syntax before the name; Bind/Describe of a
//! missing statement is 26000; Close of a missing name succeeds; a simple Query drops the unnamed
//! statement and portal; DISCARD ALL / DEALLOCATE ALL drop the named statements; Sync ends the
//! portal. Between transactions a client may move to another server (when nothing is owed and
//! no extended run is open, as `transfer` releases a server); the unnamed statement and portal
//! are then dropped on both sides (they do not survive a server change under transaction
//! pooling, with PgBouncer either).
//!
//! Known gap, left out of the model (the client reads every reply up to a Sync's ReadyForQuery
//! before it sends more, so pipelining is modelled within one Sync run only): messages sent
//! after a Sync that use a statement name whose Parse, in an earlier run not answered yet, will
//! fail or be skipped. The pooler maps the name at once (and may answer the Parse itself when the
//! server holds the same text for another name), so such messages can succeed where PostgreSQL
//! says 26000, or the Parse can get a ParseComplete where PostgreSQL repeats its error. Found by
//! this target; fixing it needs the pipeline to hold names and ParseCompletes whose outcome
//! depends on an unanswered run.
//!
//! Input: after byte 0, one byte per operation: `op = b % 11`, `arg = b / 11`:
//! 0 Parse(name, query), 1 Bind(name), 2 Describe statement, 3 Describe portal, 4 Execute,
//! 5 Close statement, 6 Close portal, 7 Sync, 8 simple Query, 9 deliver `arg` server replies to
//! the pipeline (replies otherwise wait, so an error arrives after the client pipelined more
//! messages of its run, as on a real network),
//! 10 end the transaction and switch client/server (ignored while an extended run is open).
//! After a Sync or a simple Query the client reads every reply before it sends more.
//! Names: "", "a", "b", "c"; queries: four SELECTs, one syntax error, one that fails at Execute.
//!
//! **Hostile (byte 0 even):** arbitrary client and server frames, interleaved, as a hostile
//! client or a confused server could send them: records `[side, tag, len, body[len]]`, `side`
//! even = client. Invariants: nothing panics; ReadyForQuery owed never exceeds the Sync/Query
//! frames sent; every replacement and synthetic reply is whole frames; the server holds at most
//! the cap plus statements waiting to be closed.
#![no_main]

use std::collections::{HashMap, VecDeque};

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use ollyscale_pooler::server::statements::{ServerStatements, StatementCache};
use ollyscale_pooler::session::pipeline::{Pipeline, Refusal, Stmts, ToClient, ToServer};
use ollyscale_pooler::session::prepared::ClientStatements;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 1 {
        differential(rest);
    } else {
        hostile(rest);
    }
});

// ---------------------------------------------------------------------------------------------
// Frames

type Frame = (u8, Vec<u8>);

fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// Splits bytes into whole frames; anything else is a broken stream (a pipeline bug).
fn frames(mut bytes: &[u8]) -> Vec<Frame> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        assert!(bytes.len() >= 5, "a frame header");
        let len = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize;
        assert!(len >= 4 && 1 + len <= bytes.len(), "a whole frame");
        out.push((bytes[0], bytes[5..1 + len].to_vec()));
        bytes = &bytes[1 + len..];
    }
    out
}

fn cstr(body: &[u8]) -> (&[u8], &[u8]) {
    let end = body
        .iter()
        .position(|b| *b == 0)
        .expect("model frames hold their strings");
    (&body[..end], &body[end + 1..])
}

fn error(code: &str, message: &str) -> Frame {
    let mut b = Vec::new();
    for (k, v) in [(b'S', "ERROR"), (b'V', "ERROR"), (b'C', code), (b'M', message)] {
        b.push(k);
        b.extend_from_slice(v.as_bytes());
        b.push(0);
    }
    b.push(0);
    (b'E', b)
}

fn quoted(name: &[u8]) -> String {
    String::from_utf8_lossy(name).into_owned()
}

// ---------------------------------------------------------------------------------------------
// The model PostgreSQL server

const NAMES: [&[u8]; 4] = [b"", b"a", b"b", b"c"];
const QUERIES: [&str; 6] = [
    "SELECT 1",
    "SELECT 2",
    "SELECT 3",
    "SELECT 4",
    "SELEC bad",
    "SELECT 1/0",
];

/// One backend: its statements (by the name it was given), its unnamed portal, and whether it
/// ignores messages until Sync after an error.
#[derive(Default)]
struct Server {
    stmts: HashMap<Vec<u8>, Vec<u8>>,
    /// The query of the unnamed portal.
    portal: Option<Vec<u8>>,
    ignore_till_sync: bool,
}

impl Server {
    /// Handles one frame, appending its replies.
    fn handle(&mut self, (tag, body): &Frame, out: &mut VecDeque<Frame>) {
        if self.ignore_till_sync && *tag != b'S' {
            return;
        }
        let result = match tag {
            b'P' => self.parse(body),
            b'B' => self.bind(body),
            b'D' => self.describe(body),
            b'E' => self.execute(body),
            b'C' => self.close(body),
            b'S' => {
                self.ignore_till_sync = false;
                self.portal = None;
                Ok(vec![(b'Z', b"I".to_vec())])
            }
            b'Q' => {
                let mut replies = self.query(body);
                replies.push((b'Z', b"I".to_vec()));
                out.extend(replies);
                return;
            }
            b'H' => Ok(vec![]),
            other => panic!("the model never sends {:?}", *other as char),
        };
        match result {
            Ok(replies) => out.extend(replies),
            Err(e) => {
                self.ignore_till_sync = true;
                out.push_back(e);
            }
        }
    }

    fn parse(&mut self, body: &[u8]) -> Result<Vec<Frame>, Frame> {
        let (name, rest) = cstr(body);
        let (query, _) = cstr(rest);
        if query.starts_with(b"SELEC ") {
            return Err(error("42601", "syntax error at or near \"SELEC\""));
        }
        if !name.is_empty() && self.stmts.contains_key(name) {
            return Err(error(
                "42P05",
                &format!("prepared statement \"{}\" already exists", quoted(name)),
            ));
        }
        self.stmts.insert(name.to_vec(), query.to_vec());
        Ok(vec![(b'1', vec![])])
    }

    fn missing(name: &[u8]) -> Frame {
        if name.is_empty() {
            error("26000", "unnamed prepared statement does not exist")
        } else {
            error(
                "26000",
                &format!("prepared statement \"{}\" does not exist", quoted(name)),
            )
        }
    }

    fn bind(&mut self, body: &[u8]) -> Result<Vec<Frame>, Frame> {
        let (_portal, rest) = cstr(body);
        let (name, _) = cstr(rest);
        let query = self.stmts.get(name).ok_or_else(|| Self::missing(name))?;
        self.portal = Some(query.clone());
        Ok(vec![(b'2', vec![])])
    }

    fn no_portal() -> Frame {
        error("34000", "portal \"\" does not exist")
    }

    fn describe(&mut self, body: &[u8]) -> Result<Vec<Frame>, Frame> {
        let (name, _) = cstr(&body[1..]);
        if body[0] == b'S' {
            let query = self.stmts.get(name).ok_or_else(|| Self::missing(name))?;
            Ok(vec![(b't', vec![0, 0]), (b'T', query.clone())])
        } else {
            let query = self.portal.as_ref().ok_or_else(Self::no_portal)?;
            Ok(vec![(b'T', query.clone())])
        }
    }

    fn execute(&mut self, _body: &[u8]) -> Result<Vec<Frame>, Frame> {
        let query = self.portal.as_ref().ok_or_else(Self::no_portal)?;
        if query.ends_with(b"/0") {
            return Err(error("22012", "division by zero"));
        }
        let mut tag = b"SELECT 1".to_vec();
        tag.push(0);
        Ok(vec![(b'D', query.clone()), (b'C', tag)])
    }

    fn close(&mut self, body: &[u8]) -> Result<Vec<Frame>, Frame> {
        let (name, _) = cstr(&body[1..]);
        if body[0] == b'S' {
            self.stmts.remove(name);
        } else {
            self.portal = None;
        }
        Ok(vec![(b'3', vec![])])
    }

    fn query(&mut self, body: &[u8]) -> Vec<Frame> {
        self.stmts.remove(&b""[..]);
        self.portal = None;
        let (sql, _) = cstr(body);
        let done = |tag: &str| {
            let mut t = tag.as_bytes().to_vec();
            t.push(0);
            (b'C', t)
        };
        match sql {
            b"DISCARD ALL" | b"DEALLOCATE ALL" => {
                self.stmts.clear();
                vec![done(std::str::from_utf8(sql).expect("ascii"))]
            }
            b"SELEC bad" => vec![error("42601", "syntax error at or near \"SELEC\"")],
            _ => vec![(b'T', sql.to_vec()), (b'D', sql.to_vec()), done("SELECT 1")],
        }
    }

    /// What a server change loses: the unnamed statement and portal.
    fn forget_unnamed(&mut self) {
        self.stmts.remove(&b""[..]);
        self.portal = None;
    }
}

/// The client's frame for operation `op` with argument `arg`; `None` for the control ops.
fn client_op(op: u8, arg: u8) -> Option<Frame> {
    let name = NAMES[(arg % 4) as usize];
    let with_name = |kind: u8, name: &[u8]| {
        let mut b = vec![kind];
        b.extend_from_slice(name);
        b.push(0);
        b
    };
    let f = match op {
        0 => {
            let mut b = name.to_vec();
            b.push(0);
            b.extend_from_slice(QUERIES[(arg / 4 % 6) as usize].as_bytes());
            b.extend_from_slice(&[0, 0, 0]);
            (b'P', b)
        }
        1 => {
            let mut b = vec![0];
            b.extend_from_slice(name);
            b.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0]);
            (b'B', b)
        }
        2 => (b'D', with_name(b'S', name)),
        3 => (b'D', with_name(b'P', b"")),
        4 => (b'E', vec![0, 0, 0, 0, 0]),
        5 => (b'C', with_name(b'S', name)),
        6 => (b'C', with_name(b'P', b"")),
        7 => (b'S', vec![]),
        8 => {
            let sql = ["SELECT 9", "DISCARD ALL", "DEALLOCATE ALL", "SELEC bad"][(arg % 4) as usize];
            let mut b = sql.as_bytes().to_vec();
            b.push(0);
            (b'Q', b)
        }
        _ => return None,
    };
    Some(f)
}

// ---------------------------------------------------------------------------------------------
// The differential run

const CAP: usize = 2;

/// One pooled server: the model backend and what the pooler knows it holds.
#[derive(Default)]
struct Pooled {
    server: Server,
    stmts: ServerStatements,
}

/// One client: its reference backend, its statement map, and what it saw each way.
#[derive(Default)]
struct Client {
    direct: Server,
    map: Option<Box<ClientStatements>>,
    saw_direct: Vec<Frame>,
    saw_pooled: Vec<Frame>,
}

struct Link {
    client: usize,
    server: usize,
    pipe: Pipeline,
    /// Server replies not yet shown to the pipeline.
    replies: VecDeque<Frame>,
}

struct World {
    cache: StatementCache,
    clients: [Client; 2],
    servers: [Pooled; 2],
    link: Link,
}

impl World {
    fn stmts<'a>(
        cache: &'a StatementCache,
        client: &'a mut Client,
        server: &'a mut Pooled,
    ) -> Stmts<'a> {
        Stmts {
            client: &mut client.map,
            server: &mut server.stmts,
            cache,
            cap: CAP,
        }
    }

    /// Sends one client frame both ways.
    fn send(&mut self, f: Frame) {
        let c = &mut self.clients[self.link.client];
        let skipping = c.direct.ignore_till_sync;
        let mut direct = VecDeque::new();
        c.direct.handle(&f, &mut direct);

        let s = &mut self.servers[self.link.server];
        let mut st = Self::stmts(&self.cache, c, s);
        let to_server = match self.link.pipe.client_frame(f.0, Some(&f.1), Some(&mut st)) {
            ToServer::Pass => frame(f.0, &f.1),
            ToServer::Replace(b) => b.to_vec(),
            ToServer::Drop => vec![],
            ToServer::Refuse(r) => return self.refused(r, skipping, &direct),
        };
        c.saw_direct.extend(direct);
        for sf in frames(&to_server) {
            s.server.handle(&sf, &mut self.link.replies);
        }
        self.synthetic();
    }

    /// The pooler refused a message: every reply to what came before it reaches the client as
    /// from PostgreSQL, and PostgreSQL refuses this one too (`direct`: its replies there), unless
    /// it was skipping it after an error. Then the client connects again.
    fn refused(&mut self, r: Refusal, skipping: bool, direct: &VecDeque<Frame>) {
        self.deliver(usize::MAX);
        self.check();
        if !skipping {
            let code = match direct.front() {
                Some((b'E', body)) => body
                    .split(|b| *b == 0)
                    .find_map(|f| f.strip_prefix(b"C"))
                    .map(|c| c.to_vec()),
                other => panic!("refused {r:?} where PostgreSQL answered {other:?}"),
            };
            if let Refusal::Unknown(_) = r {
                assert_eq!(code.as_deref(), Some(&b"26000"[..]), "refused {r:?}");
            }
        }
        self.clients[self.link.client] = Client::default();
        self.servers[self.link.server] = Pooled::default();
        self.link.pipe = Pipeline::default();
        self.link.replies.clear();
    }

    fn synthetic(&mut self) {
        let mut synth = BytesMut::new();
        self.link.pipe.take_synthetic(&mut synth);
        self.clients[self.link.client]
            .saw_pooled
            .extend(frames(&synth));
    }

    /// Shows up to `n` waiting server replies to the pipeline.
    fn deliver(&mut self, n: usize) {
        for _ in 0..n {
            let Some((tag, body)) = self.link.replies.pop_front() else {
                return;
            };
            let c = &mut self.clients[self.link.client];
            let s = &mut self.servers[self.link.server];
            let mut st = Self::stmts(&self.cache, c, s);
            match self.link.pipe.server_frame(tag, Some(&body), Some(&mut st)) {
                ToClient::Pass => c.saw_pooled.push((tag, body)),
                ToClient::Swallow => {}
                ToClient::Replace(b) => c.saw_pooled.extend(frames(&b)),
            }
            self.synthetic();
        }
    }

    /// Ends the transaction (if the server may be released) and links `client` to `server`.
    fn switch(&mut self, client: usize, server: usize) {
        self.deliver(usize::MAX);
        if !self.link.pipe.is_idle() {
            return;
        }
        self.check();
        self.link = Link {
            client,
            server,
            pipe: Pipeline::default(),
            replies: VecDeque::new(),
        };
        self.clients[client].direct.forget_unnamed();
        self.servers[server].server.forget_unnamed();
    }

    fn check(&self) {
        for (i, c) in self.clients.iter().enumerate() {
            assert_eq!(
                show(&c.saw_pooled),
                show(&c.saw_direct),
                "client {i} saw other replies through the pooler than from PostgreSQL"
            );
        }
    }
}

fn show(frames: &[Frame]) -> Vec<String> {
    frames
        .iter()
        .map(|(t, b)| format!("{} {}", *t as char, String::from_utf8_lossy(b)))
        .collect()
}

fn differential(ops: &[u8]) {
    let mut w = World {
        cache: StatementCache::default(),
        clients: Default::default(),
        servers: Default::default(),
        link: Link {
            client: 0,
            server: 0,
            pipe: Pipeline::default(),
            replies: VecDeque::new(),
        },
    };
    for &b in ops.iter().take(400) {
        let (op, arg) = (b % 11, b / 11);
        match op {
            9 => w.deliver(arg as usize % 8),
            10 => w.switch((arg % 2) as usize, (arg / 2 % 2) as usize),
            7 | 8 => {
                // The client reads every reply up to this ReadyForQuery before it sends more
                // (see the module doc; libpq has no pipelining of simple queries at all).
                w.send(client_op(op, arg).expect("a client op"));
                w.deliver(usize::MAX);
            }
            _ => w.send(client_op(op, arg).expect("a client op")),
        }
    }
    // The client ends with a Sync so that everything is answered.
    w.send((b'S', vec![]));
    w.deliver(usize::MAX);
    assert_eq!(w.link.pipe.ready_owed(), 0, "every ReadyForQuery arrived");
    assert!(w.link.pipe.is_idle(), "nothing owed after the last Sync");
    w.check();
}

// ---------------------------------------------------------------------------------------------
// The hostile run

fn hostile(data: &[u8]) {
    let cache = StatementCache::default();
    let mut client: Option<Box<ClientStatements>> = None;
    let mut server = ServerStatements::default();
    let mut p = Pipeline::default();
    let mut syncs = 0u32;
    let mut client_frames = 0usize;
    let mut rest = data;
    while rest.len() >= 3 {
        let (side, tag, len) = (rest[0], rest[1], rest[2] as usize);
        rest = &rest[3..];
        if rest.len() < len {
            break;
        }
        let (body, tail) = rest.split_at(len);
        rest = tail;
        let mut st = Stmts {
            client: &mut client,
            server: &mut server,
            cache: &cache,
            cap: 3,
        };
        if side % 2 == 0 {
            client_frames += 1;
            if matches!(tag, b'S' | b'Q' | b'F') {
                syncs += 1;
            }
            if let ToServer::Replace(b) = p.client_frame(tag, Some(body), Some(&mut st)) {
                frames(&b);
            }
        } else if let ToClient::Replace(b) = p.server_frame(tag, Some(body), Some(&mut st)) {
            frames(&b);
        }
        let mut synth = BytesMut::new();
        p.take_synthetic(&mut synth);
        frames(&synth);
        assert!(p.ready_owed() <= syncs);
        // Beyond the cap only statements whose eviction the server skipped, to close next.
        assert!(server.len() <= 3 + client_frames, "{}", server.len());
    }
}
