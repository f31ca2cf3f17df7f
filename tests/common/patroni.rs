//! `PatroniLab`: a real two-node Patroni cluster for HA tests: etcd (Debian `etcd-server`) and two
//! Patroni nodes (Debian `patroni`, PostgreSQL 15 from /usr/lib/postgresql/15/bin) with
//! `synchronous_mode: true` and the fast timings ttl 10 / loop_wait 1 / retry_timeout 4, all on
//! free ports of 127.0.0.1, in one temp dir, run as the `postgres` user when we are root.
//!
//! Follows the tested lab recipe of reference/patroni.md Part B: node1 bootstraps, node2 starts
//! once node1 holds the initialize key; `etcd3:` (etcd 3.4 has v2 off); one socket dir per node;
//! a node's death is Patroni AND its postmaster AND the postmaster's children (Patroni does not
//! stop PostgreSQL when it dies). The application role `ollyscale`/`ollyscale` owns database
//! `ollyscale` (post_bootstrap hook).
//!
//! Must not: listen anywhere but 127.0.0.1, signal a process that is not ours (a postmaster is
//! killed only when its command line names our own data dir), or outlive its owner (Drop kills
//! everything with SIGKILL, also on panic, and removes the dir unless KEEP_TEST_DIRS is set).

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use super::pg::postgres_user;
use super::process::{
    children_of, clear_pg_env, is_root, lock, make_temp_dir, pid_alive, register, remove_dir,
    run_bounded, signal_child, tail, unregister,
};
use super::{free_port, psql};

/// The node template and bootstrap hook (copied from reference/patroni-lab).
const NODE_TEMPLATE: &str = include_str!("patroni/node.yml.tmpl");
const POST_INIT: &str = include_str!("patroni/post_init.sh");

/// Patroni scope (cluster name in etcd).
pub const SCOPE: &str = "olly";
/// The application role and database the post_bootstrap hook creates.
pub const APP_USER: &str = "ollyscale";
pub const APP_PASSWORD: &str = "ollyscale";
pub const APP_DB: &str = "ollyscale";
/// Patroni timings: failover after a leader's kill -9 takes about TTL seconds.
const TTL: u32 = 10;
const LOOP_WAIT: u32 = 1;
const RETRY_TIMEOUT: u32 = 4;
/// Bound on start-up to a healthy cluster (measured 7-10 s; slow CI machines get room).
const HEALTHY_TIMEOUT: Duration = Duration::from_secs(90);
/// Bound on one REST call (POST /switchover blocks until done, up to ~20 s).
const HTTP_TIMEOUT: Duration = Duration::from_secs(40);

/// One Patroni node.
pub struct PatroniNode {
    /// Patroni member name (`node1`, `node2`).
    pub name: String,
    /// PostgreSQL port on 127.0.0.1.
    pub pg_port: u16,
    /// Patroni REST API port on 127.0.0.1.
    pub api_port: u16,
    /// `<lab>/<name>`: data dir, socket, pgpass.
    dir: PathBuf,
    /// The rendered Patroni config.
    config: PathBuf,
    /// Patroni's (and PostgreSQL's) output.
    pub log_path: PathBuf,
    /// The Patroni process; None while stopped. Unreaped while running, so its PID stays ours.
    child: Mutex<Option<Child>>,
}

