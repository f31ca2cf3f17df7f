//! syslog, syslog_ident and syslog_facility: the pooler runs in its own mount namespace whose
//! /dev is a temp dir holding the test's datagram socket `log`, so syslog(3) lines land in the
//! test instead of the machine's /dev/log (there is none here).

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::time::Duration;

use crate::common::Pooler;
use crate::console::Raw;
use crate::{admin, pg};

/// A script that starts the built pooler with `<dev>` mounted over /dev (util-linux unshare
/// gives the new namespace private propagation, so the machine's /dev is untouched).
fn wrapper(dir: &Path, dev: &Path) -> std::path::PathBuf {
    let script = dir.join("in-namespace.sh");
    let bin = env!("CARGO_BIN_EXE_ollyscale-pooler");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nexec unshare -m sh -c 'mount --bind \"$0\" /dev && exec \"$1\" \"$2\"' \
             '{}' '{bin}' \"$1\"\n",
            dev.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

/// Datagrams received until `limit` passes without a new one.
fn drain(sock: &UnixDatagram, limit: Duration) -> Vec<String> {
    sock.set_read_timeout(Some(limit)).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = sock.recv(&mut buf) {
        out.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syslog_lines_with_ident_and_facility_and_set_switches_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dev = tmp.path().join("dev");
    std::fs::create_dir(&dev).unwrap();
    let sock = UnixDatagram::bind(dev.join("log")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dev.join("log"), std::fs::Permissions::from_mode(0o777)).unwrap();
    let script = wrapper(tmp.path(), &dev);
    let p = Pooler::start_program(
        &script,
        pg(),
        "",
        "syslog = 1\nsyslog_ident = olly-test\nsyslog_facility = local3",
        "",
    );
    let mut c = Raw::connect(p.port, "olly", "olly_pw", "testdb")
        .await
        .unwrap();
    assert!(c.query("SELECT 1").await.error.is_none());
    let lines = drain(&sock, Duration::from_millis(500));
    // local3 = 19, info = 6: priority 19 * 8 + 6.
    let login = lines
        .iter()
        .find(|l| l.contains("login attempt: db=testdb user=olly"))
        .unwrap_or_else(|| panic!("no login line in {lines:?}"));
    assert!(login.starts_with("<158>"), "{login}");
    assert!(
        login.contains(&format!("olly-test[{}]: ", p.pid())),
        "{login}"
    );
    // The log file still gets everything.
    assert!(p.log().contains("login attempt: db=testdb user=olly"));

    let mut console = admin(&p).await;
    assert!(console
        .query("SET syslog_ident = 'other'")
        .await
        .error
        .is_none());
    let _c2 = Raw::connect(p.port, "olly", "olly_pw", "testdb")
        .await
        .unwrap();
    let lines = drain(&sock, Duration::from_millis(500));
    assert!(
        lines
            .iter()
            .any(|l| l.contains(&format!("other[{}]: ", p.pid()))),
        "{lines:?}"
    );
    assert!(console.query("SET syslog = 0").await.error.is_none());
    let _ = drain(&sock, Duration::from_millis(200));
    let _c3 = Raw::connect(p.port, "olly", "olly_pw", "testdb")
        .await
        .unwrap();
    let lines = drain(&sock, Duration::from_millis(500));
    assert!(lines.is_empty(), "syslog off: {lines:?}");
}
