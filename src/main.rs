//! `ollyscale-pooler [-d] [-q] [-v] [-u user] [-V] [-h] [--check] [pgbouncer.ini]`: argument
//! parsing, logging set-up, the runtime, and a call into `app`. No pooling logic lives here.
//! Without a config file, the Zalando operator's environment renders one (`config::operator`).
// No panic on input (issue 12): see src/lib.rs.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

use std::path::PathBuf;
use std::process::ExitCode;

use std::sync::Arc;

use ollyscale_pooler::app;
use ollyscale_pooler::context::VerbosityHook;
use ollyscale_pooler::logfile::LogFile;
use ollyscale_pooler::logformat::{Layout, FATAL};
use ollyscale_pooler::logsink::Tee;
use tracing_subscriber::fmt::format::Format;

const USAGE: &str = "ollyscale-pooler: a PgBouncer-compatible PostgreSQL connection pooler

Usage:
  ollyscale-pooler [OPTION]... CONFIG_FILE
  ollyscale-pooler [OPTION]... --operator   (or no CONFIG_FILE with PGHOST and PGUSER set)

Options:
  -c, --check      load and validate the config, print a summary, then exit
                   (non-zero, with file:line: key: problem, when it is invalid)
      --operator   build the config from the Zalando operator's pooler environment
                   (PGHOST, PGPORT, PGUSER, PGPASSWORD, PGSCHEMA, CONNECTION_POOLER_*)
  -d, --daemon     run in the background (needs logfile in the config)
  -q, --quiet      run quietly (no logging to stderr)
  -v, --verbose    increase verbosity (repeatable)
  -u, --user=USER  run as USER (needs root)
  -V, --version    show version, then exit
  -h, --help       show this help, then exit
";

struct Args {
    daemon: bool,
    quiet: bool,
    verbose: u32,
    user: Option<String>,
    check: bool,
    operator: bool,
    config: Option<PathBuf>,
}

fn parse_args() -> Result<Args, String> {
    let mut daemon = false;
    let mut quiet = false;
    let mut verbose = 0;
    let mut user = None;
    let mut config = None;
    let mut check = false;
    let mut operator = false;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "-d" | "--daemon" => daemon = true,
            "-q" | "--quiet" => quiet = true,
            "-v" | "--verbose" => verbose += 1,
            "-vv" => verbose += 2,
            "-c" | "--check" => check = true,
            "--operator" => operator = true,
            "-u" | "--user" => user = Some(it.next().ok_or("option -u needs a user name")?),
            "-V" | "--version" => {
                // PgBouncer prints its version first, then its libraries; scripts (and its
                // suite) read the first line and expect what SHOW VERSION says.
                println!(
                    "PgBouncer {}\nollyscale-pooler {}",
                    ollyscale_pooler::admin::PGBOUNCER_VERSION,
                    env!("CARGO_PKG_VERSION")
                );
                std::process::exit(0);
            }
            "-h" | "--help" => {
                print!("{USAGE}");
                std::process::exit(0);
            }
            s if s.starts_with("--user=") => user = Some(s["--user=".len()..].to_string()),
            s if s.starts_with('-') && s.len() > 1 => return Err(format!("unknown option: {s}")),
            s => {
                if config.replace(PathBuf::from(s)).is_some() {
                    return Err("only one config file may be given".into());
                }
            }
        }
    }
    if operator && config.is_some() {
        return Err("--operator takes no config file".into());
    }
    Ok(Args {
        daemon,
        quiet,
        verbose,
        user,
        check,
        operator,
        config,
    })
}

