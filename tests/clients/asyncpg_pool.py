"""Scenario 1: asyncpg through the pooler in transaction mode (statement_cache_size=0, as asyncpg's
docs say for PgBouncer).

20 concurrent connections over a server pool of 3 (the test sets default_pool_size = 3): fetchval/
fetch with parameters, transactions (commit and rollback), executemany, COPY in and out, a server
error (22012) that leaves the connection usable, and a query cancelled by asyncio.wait_for (asyncpg
sends a CancelRequest to the pooler with the BackendKeyData the pooler gave it) after which the
connection is usable and nothing is left running on the server. Also asyncpg's own Pool (its
reset query on release), protocol edges (errors after the Flush, portals, ~11 MB COPY) and a client
that vanishes mid-transaction.

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


async def asyncpg_pool(t):
    """asyncpg's own Pool (8 connections, 40 tasks): on each release it runs its reset query
    (pg_advisory_unlock_all, CLOSE ALL, UNLISTEN *, RESET ALL) through the pooler.

    application_name (a startup parameter here) is checked on new connections only: RESET ALL
    then sets it to the server connection's own startup value, which through a pooler (PgBouncer
    too) is not the client's, so after the first release it reads ''."""
    inits = []

    async def init(c):
        check_eq(await c.fetchval("SELECT current_setting('application_name')"), "clients-asyncpg-pool",
                 "asyncpg Pool: application_name of a new connection")
        inits.append(1)

    pool = await asyncpg.create_pool(
        host=t.host, port=t.port, user=t.user, password=t.password, database=t.db,
        statement_cache_size=0, min_size=2, max_size=8, timeout=30, init=init,
        server_settings={"application_name": "clients-asyncpg-pool"},
    )

    async def task(i):
        async with pool.acquire() as c:
            async with c.transaction():
                await c.execute(f"INSERT INTO {TABLE} (worker, n, note) VALUES ($1, $2, 'pool')", 500 + i, i)
                check_eq(await c.fetchval(f"SELECT n FROM {TABLE} WHERE worker = $1", 500 + i), i, f"pool task {i}")
        return await pool.fetchval("SELECT $1::int", i)

    try:
        got = await asyncio.gather(*(task(i) for i in range(40)))
        check_eq(sorted(got), list(range(40)), "asyncpg Pool results")
    finally:
        await asyncio.wait_for(pool.close(), timeout=15)
    check(len(inits) >= 2, f"asyncpg Pool initialised {len(inits)} connections")
    log(f"asyncpg Pool: 40 tasks over {len(inits)} connections, reset on every release")


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


async def edges(t):
    """Protocol edges: an error answering the Flush-terminated Parse/Describe, a portal fetched in
    chunks (PortalSuspended), a large COPY both ways, and a client that vanishes mid-transaction."""
    conn = await connect(t)
    try:
        # Parse fails: asyncpg gets the ErrorResponse after its Flush, then sends Sync itself.
        for bad, exc in (("SELEC 1", asyncpg.exceptions.PostgresSyntaxError),
                         ("SELECT no_such_column FROM pg_class", asyncpg.exceptions.UndefinedColumnError)):
            try:
                await conn.fetchval(bad)
                fail(f"{bad!r} did not fail")
            except exc as e:
                log(f"{bad!r} -> {type(e).__name__} {e.sqlstate}")
            check_eq(await conn.fetchval("SELECT $1::int", 5), 5, f"query after {bad!r}")
        # Bind fails (wrong parameter type is caught client-side; a bad cast fails on the server).
        try:
            await conn.fetchval("SELECT $1::text::int", "not a number")
            fail("invalid integer cast did not fail")
        except asyncpg.exceptions.InvalidTextRepresentationError:
            pass
        check_eq(await conn.fetchval("SELECT 6"), 6, "query after a failed cast")

        # A cursor: Bind, then Execute with a row limit (PortalSuspended) until done.
        async with conn.transaction():
            got = [r[0] async for r in conn.cursor("SELECT g FROM generate_series(1, 1000) g", prefetch=64)]
        check_eq(got, list(range(1, 1001)), "cursor rows")

        # ~12 MB through COPY in and out, and a ~12 MB result set.
        big = [(77, i, "x" * 100 + str(i)) for i in range(100_000)]
        started = time.monotonic()
        res = await conn.copy_records_to_table(TABLE, records=big, columns=["worker", "n", "note"])
        check_eq(res, "COPY 100000", "large copy_records_to_table status")
        buf = io.BytesIO()
        res = await conn.copy_from_query(f"SELECT worker, n, note FROM {TABLE} WHERE worker = 77", output=buf)
        check_eq(res, "COPY 100000", "large copy_from_query status")
        rows = await conn.fetch(f"SELECT n, note FROM {TABLE} WHERE worker = $1 ORDER BY n", 77)
        check_eq(len(rows), 100_000, "large fetch row count")
        check_eq((rows[-1]["n"], rows[-1]["note"]), (99_999, "x" * 100 + "99999"), "large fetch last row")
        log(f"100000 rows (~{len(buf.getvalue()) // 1_000_000} MB) COPY in, COPY out, fetch: "
            f"{time.monotonic() - started:.2f}s")
    finally:
        await conn.close(timeout=10)

    # A client that disappears inside a transaction: its work is rolled back and its lock freed,
    # and the server it held does not reach another client mid-transaction.
    doomed = await connect(t)
    tr = doomed.transaction()
    await tr.start()
    await doomed.execute(f"INSERT INTO {TABLE} (worker, n, note) VALUES (-2, 1, 'vanished')")
    await doomed.execute("SELECT pg_advisory_xact_lock(4242)")
    doomed.terminate()  # closes the socket without a Terminate message or ROLLBACK
    others = [await connect(t) for _ in range(3)]
    try:
        for attempt in range(50):
            locked = await others[0].fetchval("SELECT NOT pg_try_advisory_xact_lock(4242)")
            if not locked:
                break
            await asyncio.sleep(0.1)
        check(not locked, "the vanished client's advisory lock is still held after 5 s")
        for i, c in enumerate(others):
            for _ in range(3):
                check(not c.is_in_transaction(), "client starts inside a transaction")
                # An xid already assigned means a transaction that wrote before this statement.
                check_eq(await c.fetchval("SELECT pg_current_xact_id_if_assigned() IS NULL"), True,
                         f"client {i} got a server inside someone else's transaction")
                check_eq(await c.fetchval(f"SELECT count(*) FROM {TABLE} WHERE worker = -2"), 0,
                         f"client {i} sees the vanished client's uncommitted row")
    finally:
        for c in others:
            await c.close(timeout=10)
    log("client vanished mid-transaction: rolled back, lock released")


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

    await asyncpg_pool(t)
    await errors_and_cancel(t)
    await edges(t)


def go():
    t = target("asyncpg (statement_cache_size=0)")
    log(f"asyncpg {asyncpg.__version__}")
    asyncio.run(run(t))


if __name__ == "__main__":
    bound(150)
    main(go)