impl PatroniNode {
    /// `http://127.0.0.1:<api_port>`.
    pub fn api_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.api_port)
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// PID of this node's postmaster, if one runs on our data dir.
    fn postmaster_pid(&self) -> Option<u32> {
        let pidfile = fs::read_to_string(self.data_dir().join("postmaster.pid")).ok()?;
        let pid: u32 = pidfile.lines().next()?.trim().parse().ok()?;
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let ours = cmdline.contains(&*self.data_dir().to_string_lossy());
        (ours && pid_alive(pid)).then_some(pid)
    }

    /// Patroni, its postmaster and the postmaster's children, all with SIGKILL (a crash).
    fn kill_hard(&self) {
        let mut guard = lock(&self.child);
        let postmaster = self.postmaster_pid();
        let backends = postmaster.map(children_of).unwrap_or_default();
        if let Some(child) = guard.as_mut() {
            signal_child(child, libc::SIGKILL);
            let _ = child.wait();
            unregister(child.id());
        }
        *guard = None;
        for pid in postmaster.into_iter().chain(backends) {
            // SAFETY: kill(2) on our node's postmaster (its command line names our data dir)
            // or one of its children.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        }
    }

    /// True while this node's Patroni runs.
    pub fn is_running(&self) -> bool {
        lock(&self.child)
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

/// A running etcd + two Patroni nodes, owned by one test.
pub struct PatroniLab {
    /// The temp dir holding everything.
    pub dir: PathBuf,
    /// etcd client port.
    pub etcd_port: u16,
    /// node1 and node2.
    pub nodes: Vec<PatroniNode>,
    etcd_peer_port: u16,
    etcd_log: PathBuf,
    etcd: Mutex<Option<Child>>,
    owner: Option<(u32, u32)>,
    /// Per node (when root): the group its Patroni and PostgreSQL run with, so a partition can
    /// match each node's packets with iptables `-m owner --gid-owner`.
    node_gids: Vec<Option<u32>>,
    pg_bin: PathBuf,
}

/// A network partition made by [`PatroniLab::partition`]: an iptables chain of the test's own,
/// jumped from OUTPUT. Removed on drop (also when the test fails).
pub struct Partition {
    chain: String,
}

impl Partition {
    /// Removes the rules now (the partition heals).
    pub fn heal(self) {}
}

impl Drop for Partition {
    fn drop(&mut self) {
        let _ = iptables(&["-D", "OUTPUT", "-j", &self.chain]);
        let _ = iptables(&["-F", &self.chain]);
        let _ = iptables(&["-X", &self.chain]);
    }
}

/// Runs iptables with `args`; Err with its stderr on failure.
fn iptables(args: &[&str]) -> Result<(), String> {
    let mut cmd = Command::new("iptables");
    cmd.args(["-w", "5"]).args(args);
    let (code, _, err) = run_bounded(&mut cmd, Duration::from_secs(20), "iptables");
    if code == 0 {
        Ok(())
    } else {
        Err(format!("iptables {args:?}: {err}"))
    }
}

/// The gid of group `name`, created (as a system group) if missing.
fn group_gid(name: &str) -> u32 {
    let lookup = || -> Option<u32> {
        let out = Command::new("getent").args(["group", name]).output().ok()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.trim().split(':').nth(2)?.parse().ok()
    };
    if let Some(gid) = lookup() {
        return gid;
    }
    let mut cmd = Command::new("groupadd");
    cmd.args(["--system", name]);
    let (code, _, err) = run_bounded(&mut cmd, Duration::from_secs(20), "groupadd");
    // Another test may have created it meanwhile.
    lookup().unwrap_or_else(|| panic!("groupadd {name} failed ({code}): {err}"))
}

impl PatroniLab {
    /// Starts etcd, node1, then node2 once node1 holds the initialize key, and waits until
    /// `/cluster` shows a running leader and a running sync standby and the application role
    /// logs in on both nodes. Panics with the logs on failure (nothing is skipped).
    pub fn start() -> PatroniLab {
        let dir = make_temp_dir("olly-patroni-");
        let mut lab = PatroniLab {
            etcd_port: free_port(),
            etcd_peer_port: free_port(),
            etcd_log: dir.join("etcd.log"),
            etcd: Mutex::new(None),
            owner: is_root().then(postgres_user),
            node_gids: (1..=2)
                .map(|i| is_root().then(|| group_gid(&format!("olly-pgnode{i}"))))
                .collect(),
            pg_bin: patroni_pg_bin(),
            nodes: Vec::new(),
            dir,
        };
        // From here on a panic drops `lab`: everything started is killed, the dir removed.
        lab.give(&lab.dir);
        let hook = lab.dir.join("post_init.sh");
        fs::write(&hook, POST_INIT).expect("write post_init.sh");
        fs::set_permissions(&hook, fs::Permissions::from_mode(0o755)).expect("chmod hook");
        lab.give(&hook);
        for i in 1..=2 {
            let node = lab.prepare_node(&format!("node{i}"));
            lab.nodes.push(node);
        }
        lab.start_etcd();
        lab.spawn_node(0);
        lab.wait_initialized();
        lab.spawn_node(1);
        lab.wait_healthy();
        lab
    }

    /// A node by name (panics if unknown).
    pub fn node(&self, name: &str) -> &PatroniNode {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .unwrap_or_else(|| panic!("no node {name}"))
    }

    /// `GET /cluster` from the first node that answers.
    pub fn cluster(&self) -> Option<serde_json::Value> {
        self.nodes.iter().find_map(|n| {
            let (status, body) = http(n.api_port, "GET", "/cluster", None).ok()?;
            if status != 200 {
                return None;
            }
            serde_json::from_str(&body).ok()
        })
    }

    /// (name, role, state) of every member `/cluster` lists.
    pub fn members(&self) -> Vec<(String, String, String)> {
        let Some(c) = self.cluster() else {
            return Vec::new();
        };
        let field = |m: &serde_json::Value, k: &str| m[k].as_str().unwrap_or_default().to_string();
        c["members"]
            .as_array()
            .map(|ms| {
                ms.iter()
                    .map(|m| (field(m, "name"), field(m, "role"), field(m, "state")))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The member Patroni reports as leader.
    pub fn leader(&self) -> Option<String> {
        self.members()
            .into_iter()
            .find(|(_, role, _)| role == "leader")
            .map(|(name, _, _)| name)
    }

    /// Waits until every node is listed, the leader and a sync standby are running, and the
    /// application role logs in on both PostgreSQL servers.
    pub fn wait_healthy(&self) {
        let deadline = Instant::now() + HEALTHY_TIMEOUT;
        loop {
            let members = self.members();
            let running = |role: &str| {
                members
                    .iter()
                    .any(|(_, r, s)| r == role && (s == "running" || s == "streaming"))
            };
            if members.len() == self.nodes.len()
                && running("leader")
                && running("sync_standby")
                && self.nodes.iter().all(|n| self.app_login(n.pg_port))
            {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "Patroni cluster not healthy after {HEALTHY_TIMEOUT:?}: {members:?}\n{}",
                    self.logs()
                );
            }
            thread::sleep(Duration::from_millis(200));
        }
    }

    /// POST /switchover from the current leader (in sync mode Patroni picks the sync standby);
    /// returns the new leader once `/cluster` reports it.
    pub fn switchover(&self) -> String {
        let old = self.leader().expect("a leader to switch over from");
        let body = format!("{{\"leader\":\"{old}\"}}");
        let (status, text) = http(self.node(&old).api_port, "POST", "/switchover", Some(&body))
            .unwrap_or_else(|e| panic!("POST /switchover: {e}\n{}", self.logs()));
        assert_eq!(status, 200, "POST /switchover answered {text}");
        self.wait_leader_other_than(&old, Duration::from_secs(30))
    }

    /// kill -9 of the leader's Patroni, postmaster and backends; returns the killed name.
    pub fn kill_leader(&self) -> String {
        let leader = self.leader().expect("a leader to kill");
        self.node(&leader).kill_hard();
        leader
    }

    /// Cuts node `name` off from etcd and from the other node (both ways), while everything
    /// else (the pooler, the test) still reaches it: iptables rules in a chain of our own that
    /// drop the node's packets to etcd and to the other node's ports, and the other node's
    /// packets to this node's ports, matched by the nodes' groups. Needs root.
    pub fn partition(&self, name: &str) -> Partition {
        assert!(is_root(), "a partition needs root (iptables)");
        let i = self
            .nodes
            .iter()
            .position(|n| n.name == name)
            .unwrap_or_else(|| panic!("no node {name}"));
        let other = 1 - i;
        let (gid, other_gid) = (
            self.node_gids[i].expect("root: node groups"),
            self.node_gids[other].expect("root: node groups"),
        );
        let chain = format!("OLLY-{}-{}", std::process::id(), self.nodes[i].pg_port);
        iptables(&["-N", &chain]).unwrap_or_else(|e| panic!("{e}"));
        let partition = Partition { chain };
        let chain = partition.chain.clone();
        let drop_rule = |gid: u32, port: u16| {
            let (gid, port) = (gid.to_string(), port.to_string());
            iptables(&[
                "-A",
                &chain,
                "-p",
                "tcp",
                "-d",
                "127.0.0.1",
                "--dport",
                &port,
                "-m",
                "owner",
                "--gid-owner",
                &gid,
                "-j",
                "DROP",
            ])
            .unwrap_or_else(|e| panic!("{e}"));
        };
        let (me, them) = (&self.nodes[i], &self.nodes[other]);
        for port in [self.etcd_port, them.pg_port, them.api_port] {
            drop_rule(gid, port);
        }
        for port in [me.pg_port, me.api_port] {
            drop_rule(other_gid, port);
        }
        iptables(&["-I", "OUTPUT", "-j", &chain]).unwrap_or_else(|e| panic!("{e}"));
        partition
    }

    /// `GET /cluster` from one node's own API: the leader it reports, if any.
    pub fn leader_seen_by(&self, name: &str) -> Option<String> {
        let (status, body) = http(self.node(name).api_port, "GET", "/cluster", None).ok()?;
        if status != 200 {
            return None;
        }
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        v["members"].as_array()?.iter().find_map(|m| {
            (m["role"].as_str() == Some("leader")).then(|| m["name"].as_str().map(String::from))?
        })
    }

    /// kill -9 of one node's Patroni, postmaster and backends (a crashed member).
    pub fn kill_node(&self, name: &str) {
        self.node(name).kill_hard();
    }

    /// Waits for `/cluster` to report a leader other than `old`; returns it.
    pub fn wait_leader_other_than(&self, old: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(l) = self.leader().filter(|l| l != old) {
                return l;
            }
            if Instant::now() >= deadline {
                panic!(
                    "no new leader after {timeout:?}: {:?}\n{}",
                    self.members(),
                    self.logs()
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Starts a stopped node's Patroni again (it rejoins, with pg_rewind after a crash).
    pub fn restart_node(&self, name: &str) {
        let i = self
            .nodes
            .iter()
            .position(|n| n.name == name)
            .unwrap_or_else(|| panic!("no node {name}"));
        if !self.nodes[i].is_running() {
            self.spawn_node(i);
        }
    }

    /// Kills everything at once (SIGKILL: the lab's data is thrown away anyway).
    pub fn stop(&self) {
        for n in &self.nodes {
            n.kill_hard();
        }
        if let Some(mut etcd) = lock(&self.etcd).take() {
            signal_child(&mut etcd, libc::SIGKILL);
            let _ = etcd.wait();
            unregister(etcd.id());
        }
    }

    /// The last lines of every log, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = format!(
            "--- etcd log, last 20 lines ---\n{}\n",
            tail(&self.etcd_log, 20)
        );
        for n in &self.nodes {
            out.push_str(&format!(
                "--- {} log ({}), last 40 lines ---\n{}\n",
                n.name,
                n.log_path.display(),
                tail(&n.log_path, 40)
            ));
        }
        out
    }

    fn app_login(&self, port: u16) -> bool {
        let conn = format!(
            "host=127.0.0.1 port={port} user={APP_USER} password={APP_PASSWORD} dbname={APP_DB} connect_timeout=5"
        );
        psql(&conn, "SELECT 1").0 == 0
    }

    fn prepare_node(&self, name: &str) -> PatroniNode {
        let dir = self.dir.join(name);
        fs::create_dir(&dir).expect("create node dir");
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).expect("chmod node dir");
        self.give(&dir);
        let node = PatroniNode {
            name: name.to_string(),
            pg_port: free_port(),
            api_port: free_port(),
            config: self.dir.join(format!("{name}.yml")),
            log_path: self.dir.join(format!("{name}.log")),
            dir,
            child: Mutex::new(None),
        };
        let yml = [
            ("SCOPE", SCOPE.to_string()),
            ("NODE", name.to_string()),
            ("LAB_DIR", self.dir.display().to_string()),
            ("PG_PORT", node.pg_port.to_string()),
            ("API_PORT", node.api_port.to_string()),
            ("ETCD_PORT", self.etcd_port.to_string()),
            ("PG_BIN", self.pg_bin.display().to_string()),
            ("TTL", TTL.to_string()),
            ("LOOP_WAIT", LOOP_WAIT.to_string()),
            ("RETRY_TIMEOUT", RETRY_TIMEOUT.to_string()),
            ("SU_PASS", "postgres-pass".to_string()),
            ("REPL_PASS", "replicator-pass".to_string()),
            ("REWIND_PASS", "rewind-pass".to_string()),
            ("SYNC_MODE", "true".to_string()),
        ]
        .iter()
        .fold(NODE_TEMPLATE.to_string(), |t, (k, v)| {
            t.replace(&format!("@{k}@"), v)
        });
        let unfilled = yml
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .any(|l| l.contains('@'));
        assert!(!unfilled, "unfilled placeholder in:\n{yml}");
        fs::write(&node.config, yml).expect("write node config");
        // It holds passwords.
        fs::set_permissions(&node.config, fs::Permissions::from_mode(0o600)).expect("chmod");
        self.give(&node.config);
        node
    }

    /// A daemon command run as the `postgres` user (when root), in the lab dir, HOME there too.
    fn command(&self, program: &str, log_path: &Path) -> Command {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_path)
            .expect("open log");
        self.give(log_path);
        let mut cmd = Command::new(program);
        clear_pg_env(&mut cmd)
            .current_dir(&self.dir)
            .env("HOME", &self.dir)
            .env("LC_ALL", "C.UTF-8")
            .env("LANG", "C.UTF-8")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log);
        if let Some((uid, gid)) = self.owner {
            // Execs in place like setpriv: the child's PID is the daemon's.
            std::os::unix::process::CommandExt::uid(&mut cmd, uid);
            std::os::unix::process::CommandExt::gid(&mut cmd, gid);
        }
        cmd
    }

    fn start_etcd(&self) {
        let client = format!("http://127.0.0.1:{}", self.etcd_port);
        let peer = format!("http://127.0.0.1:{}", self.etcd_peer_port);
        let mut cmd = self.command("etcd", &self.etcd_log);
        cmd.args(["--name", "etcd0", "--data-dir"])
            .arg(self.dir.join("etcd"))
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("etcd0={peer}")])
            .args(["--heartbeat-interval", "50", "--election-timeout", "300"])
            .args(["--logger", "zap"]);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run etcd (install etcd-server): {e}"));
        register(child.id(), None);
        *lock(&self.etcd) = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok((200, body)) = http(self.etcd_port, "GET", "/health", None) {
                if body.contains("true") {
                    return;
                }
            }
            let exited = lock(&self.etcd)
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() || Instant::now() >= deadline {
                panic!("etcd did not become healthy ({exited:?})\n{}", self.logs());
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    fn spawn_node(&self, i: usize) {
        let node = &self.nodes[i];
        let mut cmd = self.command("patroni", &node.log_path);
        if let Some(gid) = self.node_gids[i] {
            // Its own group (uid stays postgres, which owns the files): what a partition matches.
            std::os::unix::process::CommandExt::gid(&mut cmd, gid);
        }
        cmd.arg(&node.config);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run patroni (install patroni): {e}"));
        // The safety net kills Patroni's children (the postmaster) at exit too.
        register(child.id(), None);
        *lock(&node.child) = Some(child);
    }

    /// Waits until node1 holds `/service/<scope>/initialize` (gotcha 7: otherwise either node
    /// may bootstrap).
    fn wait_initialized(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let key = format!("/service/{SCOPE}/initialize");
        loop {
            let mut cmd = Command::new("etcdctl");
            cmd.env("ETCDCTL_API", "3").args([
                &format!("--endpoints=http://127.0.0.1:{}", self.etcd_port),
                "get",
                &key,
                "--print-value-only",
            ]);
            let (code, out, _) = run_bounded(&mut cmd, Duration::from_secs(10), "etcdctl");
            if code == 0 && !out.trim().is_empty() {
                return;
            }
            let dead = lock(&self.nodes[0].child)
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if dead.is_some() || Instant::now() >= deadline {
                panic!(
                    "node1 did not initialize the cluster ({dead:?})\n{}",
                    self.logs()
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    fn give(&self, path: &Path) {
        if let Some((uid, gid)) = self.owner {
            std::os::unix::fs::chown(path, Some(uid), Some(gid))
                .unwrap_or_else(|e| panic!("chown {} to postgres: {e}", path.display()));
        }
    }
}

impl Drop for PatroniLab {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("{}", self.logs());
        }
        self.stop();
        remove_dir(&self.dir);
    }
}

/// One blocking HTTP/1.0 exchange with 127.0.0.1:`port`: (status, body).
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(HTTP_TIMEOUT))?;
    s.set_write_timeout(Some(HTTP_TIMEOUT))?;
    let body = body.unwrap_or("");
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP answer: {head:?}")))?;
    Ok((status, body.to_string()))
}

/// PostgreSQL 15's bin dir (Patroni 3.0.2 supports PostgreSQL up to 15); env
/// PATRONI_PG_BIN_DIR overrides.
fn patroni_pg_bin() -> PathBuf {
    if let Some(dir) = std::env::var_os("PATRONI_PG_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let dir = PathBuf::from("/usr/lib/postgresql/15/bin");
    assert!(
        dir.join("postgres").exists(),
        "no PostgreSQL 15 at {} (Patroni 3.0.2 needs 15 or older; set PATRONI_PG_BIN_DIR)",
        dir.display()
    );
    dir
}
