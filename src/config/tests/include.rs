//! `%include` and the files a load reads: relative and absolute includes, errors that point at
//! the right file, include loops, the auth file.

use std::path::PathBuf;

use super::*;

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = std::env::temp_dir().join(format!(
            "ollyscale-config-{tag}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).expect("write temp file");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn include_relative_to_including_file_and_absolute() {
    let dir = TempDir::new("include");
    let child_name = format!("olly-child-{}.ini", std::process::id());
    dir.write(
        &child_name,
        "listen_port = 7777\n[databases]\nfromchild = port=1\n",
    );
    let abs = dir.write("abs.ini", "[users]\nbob = pool_size=2\n");
    let main_text = format!(
        "[pgbouncer]\n%include {child_name}\nmine = port=2\n%include {}\n",
        abs.display()
    );
    let main = dir.write("main.ini", &main_text);
    let cfg = Config::load(&main).expect("loads");
    assert_eq!(cfg.general.listen_port, 7777);
    // The section set in the child carries on in the parent, as in PgBouncer.
    assert!(cfg.databases.contains_key("fromchild") && cfg.databases.contains_key("mine"));
    assert_eq!(cfg.users["bob"].pool_size, Some(2));
    assert_eq!(cfg.path, main);
}

#[test]
fn include_errors_point_at_the_right_file() {
    let dir = TempDir::new("include-err");
    let child = dir.write("child.ini", "\nlisten_port = zero\n");
    let main = dir.write(
        "main.ini",
        &format!(
            "[pgbouncer]\n%include {}\n%include missing.ini\n",
            child.display()
        ),
    );
    let errs = Config::load(&main).expect_err("must fail").0;
    assert_eq!(errs.len(), 2, "{errs:#?}");
    assert_eq!(
        (errs[0].file.clone(), errs[0].line),
        (child.display().to_string(), 2)
    );
    assert_eq!(
        (errs[1].file.clone(), errs[1].line),
        (main.display().to_string(), 3)
    );
    assert!(errs[1].message.contains("cannot read included file"));
}

#[test]
fn include_loops_stop() {
    let dir = TempDir::new("include-loop");
    let path = dir.0.join("self.ini");
    dir.write(
        "self.ini",
        &format!("[pgbouncer]\n%include {}\n", path.display()),
    );
    let errs = Config::load(&path).expect_err("loop").0;
    assert_eq!(errs.len(), 1);
    assert!(errs[0].message.contains("nesting"));
}

#[test]
fn load_reads_the_auth_file() {
    let dir = TempDir::new("load");
    let users = dir.write(
        "userlist.txt",
        "\"admin\" \"md545f2603610af569b6155c45067268c6b\"\n",
    );
    let main = dir.write(
        "p.ini",
        &format!("[pgbouncer]\nauth_file = {}\n", users.display()),
    );
    let cfg = Config::load(&main).expect("loads");
    assert!(matches!(cfg.userlist.get("admin"), Some(Secret::Md5(_))));
}

// ---------------------------------------------------------------- console SET
