"""Rolling-restart load: SQLAlchemy 2 async engines on asyncpg with pool_pre_ping (as ollyScale runs
them) keep writing through the pooler port while the test restarts the pooler processes behind it.

    python rolling_load.py HOST PORT USER PASSWORD DB CONTROL_DIR

Workers loop over units of work until CONTROL_DIR/stop exists (or the time bound): each unit is
one transaction (`async with session.begin()`) that inserts a row with a unique key, reads it
back, and commits. Every exception is caught, classified and counted, never retried inside the
unit (a retry would hide what the application saw):

  - between: the unit failed before the server answered its BEGIN (checkout, pre-ping, the
    BEGIN itself): the application was between transactions, nothing of the unit was open on a
    server, so the pooler owes it a server (it may hold it, never fail it);
  - inside: the BEGIN was answered, so the transaction was open on a server when a statement
    (the first INSERT included) or the COMMIT failed. Those that failed on the first statement
    are also counted apart (`inside_first_statement`): to the application they look like the
    unit's first step failing, but its transaction was already open on the server that went away.

asyncpg's query logger tells when the BEGIN (which asyncpg sends, as its own simple Query, just
before the unit's first statement) was answered.

A unit counts as committed only when COMMIT returned. At the end the script reads the table on a
fresh connection and checks nothing committed is missing and no key appears twice. Per server
address (`inet_server_addr()`) it reports how many units committed there and the wall-clock time
of the last one, and the server's clock at the unit's last statement (the UPDATE just before
COMMIT), so a caller that cut a node off can tell whether that node ran a committed write
afterwards. It writes
CONTROL_DIR/ready once the load runs, prints one `SUMMARY {json}` line and exits 0; the caller
judges the counts (the scenario itself fails only on lost or duplicated rows).
"""

import asyncio
import json
import os
import time
from collections import Counter

from sqlalchemy import String, event, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from _common import bound, check, fail, log, main, target

ENGINES = 2
WORKERS_PER_ENGINE = 6
STALL_SECONDS = 1.0
MAX_SECONDS = int(os.environ.get("ROLLING_LOAD_MAX_SECONDS", "360"))
# SQLAlchemy's pool_recycle: 3 s on loopback (tests/rolling.rs), so connections spread over both
# processes of one so_reuseport port; the container topology keeps them longer than the
# Deployment's preStop delay, so a pooler still holds clients when its SIGTERM drain starts.
POOL_RECYCLE = int(os.environ.get("ROLLING_LOAD_POOL_RECYCLE", "3"))
# max_overflow per engine. The overflow connections are opened and closed all the time (each one
# returned to a full pool is closed), so on their own they leave a pooler within seconds of it
# leaving the Service; the container topology gives one engine none, whose connections then stay
# where they are until a drain closes them.
MAX_OVERFLOW = [int(n) for n in os.environ.get("ROLLING_LOAD_MAX_OVERFLOW", "2").split(",")]
MAX_EVENTS = 40


class UnitState:
    """What the query logger learnt about the unit running on a connection."""

    __slots__ = ("begun",)

    def __init__(self):
        self.begun = False  # the server answered the unit's BEGIN: its transaction is open


# asyncpg connection id -> the unit using it now (set once the checkout and pre-ping are done,
# so the pre-ping's own BEGIN/ROLLBACK does not count).
UNITS = {}


def log_begins(dbapi_connection, _record):
    """Pool `connect` hook: marks the current unit when its BEGIN is answered."""
    apg = dbapi_connection.driver_connection

    def on_query(record, key=id(apg)):
        unit = UNITS.get(key)
        if unit is not None and record.exception is None and record.query.lstrip()[:5].upper() == "BEGIN":
            unit.begun = True

    apg.add_query_logger(on_query)


class Base(DeclarativeBase):
    pass


class Write(Base):
    __tablename__ = "rolling_writes"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(64), unique=True)
    backend: Mapped[int]
    node: Mapped[str] = mapped_column(String(64), default="")


def make_engine(t, max_overflow=2):
    # ollyScale's settings; pool_recycle (POOL_RECYCLE) renews connections.
    engine = create_async_engine(
        t.url("postgresql+asyncpg"),
        pool_size=4,
        max_overflow=max_overflow,
        pool_pre_ping=True,
        pool_recycle=POOL_RECYCLE,
        pool_timeout=30,
        connect_args={"statement_cache_size": 0, "prepared_statement_cache_size": 0, "timeout": 10},
    )
    event.listen(engine.sync_engine, "connect", log_begins)
    return engine


class Tally:
    def __init__(self):
        self.committed = []
        self.between = Counter()
        self.inside = Counter()
        self.inside_first = 0  # inside errors on the unit's first statement (BEGIN answered)
        self.first_error = {}
        self.slowest = 0.0  # seconds of the slowest unit, failed or not
        self.stalls = 0  # units that took longer than STALL_SECONDS
        self.nodes = {}  # server address -> units committed there
        self.last_commit = {}  # server address -> wall-clock time of the last COMMIT it acknowledged
        self.last_ran = {}  # server address -> its clock at the last statement of a committed unit
        self.events = []  # (wall-clock time, where, kind) of the first MAX_EVENTS errors

    def error(self, where, e):
        kind = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:160]
        (self.between if where == "between" else self.inside)[kind] += 1
        self.first_error.setdefault(where, kind)
        if len(self.events) < MAX_EVENTS:
            # Wall-clock, so a caller can line an error up with what it did (a stop, a cut).
            self.events.append((round(time.time(), 3), where, kind))


