"""Rolling-restart load: SQLAlchemy 2 async engines on asyncpg with pool_pre_ping (as ollyScale runs
them) keep writing through the pooler port while the test restarts the pooler processes behind it.

    python rolling_load.py HOST PORT USER PASSWORD DB CONTROL_DIR

Workers loop over units of work until CONTROL_DIR/stop exists (or the time bound): each unit is
one transaction (`async with session.begin()`) that inserts a row with a unique key, reads it
back, and commits. Every exception is caught, classified and counted, never retried inside the
unit (a retry would hide what the application saw):

  - between: the unit failed before its first statement returned (checkout, pre-ping, BEGIN +
    first INSERT): the application was between transactions when the pooler went away;
  - inside: a statement after the first one, or the COMMIT, failed: the transaction was open.

A unit counts as committed only when COMMIT returned. At the end the script reads the table on a
fresh connection and checks nothing committed is missing and no key appears twice. Per server
address (`inet_server_addr()`) it reports how many units committed there and the wall-clock time
of the last one, so a caller that cut a node off can tell whether that node acknowledged a write
afterwards. It writes
CONTROL_DIR/ready once the load runs, prints one `SUMMARY {json}` line and exits 0; the caller
judges the counts (the scenario itself fails only on lost or duplicated rows).
"""

import asyncio
import json
import os
import time
from collections import Counter

from sqlalchemy import String, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from _common import bound, check, fail, log, main, target

ENGINES = 2
WORKERS_PER_ENGINE = 6
STALL_SECONDS = 1.0
MAX_SECONDS = int(os.environ.get("ROLLING_LOAD_MAX_SECONDS", "150"))


class Base(DeclarativeBase):
    pass


class Write(Base):
    __tablename__ = "rolling_writes"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(64), unique=True)
    backend: Mapped[int]
    node: Mapped[str] = mapped_column(String(64), default="")


def make_engine(t):
    # ollyScale's settings; pool_recycle renews connections so they spread over both processes.
    return create_async_engine(
        t.url("postgresql+asyncpg"),
        pool_size=4,
        max_overflow=2,
        pool_pre_ping=True,
        pool_recycle=3,
        pool_timeout=30,
        connect_args={"statement_cache_size": 0, "prepared_statement_cache_size": 0, "timeout": 10},
    )


class Tally:
    def __init__(self):
        self.committed = []
        self.between = Counter()
        self.inside = Counter()
        self.first_error = {}
        self.slowest = 0.0  # seconds of the slowest unit, failed or not
        self.stalls = 0  # units that took longer than STALL_SECONDS
        self.nodes = {}  # server address -> units committed there
        self.last_commit = {}  # server address -> wall-clock time of the last COMMIT it acknowledged

    def error(self, where, e):
        kind = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:160]
        (self.between if where == "between" else self.inside)[kind] += 1
        self.first_error.setdefault(where, kind)


async def unit(Session, key, tally):
    stage = "between"
    t0 = time.monotonic()
    try:
        async with Session() as session:
            async with session.begin():
                session.add(Write(key=key, backend=0))
                await session.flush()
                stage = "inside"
                got = await session.scalar(select(Write.key).where(Write.key == key))
                check(got == key, f"{key}: own row not visible inside its transaction")
                node = await session.scalar(text(
                    "UPDATE rolling_writes SET backend = pg_backend_pid(), "
                    "node = coalesce(host(inet_server_addr()), 'local') WHERE key = :k RETURNING node"
                ), {"k": key})
        tally.committed.append(key)
        tally.nodes[node] = tally.nodes.get(node, 0) + 1
        tally.last_commit[node] = time.time()
    except SystemExit:
        raise
    except Exception as e:  # noqa: BLE001 - every application-visible error is counted
        tally.error(stage, e)
    finally:
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
    engines = [make_engine(t) for _ in range(ENGINES)]
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
        "between": dict(tally.between),
        "inside": dict(tally.inside),
        "slowest_unit_seconds": round(tally.slowest, 3),
        "stalls_over_1s": tally.stalls,
        "committed_per_node": tally.nodes,
        "last_commit_per_node": {k: round(v, 3) for k, v in tally.last_commit.items()},
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