/// The config file to load: the one given, or the operator-mode files written from the
/// environment into `$OLLYSCALE_RUNTIME_DIR` (default `$TMPDIR/ollyscale-pooler`).
fn config_path(args: &Args) -> Result<PathBuf, String> {
    use ollyscale_pooler::config::operator;
    if let Some(path) = &args.config {
        return Ok(path.clone());
    }
    let env = |k: &str| std::env::var(k).ok();
    if !args.operator && !operator::detected(&env) {
        return Err(
            "a config file is required (or --operator with the operator's environment)".into(),
        );
    }
    let dir = std::env::var_os("OLLYSCALE_RUNTIME_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("ollyscale-pooler"));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    // The operator (>= 2.0) mounts a userlist with the pooler and infrastructure roles; use it
    // when present, else write one from PGUSER/PGPASSWORD.
    let mounted = std::env::var_os("OLLYSCALE_OPERATOR_USERLIST")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(operator::OPERATOR_USERLIST));
    let userlist_path = if mounted.is_file() {
        mounted.clone()
    } else {
        dir.join("userlist.txt")
    };
    let rendered =
        operator::render(&env, &userlist_path, mounted.is_file()).map_err(|e| e.to_string())?;
    let write = |path: &std::path::Path, text: &str| -> Result<(), String> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        // 0600: the userlist holds the pooler user's password.
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))
    };
    if let Some(text) = &rendered.userlist {
        write(&userlist_path, text)?;
    }
    let ini = dir.join("pgbouncer.ini");
    write(&ini, &rendered.ini)?;
    Ok(ini)
}

/// `--check`: the config loads and validates; one summary line on stdout, warnings on stderr.
fn check(path: &std::path::Path) -> ExitCode {
    match ollyscale_pooler::config::Config::load(path) {
        Ok(cfg) => {
            for w in cfg.warnings() {
                eprintln!("warning: {w}");
            }
            let g = &cfg.general;
            let listen = if g.listen_addr.is_empty() {
                "unix socket only".to_string()
            } else {
                format!("{}:{}", g.listen_addr.join(","), g.listen_port)
            };
            println!(
                "{}: OK: {} databases{}, {} users in auth_file, pool_mode {}, listen {listen}",
                path.display(),
                cfg.databases.len(),
                if cfg.fallback_database.is_some() {
                    " + *"
                } else {
                    ""
                },
                cfg.userlist.len(),
                g.pool_mode.as_str(),
            );
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for issue in &errors.0 {
                eprintln!("{issue}");
            }
            ExitCode::from(1)
        }
    }
}

/// The log filter for a verbosity: `-v` count or `verbose`, whichever is higher.
fn level_filter(verbose: u32) -> tracing_subscriber::EnvFilter {
    let level = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    tracing_subscriber::EnvFilter::new(format!("ollyscale_pooler={level},warn"))
}

/// What `init_logging` hands back: the log file (for SIGHUP), and the hook that applies a new
/// `verbose` (None when OLLYSCALE_LOG fixes the filter).
type Logging = (
    Option<Arc<LogFile>>,
    Option<VerbosityHook>,
    Arc<ollyscale_pooler::sys::Syslog>,
);

/// A hook that swaps the filter behind `handle`; `-v` stays the floor, as at start-up.
fn verbosity_hook<S: 'static>(
    handle: tracing_subscriber::reload::Handle<tracing_subscriber::EnvFilter, S>,
    cli: u32,
) -> VerbosityHook {
    Box::new(move |verbose| {
        if let Err(e) = handle.reload(level_filter(cli.max(verbose))) {
            tracing::warn!("cannot change the log level: {e}");
        }
    })
}

/// PgBouncer's line layout (`logformat::Layout`), without colours: the level words are what
/// greps look for, and a terminal gets the same bytes as a file.
fn line_format<N, L, T, F, W>(
    builder: tracing_subscriber::fmt::SubscriberBuilder<N, Format<L, T>, F, W>,
) -> tracing_subscriber::fmt::SubscriberBuilder<N, Layout, F, W>
where
    N: for<'w> tracing_subscriber::fmt::FormatFields<'w> + 'static,
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + 'static,
{
    builder
        .with_ansi(false)
        // The subscriber's own sanitization formats every line a character at a time; the
        // fields a client controls are escaped at the source instead (`logsafe::Clean`).
        .with_ansi_sanitization(false)
        .event_format(Layout::new())
}

/// Start-up failures before logging is set up (it needs the config) still go out as PgBouncer
/// writes them: log lines on stderr, the last one FATAL.
fn fatal_before_logging(lines: impl FnOnce(), fatal: &str) -> ExitCode {
    let stderr = line_format(tracing_subscriber::fmt())
        .with_writer(std::io::stderr)
        .finish();
    tracing::subscriber::with_default(stderr, || {
        lines();
        tracing::error!(target: FATAL, "{fatal}");
    });
    ExitCode::from(1)
}

