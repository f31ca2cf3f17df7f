"""Shared by the client scenarios in tests/clients/: arguments, checks, a time bound.

Each scenario is run by tests/clients.rs as
    python <scenario>.py HOST PORT USER PASSWORD DBNAME [EXTRA...]
(or with OLLY_HOST, OLLY_PORT, OLLY_USER, OLLY_PASSWORD, OLLY_DB in the environment), prints what it
does, and exits 0 only if every check passed. Any failure exits non-zero with a message that says
which step failed and what was seen.
"""

import faulthandler
import os
import sys
import time
import traceback
from dataclasses import dataclass, field

ENV_NAMES = ("OLLY_HOST", "OLLY_PORT", "OLLY_USER", "OLLY_PASSWORD", "OLLY_DB")


@dataclass
class Target:
    """Where the pooler is, and who we are."""

    host: str
    port: int
    user: str
    password: str
    db: str
    extra: list = field(default_factory=list)

    def libpq(self, **over):
        """A libpq conninfo string (psycopg)."""
        parts = dict(
            host=self.host,
            port=str(self.port),
            user=self.user,
            password=self.password,
            dbname=self.db,
            connect_timeout="10",
        )
        parts.update({k: str(v) for k, v in over.items()})
        return " ".join(f"{k}={quote(v)}" for k, v in parts.items())

    def url(self, driver):
        """An SQLAlchemy URL, e.g. url("postgresql+psycopg")."""
        from sqlalchemy.engine import URL

        return URL.create(
            driver,
            username=self.user,
            password=self.password,
            host=self.host,
            port=self.port,
            database=self.db,
        )


def quote(v):
    v = str(v)
    if v and not any(c in v for c in " '\\="):
        return v
    return "'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'"


def target(name):
    """Parse argv (or the OLLY_* environment) and print what this scenario runs against."""
    argv = sys.argv[1:]
    if len(argv) >= 5:
        host, port, user, password, db, *extra = argv
    elif all(os.environ.get(n) for n in ENV_NAMES):
        host, port, user, password, db = (os.environ[n] for n in ENV_NAMES)
        extra = []
    else:
        fail(f"usage: {sys.argv[0]} HOST PORT USER PASSWORD DBNAME [EXTRA...] (or set {', '.join(ENV_NAMES)})")
    t = Target(host, int(port), user, password, db, extra)
    log(f"{name}: {t.user}@{t.host}:{t.port}/{t.db} extra={t.extra} python {sys.version.split()[0]}")
    return t


_START = time.monotonic()


def log(msg):
    print(f"[{time.monotonic() - _START:7.3f}s] {msg}", flush=True)


def fail(msg):
    print(f"FAILED: {msg}", file=sys.stderr, flush=True)
    sys.exit(1)


def check(cond, msg):
    """Fail with `msg` unless `cond`."""
    if not cond:
        fail(msg)


def check_eq(got, want, what):
    if got != want:
        fail(f"{what}: got {got!r}, want {want!r}")


def bound(seconds):
    """Print every thread's traceback and exit (code 1) if this process runs past `seconds`. A C
    watchdog thread (faulthandler), so it fires even while a thread is blocked in a driver call."""
    faulthandler.dump_traceback_later(seconds, exit=True)


def main(fn):
    """Run fn(); any exception is a failure with its traceback."""
    try:
        fn()
    except SystemExit:
        raise
    except BaseException:  # noqa: BLE001 - report everything, including KeyboardInterrupt
        traceback.print_exc()
        fail(f"unexpected exception: {sys.exc_info()[1]!r}")
    log("OK")
