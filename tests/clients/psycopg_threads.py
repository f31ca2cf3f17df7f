"""Scenario 4: psycopg 3 through the pooler in transaction mode with prepare_threshold=None (no
protocol-level prepared statements, as PgBouncer users configure it).

- 8 threads share a client-side pool of 4 connections over the pooler's 2 servers: parameters,
  transactions, executemany (psycopg pipelines it: many Bind/Execute before one Sync);
- pipeline mode: batches of statements before one Sync, an error aborting the rest of a batch;
- COPY FROM STDIN (cursor.copy + write_row) and COPY TO STDOUT (rows back);
- a server-side (named) cursor inside a transaction, fetched in chunks;
- notices from RAISE NOTICE, collected by add_notice_handler;
- transaction status (IDLE, INTRANS, INERROR) as the pooler's ReadyForQuery reports it;
- `SET TimeZone` is a tracked parameter: the client that set it keeps seeing it on whatever server
  serves it next, and another client on the same single server (database EXTRA[0], pool_size=1)
  keeps the default, both in SHOW and in the ParameterStatus psycopg tracks; likewise each
  client's application_name given at connect.
"""

import queue
import threading
import time

import psycopg
from psycopg import pq

from _common import bound, check, check_eq, fail, log, main, target

THREADS = 8
CONNS = 4
ROUNDS = 12
TABLE = "clients_pg3_rows"
TS = pq.TransactionStatus


def connect(t, **kw):
    kw.setdefault("prepare_threshold", None)
    return psycopg.connect(t.libpq(**kw.pop("conninfo", {})), **kw)


def threads_and_pool(t):
    pool = queue.Queue()
    for _ in range(CONNS):
        pool.put(connect(t))
    errors = []
    written = [0] * THREADS

    def work(w):
        try:
            for r in range(ROUNDS):
                conn = pool.get(timeout=30)
                try:
                    with conn.transaction():
                        cur = conn.cursor()
                        pid = cur.execute("SELECT pg_backend_pid()").fetchone()[0]
                        cur.execute(f"INSERT INTO {TABLE} (worker, n, label) VALUES (%s, %s, %s)", (w, r, f"w{w}r{r}"))
                        written[w] += 1
                        if r % 4 == 0:
                            cur.executemany(
                                f"INSERT INTO {TABLE} (worker, n, label) VALUES (%s, %s, %s)",
                                [(w, 100 + r * 10 + k, f"many {k}") for k in range(10)],
                            )
                            written[w] += 10
                        n = cur.execute(f"SELECT count(*) FROM {TABLE} WHERE worker = %s", (w,)).fetchone()[0]
                        check_eq(n, written[w], f"thread {w} round {r}: count inside its transaction")
                        check_eq(cur.execute("SELECT pg_backend_pid()").fetchone()[0], pid,
                                 f"thread {w} round {r}: server changed inside a transaction")
                    check_eq(conn.info.transaction_status, TS.IDLE, f"thread {w} round {r}: status after commit")
                    v = conn.execute("SELECT %s::int * %s::int", (w, r)).fetchone()[0]
                    check_eq(v, w * r, f"thread {w} round {r}: parameters")
                    conn.rollback()  # end the implicit transaction of the SELECT
                finally:
                    pool.put(conn)
        except BaseException as e:  # noqa: BLE001 - report in the main thread
            errors.append(f"thread {w}: {e!r}")

    threads = [threading.Thread(target=work, args=(w,), name=f"w{w}") for w in range(THREADS)]
    started = time.monotonic()
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=120)
        check(not th.is_alive(), f"{th.name} still running after 120 s")
    check(not errors, "; ".join(errors))
    log(f"{THREADS} threads over {CONNS} connections wrote {sum(written)} rows in {time.monotonic() - started:.2f}s")
    conn = pool.get()
    with conn.transaction():
        total = conn.execute(f"SELECT count(*) FROM {TABLE}").fetchone()[0]
    check_eq(total, sum(written), "rows in the table")
    while not pool.empty():
        pool.get().close()
    conn.close()