fn init_logging(args: &Args, cfg: &ollyscale_pooler::config::Config) -> Result<Logging, String> {
    let from_env = tracing_subscriber::EnvFilter::try_from_env("OLLYSCALE_LOG").ok();
    let fixed = from_env.is_some();
    let filter = from_env.unwrap_or_else(|| level_filter(args.verbose.max(cfg.general.verbose)));
    let builder = line_format(tracing_subscriber::fmt().with_env_filter(filter));
    // syslog(3) gets a copy of every line while `syslog` is on, whatever else logging does.
    let syslog = Arc::new(ollyscale_pooler::sys::Syslog::default());
    let g = &cfg.general;
    syslog.configure(g.syslog, &g.syslog_ident, &g.syslog_facility);
    let tee = |w| Tee::new(w, syslog.clone());
    // One arm per writer, because the reload handle's type names the writer.
    macro_rules! install {
        ($builder:expr) => {{
            let b = $builder.with_filter_reloading();
            let hook = (!fixed).then(|| verbosity_hook(b.reload_handle(), args.verbose));
            b.init();
            hook
        }};
    }
    if let Some(path) = &cfg.general.logfile {
        let file = LogFile::open(path)
            .map_err(|e| format!("cannot open logfile {}: {e}", path.display()))?;
        let hook = install!(builder.with_writer(tee(file.clone())));
        return Ok((Some(file), hook, syslog));
    }
    let hook = if args.quiet || args.daemon {
        install!(builder.with_writer(Tee::new(std::io::sink, syslog.clone())))
    } else {
        install!(builder.with_writer(Tee::new(std::io::stderr, syslog.clone())))
    };
    Ok((None, hook, syslog))
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("ollyscale-pooler: {e}\n\n{USAGE}");
            return ExitCode::from(1);
        }
    };
    let path = match config_path(&args) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("ollyscale-pooler: {e}\n\n{USAGE}");
            return ExitCode::from(1);
        }
    };
    if args.check {
        return check(&path);
    }
    let cfg = match ollyscale_pooler::config::Config::load(&path) {
        Ok(c) => c,
        Err(e) => return fatal_before_logging(|| e.log(), "cannot load config file"),
    };
    // `-u` wins over the config's `user`; both only make sense when started as root.
    if let Some(user) = args.user.as_ref().or(cfg.general.user.as_ref()) {
        if let Err(e) = ollyscale_pooler::privileges::switch_user(user) {
            return fatal_before_logging(|| {}, &e);
        }
    }
    if args.daemon {
        if cfg.general.logfile.is_none() && !cfg.general.syslog {
            return fatal_before_logging(|| {}, "-d needs logfile or syslog set in the config");
        }
        return match ollyscale_pooler::privileges::daemonize() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fatal_before_logging(|| {}, &format!("cannot go to the background: {e}")),
        };
    }
    let (log_file, verbosity, syslog) = match init_logging(&args, &cfg) {
        Ok(f) => f,
        Err(e) => return fatal_before_logging(|| {}, &e),
    };
    cfg.warn_unimplemented();
    // One worker means one thread that runs its own event loop, as PgBouncer does: no cross-thread
    // wake-ups at all. More workers share the sessions through tokio's work-stealing scheduler.
    let workers = ollyscale_pooler::worker_threads();
    let built = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()
    };
    let runtime = match built {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(target: FATAL, "cannot start runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let pidfile = cfg.general.pidfile.clone();
    let pidfile2 = pidfile.clone();
    let code = runtime.block_on(async move {
        let pidfile = pidfile2;
        let mut running = match app::start(cfg).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(target: FATAL, "{e}");
                return ExitCode::from(1);
            }
        };
        if let Some(p) = &pidfile {
            if let Err(e) = std::fs::write(p, format!("{}\n", std::process::id())) {
                tracing::error!(target: FATAL, "cannot write pidfile {}: {e}", p.display());
                return ExitCode::from(1);
            }
        }
        if let Some(a) = running.addr {
            tracing::info!("listening on {a}");
        }
        running.log_file = log_file;
        if let Some(hook) = verbosity {
            running.ctx.set_verbosity_hook(hook);
        }
        running.ctx.set_syslog(syslog);
        running.run_until_stopped().await;
        ExitCode::SUCCESS
    });
    if let Some(p) = &pidfile {
        let _ = std::fs::remove_file(p);
    }
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    code
}
