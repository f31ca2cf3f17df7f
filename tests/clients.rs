//! Real Python clients through the built pooler in transaction mode: asyncpg, SQLAlchemy 2 async
//! on asyncpg, alembic on psycopg 3, psycopg 3 (threads, COPY, cursors, notices, tracked
//! parameters) and psycopg 3 against the admin console. These are the drivers ollyScale's services
//! use, so a failure here is a failure those services would see.
//!
//! Each test runs one script of `tests/clients/` as `python -B <script> HOST PORT USER PASSWORD DB
//! [EXTRA...]` against its own pooler and database (one PostgreSQL serves the whole binary) and
//! asserts exit 0. The script's output is printed (`--nocapture` shows it on success too); on
//! failure the pooler's log tail follows it (`OLLYSCALE_LOG=debug` for more, `KEEP_TEST_DIRS=1`
//! keeps the whole log).
//!
//! The interpreter is `$OLLY_PYTHON`, else `target/pyenv/bin/python` (scripts/test.sh creates that
//! venv with pinned asyncpg, psycopg[binary], sqlalchemy[asyncio] and alembic). A missing
//! interpreter or module fails every test with instructions: nothing is skipped.
//!
//! `OLLY_CLIENTS_POOLER=pgbouncer` runs the same scenarios against the system's PgBouncer with the
//! same config, to tell a pooler bug from a client's own limits.

mod common;

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use common::{Pg, Pooler};

/// Bound on one scenario (each script also bounds itself a little below this).
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(240);

/// Modules every scenario imports between them.
const MODULES: &str = "asyncpg, psycopg, psycopg_binary, sqlalchemy, greenlet, alembic";

/// One PostgreSQL for every test of this binary (it outlives them; the harness's exit hook stops it).
fn pg() -> &'static Pg {
    static PG: OnceLock<Pg> = OnceLock::new();
    PG.get_or_init(Pg::start)
}

/// The pooler under test (or PgBouncer with `OLLY_CLIENTS_POOLER=pgbouncer`), in transaction mode,
/// with a fresh database `db` of its own (so server counts and tables are the scenario's alone).
fn pooler(db: &str, databases_extra: &str, pgbouncer_extra: &str) -> Pooler {
    python(); // fail on a missing venv before starting any server
    let pg = pg();
    pg.psql_db("postgres", &format!("CREATE DATABASE {db} OWNER olly"));
    pg.psql_db(db, "GRANT ALL ON SCHEMA public TO md5user, scramuser");
    let databases = format!(
        "{db} = host=127.0.0.1 port={} dbname={db}\n{databases_extra}",
        pg.port
    );
    match std::env::var("OLLY_CLIENTS_POOLER").as_deref() {
        Ok("pgbouncer") => Pooler::start_pgbouncer(pg, &databases, pgbouncer_extra, ""),
        Ok("") | Err(_) => Pooler::start(pg, &databases, pgbouncer_extra, ""),
        Ok(other) => panic!("OLLY_CLIENTS_POOLER={other:?}: only \"pgbouncer\" is known"),
    }
}

/// The venv's interpreter, checked once for every module the scenarios need.
fn python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let (python, origin) = match std::env::var_os("OLLY_PYTHON") {
            Some(p) if !p.is_empty() => (PathBuf::from(p), "$OLLY_PYTHON"),
            _ => (
                Path::new(env!("CARGO_MANIFEST_DIR")).join("target/pyenv/bin/python"),
                "the default (OLLY_PYTHON unset)",
            ),
        };
        let help = "These tests need a Python venv with the client libraries; scripts/test.sh \
                    creates it at target/pyenv with the pinned versions and exports OLLY_PYTHON. \
                    Run `scripts/test.sh`, or the venv part of it by hand, or point OLLY_PYTHON at \
                    an interpreter that has them.";
        assert!(
            python.exists(),
            "Python interpreter {} ({origin}) does not exist.\n{help}",
            python.display()
        );
        let out = Command::new(&python)
            .args(["-B", "-c"])
            .arg(format!("import {MODULES}"))
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {} ({origin}): {e}\n{help}", python.display()));
        assert!(
            out.status.success(),
            "{} ({origin}) cannot import {MODULES}:\n{}\n{help}",
            python.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        python
    })
}

