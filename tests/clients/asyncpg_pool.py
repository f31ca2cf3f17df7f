"""Scenario 1: asyncpg through the pooler in transaction mode (statement_cache_size=0, as asyncpg's
docs say for PgBouncer).

20 concurrent connections over a server pool of 3 (the test sets default_pool_size = 3): fetchval/
fetch with parameters, transactions (commit and rollback), executemany, COPY in and out, a server
error (22012) that leaves the connection usable, and a query cancelled by asyncio.wait_for (asyncpg
sends a CancelRequest to the pooler with the BackendKeyData the pooler gave it) after which the
connection is usable and nothing is left running on the server.

asyncpg's extended-protocol pattern is Parse/Describe/Flush, wait for the description, then
Bind/Execute/Sync: the pooler must keep the server linked across the Flush.
"""

import asyncio
import io
import time

import asyncpg

from _common import bound, check, check_eq, fail, log, main, target

CLIENTS = 20
ROUNDS = 8
TABLE = "clients_asyncpg_items"


async def connect(t):
    return await asyncpg.connect(
        host=t.host,
        port=t.port,
        user=t.user,
        password=t.password,
        database=t.db,
        statement_cache_size=0,
        timeout=30,
    )


async def worker(t, w):
    """One client: parameters, transactions, executemany, COPY, all checked against its own rows."""
    conn = await connect(t)
    try:
        expected = 0
        for r in range(ROUNDS):
            v = await conn.fetchval("SELECT $1::int * 1000 + $2::int", w, r)
            check_eq(v, w * 1000 + r, f"client {w} round {r}: fetchval")
            rows = await conn.fetch(
                "SELECT g, $1::text || g AS label FROM generate_series(1, $2::int) g", f"w{w}-", r + 1
            )
            check_eq([(x["g"], x["label"]) for x in rows], [(g, f"w{w}-{g}") for g in range(1, r + 2)],
                     f"client {w} round {r}: fetch")

            # A committed transaction: its statements share one server, so they see each other.
            async with conn.transaction():
                pid = await conn.fetchval("SELECT pg_backend_pid()")
                await conn.execute(f"INSERT INTO {TABLE} (worker, n, note) VALUES ($1, $2, $3)", w, r, "tx")
                expected += 1
                n = await conn.fetchval(f"SELECT count(*) FROM {TABLE} WHERE worker = $1", w)
                check_eq(n, expected, f"client {w} round {r}: count inside its transaction")
                check_eq(await conn.fetchval("SELECT pg_backend_pid()"), pid,
                         f"client {w} round {r}: server pid changed inside a transaction")

            # A rolled-back transaction leaves nothing behind.
            try:
                async with conn.transaction():
                    await conn.execute(f"INSERT INTO {TABLE} (worker, n, note) VALUES ($1, $2, 'rollback')", w, -r)
                    raise _Rollback()
            except _Rollback:
                pass

            if r % 3 == 0:
                batch = [(w, 1000 + r * 10 + k, "many") for k in range(10)]
                await conn.executemany(f"INSERT INTO {TABLE} (worker, n, note) VALUES ($1, $2, $3)", batch)
                expected += len(batch)
            if r % 4 == 1:
                recs = [(w, 5000 + r * 10 + k, f"copy {k}") for k in range(25)]
                res = await conn.copy_records_to_table(TABLE, records=recs, columns=["worker", "n", "note"])
                check_eq(res, "COPY 25", f"client {w} round {r}: copy_records_to_table status")
                expected += len(recs)
        n = await conn.fetchval(f"SELECT count(*) FROM {TABLE} WHERE worker = $1", w)
        check_eq(n, expected, f"client {w}: rows at the end")
        buf = io.BytesIO()
        res = await conn.copy_from_query(
            f"SELECT worker, n, note FROM {TABLE} WHERE worker = $1 ORDER BY n", w, output=buf, format="csv"
        )
        lines = buf.getvalue().decode().splitlines()
        check_eq(res, f"COPY {expected}", f"client {w}: copy_from_query status")
        check_eq(len(lines), expected, f"client {w}: copy_from_query lines")
        check(all(line.startswith(f"{w},") for line in lines), f"client {w}: foreign rows in COPY out: {lines[:3]}")
        check(not any("rollback" in line for line in lines), f"client {w}: a rolled-back row is visible")
        return expected
    finally:
        await conn.close(timeout=10)


class _Rollback(Exception):
    pass


