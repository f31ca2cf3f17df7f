"""Drivers with their default prepared-statement settings, through a pool smaller than the client
count, so a client's next transaction often runs on a server that never saw its statements:

- psycopg 3 with the default prepare_threshold (5): after five runs a query becomes a named
  server-side statement (_pg3_N) that later Binds name;
- asyncpg with its default statement cache: every query is a named statement (__asyncpg_stmt_N__);
- SQLAlchemy's asyncpg dialect with its default prepared-statement cache;
- a statement closed by the client and prepared again under the same name;
- named statements with large query texts and parameters (4 KB to 400 KB) in autocommit;
- PgBouncer's answers to misnamed statements: a Bind of a name never prepared and a Parse of a
  name still prepared close the connection (FATAL 08P01).

The pooler renames each statement and re-prepares it invisibly where it is missing.
"""

import asyncio
import threading

import asyncpg
import psycopg
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from _common import bound, check, check_eq, fail, log, main, target


def psycopg_default(t):
    errors = []

    def worker(i):
        try:
            with psycopg.connect(t.libpq(), autocommit=True) as conn:
                check_eq(conn.prepare_threshold, 5, "psycopg default prepare_threshold")
                for j in range(60):
                    got = conn.execute("SELECT %s::int + %s::int", (i, j)).fetchone()[0]
                    check_eq(got, i + j, "psycopg prepared result")
                    with conn.transaction():
                        conn.execute("SELECT %s::text", (f"w{i}",)).fetchone()
        except BaseException as e:  # noqa: BLE001 - collected and reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    check(not errors, f"psycopg with default prepare_threshold failed: {errors[:3]}")
    log("psycopg 3 defaults: 8 threads x 60 prepared queries + transactions")


async def asyncpg_default(t):
    async def worker(i):
        conn = await asyncpg.connect(host=t.host, port=t.port, user=t.user, password=t.password,
                                     database=t.db)
        try:
            for j in range(60):
                check_eq(await conn.fetchval("SELECT $1::int * 2", j), j * 2, "asyncpg cached statement")
                async with conn.transaction():
                    rows = await conn.fetch("SELECT generate_series(1, $1::int)", 3)
                    check_eq(len(rows), 3, "asyncpg rows")
            stmt = await conn.prepare("SELECT $1::text || '!'")
            check_eq(await stmt.fetchval("a"), "a!", "explicit prepare")
            check_eq(await stmt.fetchval("b"), "b!", "explicit prepare, second run")
        finally:
            await conn.close()

    await asyncio.gather(*(worker(i) for i in range(10)))
    log("asyncpg defaults: 10 connections x 60 cached statements, explicit prepare")


async def sqlalchemy_default(t):
    engine = create_async_engine(t.url("postgresql+asyncpg"), pool_size=6, max_overflow=0)
    try:
        async def worker(i):
            for j in range(20):
                async with engine.begin() as c:
                    got = (await c.execute(text("SELECT CAST(:a AS int) + CAST(:b AS int)"), {"a": i, "b": j})).scalar()
                    check_eq(got, i + j, "sqlalchemy result")

        await asyncio.gather(*(worker(i) for i in range(6)))
    finally:
        await engine.dispose()
    log("sqlalchemy asyncpg defaults: 6 sessions x 20 transactions")


def close_and_reprepare(t):
    # Protocol-level Close of a named statement, then the same name prepared with new text.
    with psycopg.connect(t.libpq(), autocommit=True) as conn:
        pgconn = conn.pgconn
        pgconn.prepare(b"st", b"SELECT 1")
        check_eq(pgconn.exec_prepared(b"st", []).get_value(0, 0), b"1", "first text")
        res = pgconn.close_prepared(b"st") if hasattr(pgconn, "close_prepared") else None
        if res is None:
            conn.execute("DEALLOCATE st")
        pgconn.prepare(b"st", b"SELECT 2")
        check_eq(pgconn.exec_prepared(b"st", []).get_value(0, 0), b"2", "re-prepared text")
        missing = pgconn.exec_prepared(b"never_prepared", [])
        check_pooler_fatal(pgconn, missing, b"prepared statement did not exist", "unknown statement")
    # PgBouncer's test_close_prepared_statement: a Close is answered again for a name already
    # closed, and a Describe of the closed name closes the connection.
    with psycopg.connect(t.libpq(), autocommit=True) as conn:
        pgconn = conn.pgconn
        if hasattr(pgconn, "close_prepared"):
            pgconn.prepare(b"test", b"SELECT 1")
            for _ in range(2):
                check_eq(pgconn.close_prepared(b"test").status, psycopg.pq.ExecStatus.COMMAND_OK,
                         "Close of a statement")
        res = pgconn.describe_prepared(b"test")
        check_pooler_fatal(pgconn, res, b"prepared statement did not exist", "Describe after Close")
    log("close and re-prepare under the same name; an unknown name closes the connection")


def check_pooler_fatal(pgconn, res, message, what):
    # libpq may report only its own "server closed the connection unexpectedly" that follows the
    # FATAL (PgBouncer's suite accepts either text); the FATAL's exact fields are checked on raw
    # frames in tests/pooling.
    check_eq(res.status, psycopg.pq.ExecStatus.FATAL_ERROR, f"{what}: result status")
    closed = b"server closed the connection unexpectedly"
    check(message in res.error_message or closed in res.error_message,
          f"{what}: {res.error_message!r}")
    check_eq(pgconn.status, psycopg.pq.ConnStatus.BAD, f"{what}: connection closed")


def large_and_duplicate(t):
    # Issue 6: a named Parse/Bind over ~8 KB outside a transaction block spun the pooler; a
    # 400 KB named Bind reached the server under the client's name ("_pg3_N" does not exist).
    with psycopg.connect(t.libpq(), autocommit=True) as conn:
        for n in (4096, 8192, 40960, 409600):
            got = conn.execute(f"SELECT '{'1' * n}'", prepare=True).fetchone()[0]
            check_eq(len(got), n, f"prepared {n}-byte query")
            s = "x" * n
            got = conn.execute("SELECT %s::text", (s,), prepare=True).fetchone()[0]
            check_eq(got == s, True, f"prepared query with a {n}-byte parameter")
        pgconn = conn.pgconn
        pgconn.prepare(b"dup", b"SELECT 1")
        check_eq(pgconn.exec_prepared(b"dup", []).get_value(0, 0), b"1", "first statement")
        res = pgconn.prepare(b"dup", b"SELECT 2")
        check_pooler_fatal(pgconn, res, b"prepared statement name is already in use",
                           "duplicate Parse")
    log("prepared 4 KB..400 KB queries and parameters in autocommit; duplicate Parse closes")


def go():
    t = target("driver defaults (named prepared statements)")
    psycopg_default(t)
    asyncio.run(asyncpg_default(t))
    asyncio.run(sqlalchemy_default(t))
    close_and_reprepare(t)
    large_and_duplicate(t)


if __name__ == "__main__":
    bound(150)
    main(go)