async def unit(Session, key, tally):
    stage = "between"
    state = UnitState()
    apg = None
    first = False  # the unit's first statement (the INSERT that asyncpg sends after BEGIN) runs
    t0 = time.monotonic()
    try:
        async with Session() as session:
            async with session.begin():
                # The checkout (with its pre-ping); asyncpg sends the BEGIN with the first statement.
                conn = await session.connection()
                apg = id((await conn.get_raw_connection()).driver_connection)
                UNITS[apg] = state
                session.add(Write(key=key, backend=0))
                first = True
                await session.flush()
                first = False
                stage = "inside"
                got = await session.scalar(select(Write.key).where(Write.key == key))
                check(got == key, f"{key}: own row not visible inside its transaction")
                node, ran_at = (await session.execute(text(
                    "UPDATE rolling_writes SET backend = pg_backend_pid(), "
                    "node = coalesce(host(inet_server_addr()), 'local') WHERE key = :k "
                    "RETURNING node, extract(epoch FROM clock_timestamp())::float8"
                ), {"k": key})).one()
        # The classifier's own check: a committed unit had its BEGIN answered.
        check(state.begun, f"{key}: committed, but the query logger saw no answered BEGIN")
        tally.committed.append(key)
        tally.nodes[node] = tally.nodes.get(node, 0) + 1
        tally.last_commit[node] = time.time()
        tally.last_ran[node] = max(tally.last_ran.get(node, 0.0), ran_at)
    except SystemExit:
        raise
    except Exception as e:  # noqa: BLE001 - every application-visible error is counted
        if stage == "between" and state.begun:
            stage = "inside"
            tally.inside_first += first
        tally.error(stage, e)
    finally:
        # Only our own entry: the connection may already serve the next unit (it went back to the
        # pool while the session closed).
        if apg is not None and UNITS.get(apg) is state:
            del UNITS[apg]
        took = time.monotonic() - t0
        tally.slowest = max(tally.slowest, took)
        tally.stalls += took > STALL_SECONDS


async def worker(Session, name, stop_file, tally, deadline):
    n = 0
    while not os.path.exists(stop_file) and time.monotonic() < deadline:
        await unit(Session, f"{name}-{n}", tally)
        n += 1
        await asyncio.sleep(0.005)


async def run(t):
    control = t.extra[0] if t.extra else fail("CONTROL_DIR argument missing")
    stop_file = os.path.join(control, "stop")
    engines = [make_engine(t, MAX_OVERFLOW[min(i, len(MAX_OVERFLOW) - 1)]) for i in range(ENGINES)]
    tally = Tally()
    try:
        async with engines[0].begin() as conn:
            await conn.run_sync(Base.metadata.drop_all)
            await conn.run_sync(Base.metadata.create_all)
        deadline = time.monotonic() + MAX_SECONDS
        tasks = [
            asyncio.create_task(worker(async_sessionmaker(e, expire_on_commit=False, class_=AsyncSession),
                                       f"e{i}w{w}", stop_file, tally, deadline))
            for i, e in enumerate(engines)
            for w in range(WORKERS_PER_ENGINE)
        ]
        open(os.path.join(control, "ready"), "w").close()
        log(f"load running: {len(tasks)} workers on {ENGINES} engines")
        started = time.monotonic()
        await asyncio.gather(*tasks)
        took = time.monotonic() - started
        check(os.path.exists(stop_file), f"the load ran into its {MAX_SECONDS}s bound without a stop")
    finally:
        for e in engines:
            await e.dispose()

    # Verify on a fresh engine: every committed key is there exactly once.
    verify = make_engine(t)
    try:
        async with verify.connect() as conn:
            rows = (await conn.execute(select(Write.key))).scalars().all()
            backends = await conn.scalar(select(func.count(func.distinct(Write.backend))))
    finally:
        await verify.dispose()
    present = Counter(rows)
    lost = [k for k in tally.committed if present[k] != 1]
    dups = [k for k, c in present.items() if c > 1]
    summary = {
        "seconds": round(took, 1),
        "committed": len(tally.committed),
        "rows": len(rows),
        "lost": len(lost),
        "duplicated": len(dups),
        "server_backends": backends,
        "errors_between": sum(tally.between.values()),
        "errors_inside": sum(tally.inside.values()),
        "inside_first_statement": tally.inside_first,
        "between": dict(tally.between),
        "inside": dict(tally.inside),
        "slowest_unit_seconds": round(tally.slowest, 3),
        "stalls_over_1s": tally.stalls,
        "committed_per_node": tally.nodes,
        "last_commit_per_node": {k: round(v, 3) for k, v in tally.last_commit.items()},
        "last_statement_per_node": {k: round(v, 3) for k, v in tally.last_ran.items()},
        "error_events": tally.events,
    }
    print("SUMMARY " + json.dumps(summary, sort_keys=True), flush=True)
    check(not lost, f"committed rows missing: {lost[:5]}")
    check(not dups, f"keys written twice: {dups[:5]}")


def go():
    t = target("rolling-restart load (SQLAlchemy async on asyncpg, pool_pre_ping)")
    asyncio.run(run(t))


if __name__ == "__main__":
    bound(MAX_SECONDS + 30)
    main(go)
