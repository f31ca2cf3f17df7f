"""Scenario 2: SQLAlchemy 2 async engine on asyncpg through the pooler in transaction mode, set up
as ollyScale's FastAPI app and OTLP receiver do it: `postgresql+asyncpg://`, connect_args
statement_cache_size=0 and prepared_statement_cache_size=0, pool_pre_ping=True.

The ORM creates its tables from metadata; concurrent sessions insert and select (the async engine's
own pool of 8 over the pooler's 3 servers); an IntegrityError rolls back and the session goes on;
pre-ping runs on every checkout. SQLAlchemy's asyncpg dialect runs every statement inside a
transaction it opens itself, with a named prepared statement per execution (asyncpg prepares
Parse/Describe/Flush, then Bind/Execute/Sync), so this exercises the pooler's extended-protocol
path inside transactions.
"""

import asyncio
import datetime as dt
import time

import sqlalchemy
from sqlalchemy import ForeignKey, String, func, select, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship, selectinload

from _common import bound, check, check_eq, fail, log, main, target

SESSIONS = 12
BATCHES = 6
SPANS_PER_BATCH = 5


class Base(DeclarativeBase):
    pass


class Trace(Base):
    __tablename__ = "clients_sa_traces"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    trace_id: Mapped[str] = mapped_column(String(32), unique=True)
    service: Mapped[str] = mapped_column(String(64), index=True)
    received_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())
    spans: Mapped[list["Span"]] = relationship(back_populates="trace", cascade="all, delete-orphan")


