//! `Slapd`: a throwaway OpenLDAP server (Debian `slapd`) for one test: a slapd.conf and an mdb
//! database in a temp dir, loaded with `slapadd`, listening on 127.0.0.1 on a free port, run as
//! the `openldap` user when we are root, stopped by PID when dropped (also on panic).
//!
//! The directory: `dc=example,dc=net` with `ou=people` and the entries a test passes as LDIF; the
//! root DN `cn=admin,dc=example,dc=net` has the password `adminpw`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::process::{
    free_port, is_root, make_temp_dir, register, remove_dir, stop_child, unregister,
};

/// The suffix of the test directory.
pub const BASE_DN: &str = "dc=example,dc=net";
/// The root DN (full rights) and its password.
pub const ADMIN_DN: &str = "cn=admin,dc=example,dc=net";
/// The root DN's password.
pub const ADMIN_PW: &str = "adminpw";

/// A running slapd owned by one test.
pub struct Slapd {
    /// Port slapd listens on (127.0.0.1; plain LDAP, StartTLS when started with a certificate).
    pub port: u16,
    /// Port of `ldaps://` (0 without a certificate).
    pub tls_port: u16,
    /// The temp dir: slapd.conf, data.ldif, db/, slapd.log.
    pub dir: PathBuf,
    /// The slapd process (foreground, `-d 0`), None once stopped.
    child: Option<Child>,
}

impl Slapd {
    /// Starts slapd with the base entries plus `people`: (uid, password) pairs under `ou=people`
    /// (each also gets `mail: <uid>@example.net`).
    pub fn start(people: &[(&str, &str)]) -> Slapd {
        Slapd::launch(people, None)
    }

    /// `start` with TLS: `cert_pem`/`key_pem` serve StartTLS on `port` and ldaps on `tls_port`.
    pub fn start_tls(people: &[(&str, &str)], cert_pem: &str, key_pem: &str) -> Slapd {
        Slapd::launch(people, Some((cert_pem, key_pem)))
    }

    fn launch(people: &[(&str, &str)], tls: Option<(&str, &str)>) -> Slapd {
        let dir = make_temp_dir("olly-slapd-");
        let tls_lines = match tls {
            Some((cert, key)) => {
                std::fs::write(dir.join("server.crt"), cert).expect("write server.crt");
                std::fs::write(dir.join("server.key"), key).expect("write server.key");
                format!(
                    "TLSCertificateFile {d}/server.crt
TLSCertificateKeyFile {d}/server.key
",
                    d = dir.display()
                )
            }
            None => String::new(),
        };
        let conf = format!(
            "{tls_lines}include /etc/ldap/schema/core.schema\n\
             include /etc/ldap/schema/cosine.schema\n\
             include /etc/ldap/schema/inetorgperson.schema\n\
             pidfile {dir}/slapd.pid\n\
             modulepath /usr/lib/ldap\n\
             moduleload back_mdb\n\
             database mdb\n\
             maxsize 10485760\n\
             suffix \"{BASE_DN}\"\n\
             rootdn \"{ADMIN_DN}\"\n\
             rootpw {ADMIN_PW}\n\
             directory {dir}/db\n",
            dir = dir.display()
        );
        std::fs::write(dir.join("slapd.conf"), conf).expect("write slapd.conf");
        std::fs::create_dir(dir.join("db")).expect("create db dir");
        let mut ldif = format!(
            "dn: {BASE_DN}\nobjectClass: dcObject\nobjectClass: organization\ndc: example\no: Example\n\n\
             dn: ou=people,{BASE_DN}\nobjectClass: organizationalUnit\nou: people\n\n"
        );
        for (uid, pw) in people {
            ldif.push_str(&format!(
                "dn: uid={uid},ou=people,{BASE_DN}\nobjectClass: inetOrgPerson\nuid: {uid}\n\
                 cn: {uid}\nsn: {uid}\nmail: {uid}@example.net\nuserPassword: {pw}\n\n"
            ));
        }
        std::fs::write(dir.join("data.ldif"), ldif).expect("write data.ldif");
        let conf = dir.join("slapd.conf");
        let out = Command::new("/usr/sbin/slapadd")
            .arg("-f")
            .arg(&conf)
            .arg("-l")
            .arg(dir.join("data.ldif"))
            .output()
            .expect("run slapadd (Debian package slapd)");
        assert!(
            out.status.success(),
            "slapadd failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if is_root() {
            // slapd drops to the openldap user; it must own its database and pid file dir.
            let st = Command::new("chown")
                .args(["-R", "openldap:openldap"])
                .arg(&dir)
                .status()
                .expect("chown");
            assert!(st.success(), "chown of {} failed", dir.display());
        }
        let port = free_port();
        let tls_port = if tls.is_some() { free_port() } else { 0 };
        let mut urls = format!("ldap://127.0.0.1:{port}/");
        if tls.is_some() {
            urls.push_str(&format!(" ldaps://127.0.0.1:{tls_port}/"));
        }
        let log = std::fs::File::create(dir.join("slapd.log")).expect("create slapd.log");
        let mut cmd = Command::new("/usr/sbin/slapd");
        cmd.arg("-f")
            .arg(&conf)
            .arg("-h")
            .arg(urls)
            // -d keeps slapd in the foreground, so the child we hold is slapd itself.
            .args(["-d", "0"]);
        if is_root() {
            cmd.args(["-u", "openldap", "-g", "openldap"]);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .expect("start slapd");
        register(child.id(), Some(&dir));
        let mut s = Slapd {
            port,
            tls_port,
            dir,
            child: Some(child),
        };
        s.wait_ready();
        s
    }

    /// Polls until slapd accepts TCP connections (or panics with its log).
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            let up = |p: u16| p == 0 || std::net::TcpStream::connect(("127.0.0.1", p)).is_ok();
            if up(self.port) && up(self.tls_port) {
                return;
            }
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    panic!("slapd exited ({st}): {}", self.log());
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("slapd did not listen on {}: {}", self.port, self.log());
    }

    /// slapd's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("slapd.log")).unwrap_or_default()
    }

    /// Stops slapd now (a test of the server being down); the dir stays until drop.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            stop_child(&mut c, libc::SIGTERM, Duration::from_secs(10));
            unregister(c.id());
        }
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        self.stop();
        remove_dir(&self.dir);
    }
}