async def errors_and_cancel(t):
    """A server error and a cancelled query, each followed by normal use of the same connection,
    while two other clients keep two of the three servers busy with short transactions."""
    stop = asyncio.Event()

    async def background(i):
        c = await connect(t)
        n = 0
        try:
            while not stop.is_set() and n < 2000:
                async with c.transaction():
                    check_eq(await c.fetchval("SELECT $1::int + 1", n), n + 1, f"background {i}")
                n += 1
                await asyncio.sleep(0.005)
        finally:
            await c.close(timeout=10)
        return n

    bg = [asyncio.create_task(background(i)) for i in range(2)]
    conn = await connect(t)
    try:
        # 22012, outside and inside a transaction.
        try:
            await conn.fetchval("SELECT 1 / $1::int", 0)
            fail("SELECT 1/0 did not raise")
        except asyncpg.exceptions.DivisionByZeroError as e:
            check_eq(e.sqlstate, "22012", "division by zero sqlstate")
            log(f"division by zero -> {type(e).__name__} {e.sqlstate}: {e}")
        check_eq(await conn.fetchval("SELECT 41 + 1"), 42, "query after a server error")
        try:
            async with conn.transaction():
                await conn.execute(f"INSERT INTO {TABLE} (worker, n, note) VALUES (-1, 1, 'doomed')")
                await conn.fetchval("SELECT 1 / 0")
            fail("division by zero inside a transaction did not raise")
        except asyncpg.exceptions.DivisionByZeroError:
            pass
        check(not conn.is_in_transaction(), "still in a transaction after an error + rollback")
        check_eq(await conn.fetchval(f"SELECT count(*) FROM {TABLE} WHERE worker = -1"), 0,
                 "the failed transaction's row is visible")

        # A cancelled query: asyncio.wait_for times out, asyncpg sends a CancelRequest and waits for
        # the server to answer the cancelled query before the connection is usable again.
        for attempt in range(3):
            started = time.monotonic()
            try:
                await asyncio.wait_for(conn.fetchval("SELECT pg_sleep(30)"), timeout=1.0)
                fail("pg_sleep(30) returned before the 1 s timeout")
            except asyncio.TimeoutError:
                pass
            v = await asyncio.wait_for(conn.fetchval("SELECT $1::text", f"after cancel {attempt}"), timeout=15)
            took = time.monotonic() - started
            check_eq(v, f"after cancel {attempt}", "query after a cancelled one")
            check(took < 10, f"the cancelled pg_sleep(30) held the connection for {took:.1f}s")
            log(f"cancel {attempt}: connection usable again after {took:.2f}s")
        # Nothing is left sleeping on any server (the cancel reached the right one).
        for _ in range(50):
            left = await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30)' AND state = 'active'"
            )
            if left == 0:
                break
            await asyncio.sleep(0.1)
        check_eq(left, 0, "pg_sleep(30) queries still active on the server after their cancel")
        # A transaction with a cancelled statement is failed, and rolls back cleanly.
        tr = conn.transaction()
        await tr.start()
        try:
            await asyncio.wait_for(conn.fetchval("SELECT pg_sleep(30)"), timeout=1.0)
            fail("pg_sleep(30) in a transaction returned early")
        except asyncio.TimeoutError:
            pass
        try:
            await conn.fetchval("SELECT 1")
            fail("a statement after a cancelled one in the same transaction did not fail")
        except asyncpg.exceptions.InFailedSQLTransactionError:
            pass
        await tr.rollback()
        check_eq(await conn.fetchval("SELECT 7"), 7, "query after rolling back a cancelled transaction")
    finally:
        stop.set()
        counts = await asyncio.gather(*bg)
        await conn.close(timeout=10)
    log(f"background clients ran {counts} transactions meanwhile without error")


async def run(t):
    setup = await connect(t)
    await setup.execute(f"DROP TABLE IF EXISTS {TABLE}")
    await setup.execute(f"CREATE TABLE {TABLE} (worker int NOT NULL, n int NOT NULL, note text)")
    await setup.close()

    started = time.monotonic()
    totals = await asyncio.gather(*(worker(t, w) for w in range(CLIENTS)))
    log(f"{CLIENTS} concurrent clients wrote {sum(totals)} rows in {time.monotonic() - started:.2f}s")

    check_conn = await connect(t)
    total = await check_conn.fetchval(f"SELECT count(*) FROM {TABLE}")
    check_eq(total, sum(totals), "rows in the table")
    servers = await check_conn.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND backend_type = 'client backend'"
    )
    check(servers <= 3, f"{servers} server connections for a pool of 3")
    log(f"server connections now: {servers}")
    await check_conn.close()

    await errors_and_cancel(t)


def go():
    t = target("asyncpg (statement_cache_size=0)")
    log(f"asyncpg {asyncpg.__version__}")
    asyncio.run(run(t))


if __name__ == "__main__":
    bound(150)
    main(go)