class Span(Base):
    __tablename__ = "clients_sa_spans"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    trace_pk: Mapped[int] = mapped_column(ForeignKey("clients_sa_traces.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(128))
    duration_ns: Mapped[int]
    attributes: Mapped[dict] = mapped_column(JSONB, default=dict)
    trace: Mapped[Trace] = relationship(back_populates="spans")


def make_engine(t):
    return create_async_engine(
        t.url("postgresql+asyncpg"),
        pool_size=5,
        max_overflow=3,
        pool_pre_ping=True,
        pool_timeout=30,
        connect_args={"statement_cache_size": 0, "prepared_statement_cache_size": 0, "timeout": 30},
    )


async def ingest(Session, s):
    """One receiver task: each batch is one transaction with a trace and its spans, then reads back."""
    for b in range(BATCHES):
        trace_id = f"{s:04d}{b:04d}".ljust(32, "0")
        async with Session() as session:
            async with session.begin():
                trace = Trace(trace_id=trace_id, service=f"svc-{s % 3}")
                trace.spans = [
                    Span(name=f"op-{k}", duration_ns=1000 * (k + 1), attributes={"s": s, "b": b, "k": k, "ok": True})
                    for k in range(SPANS_PER_BATCH)
                ]
                session.add(trace)
                await session.flush()
                check(trace.id is not None, f"session {s} batch {b}: no primary key after flush")
                n = await session.scalar(select(func.count()).select_from(Span).where(Span.trace_pk == trace.id))
                check_eq(n, SPANS_PER_BATCH, f"session {s} batch {b}: spans seen inside the transaction")
        async with Session() as session:
            got = await session.scalar(
                select(Trace).where(Trace.trace_id == trace_id).options(selectinload(Trace.spans))
            )
            check(got is not None, f"session {s} batch {b}: committed trace not found")
            check_eq(sorted(sp.name for sp in got.spans), [f"op-{k}" for k in range(SPANS_PER_BATCH)],
                     f"session {s} batch {b}: spans read back")
            check_eq(got.spans[0].attributes["s"], s, f"session {s} batch {b}: JSONB round trip")
            total = await session.scalar(
                select(func.sum(Span.duration_ns)).join(Trace).where(Trace.trace_id == trace_id)
            )
            check_eq(total, 1000 * sum(range(1, SPANS_PER_BATCH + 1)), f"session {s} batch {b}: aggregate")
    return BATCHES


async def ingest_one(Session, s):
    async with Session() as session:
        async with session.begin():
            session.add(Trace(trace_id=f"after-kill-{s}".ljust(32, "0"), service="after-kill"))
        return await session.scalar(
            select(func.count()).select_from(Trace).where(Trace.trace_id == f"after-kill-{s}".ljust(32, "0"))
        )


async def rollback_on_error(Session):
    """A duplicate trace_id fails the transaction; rollback; the same session keeps working."""
    async with Session() as session:
        session.add(Trace(trace_id="dup".ljust(32, "x"), service="dup"))
        await session.commit()
        session.add(Trace(trace_id="dup".ljust(32, "x"), service="dup-again"))
        session.add(Trace(trace_id="not-committed".ljust(32, "x"), service="dup-again"))
        try:
            await session.commit()
            fail("duplicate trace_id committed")
        except IntegrityError as e:
            code = getattr(e.orig, "sqlstate", None) or getattr(e.orig, "pgcode", None)
            check_eq(code, "23505", "unique violation sqlstate")
            log(f"duplicate -> IntegrityError 23505: {str(e.orig).splitlines()[0]}")
            await session.rollback()
        n = await session.scalar(select(func.count()).select_from(Trace).where(Trace.service == "dup-again"))
        check_eq(n, 0, "rows of the rolled-back transaction")
        await session.commit()  # end the autobegun read-only transaction
        # A server error in an explicit transaction, then rollback, then more work.
        try:
            async with session.begin():
                await session.execute(text("SELECT 1 / 0"))
            fail("SELECT 1/0 did not raise")
        except sqlalchemy.exc.DBAPIError as e:
            log(f"division by zero -> {type(e).__name__}: {str(e.orig).splitlines()[0]}")
        check_eq(await session.scalar(text("SELECT 40 + 2")), 42, "query after a rolled-back error")
        await session.commit()


async def run(t):
    engine = make_engine(t)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(Base.metadata.drop_all)
            await conn.run_sync(Base.metadata.create_all)
        async with engine.connect() as conn:
            tables = await conn.run_sync(lambda c: sqlalchemy.inspect(c).get_table_names())
            check({"clients_sa_traces", "clients_sa_spans"} <= set(tables), f"tables after create_all: {tables}")
        log("metadata.create_all done")

        Session = async_sessionmaker(engine, expire_on_commit=False, class_=AsyncSession)
        started = time.monotonic()
        done = await asyncio.gather(*(ingest(Session, s) for s in range(SESSIONS)))
        log(f"{SESSIONS} concurrent sessions committed {sum(done)} traces in {time.monotonic() - started:.2f}s")
        async with Session() as session:
            traces = await session.scalar(select(func.count()).select_from(Trace))
            spans = await session.scalar(select(func.count()).select_from(Span))
        check_eq(traces, SESSIONS * BATCHES, "traces in the table")
        check_eq(spans, SESSIONS * BATCHES * SPANS_PER_BATCH, "spans in the table")

        await rollback_on_error(Session)

        # Pre-ping on checkout after the pool sat idle, and a fresh pool after dispose.
        await asyncio.sleep(0.5)
        async with engine.connect() as conn:
            check_eq(await conn.scalar(text("SELECT 1")), 1, "query after pre-ping")
        log(f"pool after the run: {engine.pool.status()}")

        # The pooler's other server connections die (as in a PostgreSQL restart or failover);
        # the engine's pooled client connections to the pooler must keep working.
        async with engine.connect() as conn:
            killed = await conn.scalar(
                text(
                    "SELECT count(pg_terminate_backend(pid, 5000)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND usename = current_user "
                    "AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
                )
            )
            await conn.commit()
        log(f"terminated {killed} other server connections of the pooler")
        await asyncio.sleep(1.0)
        again = await asyncio.gather(*(ingest_one(Session, 100 + s) for s in range(6)))
        check_eq(sum(again), 6, "sessions after the servers were terminated")
        await engine.dispose()
        async with Session() as session:
            check_eq(await session.scalar(select(func.count()).select_from(Trace).where(Trace.service == "dup")), 1,
                     "query on a fresh pool after dispose")
    finally:
        await engine.dispose()


def go():
    t = target("SQLAlchemy async engine on asyncpg")
    import asyncpg

    log(f"sqlalchemy {sqlalchemy.__version__}, asyncpg {asyncpg.__version__}")
    asyncio.run(run(t))


if __name__ == "__main__":
    bound(200)
    main(go)