def copy_and_cursors(t):
    with connect(t) as conn:
        rows = [(9000 + i, i, f"copy line {i}\twith tab") for i in range(500)]
        with conn.transaction():
            cur = conn.cursor()
            with cur.copy(f"COPY {TABLE} (worker, n, label) FROM STDIN") as cp:
                for row in rows:
                    cp.write_row(row)
            check_eq(cur.rowcount, 500, "COPY FROM STDIN rowcount")
        check_eq(conn.info.transaction_status, TS.IDLE, "status after COPY in a transaction")
        with conn.cursor() as cur:
            query = f"COPY (SELECT worker, n, label FROM {TABLE} WHERE worker >= 9000 ORDER BY n) TO STDOUT"
            with cur.copy(query) as cp:
                cp.set_types(["int4", "int4", "text"])
                back = list(cp.rows())
        conn.rollback()
        check_eq(back, rows, "COPY TO STDOUT round trip")
        log("COPY in and out: 500 rows round-tripped")

        # Server-side cursor: DECLARE + FETCH, all inside one transaction (one server).
        with conn.transaction():
            with conn.cursor(name="clients_ssc") as sc:
                sc.itersize = 64
                sc.execute("SELECT g, md5(g::text) FROM generate_series(1, 1000) g ORDER BY g")
                first = sc.fetchmany(10)
                check_eq([r[0] for r in first], list(range(1, 11)), "server-side cursor: first chunk")
                sc.scroll(100, mode="absolute")
                check_eq(sc.fetchone()[0], 101, "server-side cursor: scroll absolute")
                rest = sc.fetchall()
                check_eq(len(rest), 899, "server-side cursor: rest")
                check_eq(rest[-1][0], 1000, "server-side cursor: last row")
        log("server-side cursor: 1000 rows in chunks, scroll ok")


def pipelines(t):
    """Pipeline mode in autocommit: batches of Parse/Bind/Describe/Execute before one Sync (the
    server may change between batches, never inside one), an error that aborts the rest of its
    batch, and executemany as one implicit transaction."""
    with connect(t, autocommit=True) as conn:
        results = []
        with conn.pipeline() as p:
            for batch in range(5):
                for i in range(20):
                    n = batch * 100 + i
                    results.append((batch, n, conn.execute("SELECT %s::int, pg_backend_pid()", (n,))))
                p.sync()
        pids = {}
        for batch, n, cur in results:
            v, pid = cur.fetchone()
            check_eq(v, n, f"pipeline batch {batch}: result order")
            pids.setdefault(batch, set()).add(pid)
        check(all(len(v) == 1 for v in pids.values()), f"a pipeline batch ran on several servers: {pids}")
        # psycopg may read results while it is still queueing statements, so the error can
        # surface at the third execute() (then `aborted` is never bound) or at the end of the
        # block: both are correct pipeline behaviour.
        ok = aborted = None
        try:
            with conn.pipeline():
                ok = conn.execute("SELECT 1")
                conn.execute("SELECT 1 / %s::int", (0,))
                aborted = conn.execute("SELECT 3")
            fail("the pipeline with 1/0 did not raise")
        except psycopg.errors.DivisionByZero:
            pass
        check_eq(ok.fetchone()[0], 1, "pipeline statement before the error")
        if aborted is not None:
            try:
                aborted.fetchone()
                fail("the statement after the error in the pipeline has a result")
            except psycopg.Error:
                pass
        check_eq(conn.info.transaction_status, TS.IDLE, "status after the aborted pipeline")
        check_eq(conn.execute("SELECT 4").fetchone()[0], 4, "query after the aborted pipeline")
        with conn.cursor() as cur:
            cur.executemany(f"INSERT INTO {TABLE} (worker, n, label) VALUES (%s, %s, 'pipe')",
                            [(8000, k) for k in range(200)])
            try:
                cur.executemany(f"INSERT INTO {TABLE} (worker, n, label) VALUES (%s, %s::int, 'pipe')",
                                [(8001, "1"), (8001, "two"), (8001, "3")])
                fail("executemany with a bad value did not raise")
            except psycopg.errors.InvalidTextRepresentation:
                pass
            rows = cur.execute(f"SELECT worker, count(*) FROM {TABLE} WHERE worker IN (8000, 8001) "
                               "GROUP BY worker ORDER BY worker").fetchall()
        check_eq(rows, [(8000, 200)], "rows of the executemany calls (the failed one is all-or-nothing)")
    log("pipeline: 5 batches of 20 in order, aborted batch recovered, executemany ok")