/// Runs `tests/clients/<script>` against the pooler and panics with its output unless it exits 0.
fn run_scenario(
    pooler: &Pooler,
    script: &str,
    user: &str,
    password: &str,
    db: &str,
    extra: &[&str],
) {
    let python = python();
    let script_path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/clients")
        .join(script);
    assert!(script_path.exists(), "missing {}", script_path.display());
    // stdout and stderr into one file, so tracebacks stay in order with the progress lines.
    let out_file = tempfile::tempfile().expect("temp file for the script's output");
    let mut cmd = Command::new(python);
    // Only the arguments say where to connect, and only the venv says what to import.
    for (key, _) in std::env::vars_os() {
        let k = key.to_string_lossy();
        if k.starts_with("PG") || k == "PYTHONPATH" || k == "PYTHONHOME" {
            cmd.env_remove(key);
        }
    }
    cmd.arg("-B")
        .arg(&script_path)
        .args(["127.0.0.1", &pooler.port.to_string(), user, password, db])
        .args(extra)
        .env("PYTHONUNBUFFERED", "1")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .stdout(out_file.try_clone().expect("dup output file"))
        .stderr(out_file.try_clone().expect("dup output file"));
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {} {script}: {e}", python.display()));
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait on the script") {
            break Some(status);
        }
        if started.elapsed() >= SCRIPT_TIMEOUT {
            // Our own unreaped child: its PID cannot have been recycled.
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(20));
    };
    let output = read_all(out_file);
    let took = started.elapsed();
    match status {
        Some(s) if s.success() => {
            println!("--- {script}: ok in {took:.1?} ---\n{output}");
        }
        Some(s) => panic!(
            "{script} failed ({s}) after {took:.1?} against the pooler on port {}:\n--- {script} output ---\n{output}",
            pooler.port
        ),
        None => panic!(
            "{script} still running after {SCRIPT_TIMEOUT:?}; killed it:\n--- {script} output ---\n{output}"
        ),
    }
}

fn read_all(mut file: File) -> String {
    use std::io::Seek;
    let mut buf = Vec::new();
    file.rewind().expect("rewind the output file");
    file.read_to_end(&mut buf).expect("read the output file");
    String::from_utf8_lossy(&buf).into_owned()
}

#[test]
fn asyncpg_concurrency_copy_errors_and_cancel() {
    let db = "clients_asyncpg";
    let pooler = pooler(db, "", "default_pool_size = 3\nmax_client_conn = 100");
    run_scenario(&pooler, "asyncpg_pool.py", "olly", "olly_pw", db, &[]);
}

#[test]
fn sqlalchemy_async_engine_on_asyncpg() {
    let db = "clients_sqlalchemy";
    let pooler = pooler(db, "", "default_pool_size = 3");
    let script = "sqlalchemy_asyncpg.py";
    run_scenario(&pooler, script, "scramuser", "scram_pw", db, &[]);
}

#[test]
fn alembic_migrations_on_psycopg() {
    let db = "clients_alembic";
    let pooler = pooler(db, "", "default_pool_size = 2");
    run_scenario(&pooler, "alembic_psycopg.py", "md5user", "md5_pw", db, &[]);
}

#[test]
fn psycopg_threads_copy_cursors_notices_and_parameters() {
    let db = "clients_psycopg";
    // The same database over a single server, so two clients share it for sure.
    let one = format!(
        "{db}_one = host=127.0.0.1 port={} dbname={db} pool_size=1",
        pg().port
    );
    let pooler = pooler(db, &one, "default_pool_size = 2");
    let script = "psycopg_threads.py";
    let extra = [format!("{db}_one")];
    run_scenario(&pooler, script, "md5user", "md5_pw", db, &[&extra[0]]);
}

#[test]
fn driver_defaults_with_named_prepared_statements() {
    let db = "clients_prepared";
    // Fewer servers than clients: statements must follow their clients across servers.
    let pooler = pooler(db, "", "default_pool_size = 3");
    run_scenario(&pooler, "prepared_defaults.py", "olly", "olly_pw", db, &[]);
}

#[test]
fn psycopg_admin_console() {
    let db = "clients_admin";
    let pooler = pooler(db, "", "");
    let extra = [db, "stats", "stats_pw"];
    run_scenario(
        &pooler,
        "psycopg_admin.py",
        "olly",
        "olly_pw",
        "pgbouncer",
        &extra,
    );
}