def notices_and_status(t):
    notices = []
    with connect(t) as conn:
        conn.add_notice_handler(lambda d: notices.append((d.severity_nonlocalized, d.message_primary)))
        check_eq(conn.info.transaction_status, TS.IDLE, "status after connect")
        conn.execute("DO $$ BEGIN RAISE NOTICE 'olly notice %', 7; END $$")
        check_eq(conn.info.transaction_status, TS.INTRANS, "status after a statement (implicit BEGIN)")
        conn.execute("DO $$ BEGIN RAISE NOTICE 'second %', 'notice'; RAISE WARNING 'a warning'; END $$")
        conn.commit()
        check_eq(conn.info.transaction_status, TS.IDLE, "status after commit")
        check_eq(notices, [("NOTICE", "olly notice 7"), ("NOTICE", "second notice"), ("WARNING", "a warning")],
                 "notices")
        try:
            conn.execute("SELECT 1 / 0")
            fail("SELECT 1/0 did not raise")
        except psycopg.errors.DivisionByZero as e:
            check_eq(e.sqlstate, "22012", "division by zero sqlstate")
        check_eq(conn.info.transaction_status, TS.INERROR, "status after an error in a transaction")
        try:
            conn.execute("SELECT 1")
            fail("a statement in a failed transaction did not fail")
        except psycopg.errors.InFailedSqlTransaction:
            pass
        conn.rollback()
        check_eq(conn.info.transaction_status, TS.IDLE, "status after rollback")
        check_eq(conn.execute("SELECT 42").fetchone()[0], 42, "query after rollback")
        conn.rollback()
        # Notices from autocommit statements too (the server is released after each one).
        conn.autocommit = True
        notices.clear()
        for i in range(5):
            conn.execute(f"DO $$ BEGIN RAISE NOTICE 'autocommit {i}'; END $$")
            check_eq(conn.info.transaction_status, TS.IDLE, f"status in autocommit after statement {i}")
        check_eq([m for _, m in notices], [f"autocommit {i}" for i in range(5)], "autocommit notices")
    log("notices, transaction status: ok")


def timezone_is_per_client(t, one_server_db):
    """SET TimeZone on client A; A keeps it across transactions, B (same single server) does not.
    Each keeps its own application_name (a startup parameter) on that shared server too."""
    a = connect(t, autocommit=True, conninfo={"dbname": one_server_db, "application_name": "clients-a"})
    b = connect(t, autocommit=True, conninfo={"dbname": one_server_db, "application_name": "clients-b"})
    try:
        default = b.execute("SHOW TimeZone").fetchone()[0]
        check(default != "Asia/Tokyo", f"server default TimeZone is already {default}")
        check_eq(a.info.parameter_status("TimeZone"), default, "A's TimeZone at connect (ParameterStatus)")
        a.execute("SET TimeZone = 'Asia/Tokyo'")
        check_eq(a.info.parameter_status("TimeZone"), "Asia/Tokyo", "A's ParameterStatus after SET")
        for i in range(10):
            check_eq(a.execute("SHOW TimeZone").fetchone()[0], "Asia/Tokyo", f"A's TimeZone, round {i}")
            check_eq(b.execute("SHOW TimeZone").fetchone()[0], default, f"B's TimeZone, round {i} (leaked from A?)")
            check_eq(a.execute("SHOW application_name").fetchone()[0], "clients-a", f"A's application_name, round {i}")
            check_eq(b.execute("SHOW application_name").fetchone()[0], "clients-b", f"B's application_name, round {i}")
            pa = a.execute("SELECT pg_backend_pid()").fetchone()[0]
            pb = b.execute("SELECT pg_backend_pid()").fetchone()[0]
            check_eq(pa, pb, "A and B are not on the single server of the pool_size=1 database")
            hour_a = a.execute("SELECT to_char(timestamptz '2024-01-01 00:00:00+00', 'HH24')").fetchone()[0]
            hour_b = b.execute("SELECT to_char(timestamptz '2024-01-01 00:00:00+00', 'HH24')").fetchone()[0]
            check_eq(hour_a, "09", f"A's local time, round {i}")
            check(hour_b != "09" or default in ("Asia/Tokyo", "Japan"), f"B's local time is Tokyo's, round {i}")
        check_eq(b.info.parameter_status("TimeZone"), default, "B's ParameterStatus after A's SET")
        check_eq(a.info.parameter_status("TimeZone"), "Asia/Tokyo", "A's ParameterStatus at the end")
        # In a transaction, SET LOCAL does not outlive it.
        with b.transaction():
            b.execute("SET LOCAL TimeZone = 'America/New_York'")
            check_eq(b.execute("SHOW TimeZone").fetchone()[0], "America/New_York", "B inside SET LOCAL")
        check_eq(b.execute("SHOW TimeZone").fetchone()[0], default, "B after its SET LOCAL transaction")
        check_eq(a.execute("SHOW TimeZone").fetchone()[0], "Asia/Tokyo", "A after B's SET LOCAL transaction")
        log(f"TimeZone: A keeps Asia/Tokyo, B keeps {default}, on one server (pid {pa})")
    finally:
        a.close()
        b.close()


def go():
    t = target("psycopg 3 (prepare_threshold=None)")
    log(f"psycopg {psycopg.__version__}, libpq {pq.version()}, impl {pq.__impl__}")
    check(t.extra, "EXTRA[0]: a database on a pool of one server is required")
    with connect(t, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {TABLE}")
        conn.execute(f"CREATE TABLE {TABLE} (worker int NOT NULL, n int NOT NULL, label text)")
    threads_and_pool(t)
    copy_and_cursors(t)
    pipelines(t)
    notices_and_status(t)
    timezone_is_per_client(t, t.extra[0])


if __name__ == "__main__":
    bound(200)
    main(go)
