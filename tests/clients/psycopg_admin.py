"""Scenario 5: psycopg 3 against the admin console (virtual database `pgbouncer`).

The console speaks only the simple query protocol, so psycopg must bind client-side
(psycopg.ClientCursor) and run in autocommit (no BEGIN). Checks SHOW POOLS / STATS / CLIENTS /
SERVERS / DATABASES / CONFIG / VERSION column names (PgBouncer's) and values that follow traffic a
normal client made just before, the stats user, KILL_CLIENT with a client-side-bound parameter, and
what a server-side-binding cursor gets (the console's 08P01 error, said clearly).

Arguments: HOST PORT ADMIN_USER ADMIN_PASSWORD pgbouncer DATA_DB STATS_USER STATS_PASSWORD.
"""

import socket

import psycopg
from psycopg import pq, sql

from _common import bound, check, check_eq, fail, log, main, target


def console(t, user=None, password=None):
    conninfo = t.libpq(user=user or t.user, password=password or t.password)
    try:
        return psycopg.connect(conninfo, autocommit=True, cursor_factory=psycopg.ClientCursor)
    except psycopg.OperationalError as e:
        # E.g. a startup parameter the pooler refuses: show exactly what the server said.
        diag = getattr(e, "diag", None)
        fail(f"cannot log in to the admin console as {user or t.user}: {e!r}"
             + (f" (sqlstate {e.sqlstate}, message {diag.message_primary!r})" if diag else ""))


def show(conn, what):
    """SHOW <what> -> (column names, rows as dicts)."""
    with conn.cursor() as cur:
        cur.execute(f"SHOW {what}")
        check(cur.description is not None, f"SHOW {what} returned no rows description")
        cols = [d.name for d in cur.description]
        rows = [dict(zip(cols, r)) for r in cur.fetchall()]
        check_eq(cur.statusmessage, "SHOW", f"SHOW {what} command tag")
    return cols, rows


def need(cols, names, what):
    missing = [n for n in names if n not in cols]
    check(not missing, f"SHOW {what}: columns {missing} missing from {cols}")


def kill_client(t, admin, data, data_db):
    """KILL_CLIENT with a client-side-bound parameter: psycopg renders it into the query text."""
    victim = psycopg.connect(t.libpq(dbname=data_db), prepare_threshold=None, autocommit=True)
    victim.execute("SELECT 1")
    _, clients = show(admin, "CLIENTS")
    # SHOW CLIENTS' port is the client's own port: find the victim's row by it.
    with socket.fromfd(victim.fileno(), socket.AF_INET, socket.SOCK_STREAM) as s:
        victim_port = s.getsockname()[1]
    rows = [c for c in clients if c["database"] == data_db and int(c["port"]) == victim_port]
    check(len(rows) == 1, f"SHOW CLIENTS: no single row with port {victim_port}: {clients}")
    victim_id = int(rows[0]["id"])
    with admin.cursor() as cur:
        cur.execute("KILL_CLIENT %s", (victim_id,))
        log(f"KILL_CLIENT {victim_id} (client-side bound): {cur.statusmessage}")
    try:
        victim.execute("SELECT 1")
        fail("the killed client could still run a query")
    except psycopg.OperationalError as e:
        log(f"killed client's next query -> {type(e).__name__}: {str(e).strip().splitlines()[0]}")
    victim.close()
    check_eq(data.execute("SELECT 2").fetchone()[0], 2, "the other data client after KILL_CLIENT")


def go():
    t = target("psycopg 3 on the admin console")
    check(len(t.extra) >= 3, "EXTRA: DATA_DB STATS_USER STATS_PASSWORD are required")
    data_db, stats_user, stats_pw = t.extra[:3]
    log(f"psycopg {psycopg.__version__}, libpq {pq.version()}, impl {pq.__impl__}")

    # Some traffic on the data database first, so the stats have something to show.
    data = psycopg.connect(t.libpq(dbname=data_db), prepare_threshold=None, autocommit=True)
    for i in range(5):
        with data.transaction():
            check_eq(data.execute("SELECT %s::int + 1", (i,)).fetchone()[0], i + 1, "data query")
    data.execute("SELECT 1")

    admin = console(t)
    # "1.25.2/bouncer": the console's PgBouncer version (this pooler says 1.25.2; with
    # OLLY_CLIENTS_POOLER=pgbouncer it is the system's, which may predate SHOW CLIENTS' id column).
    bouncer = tuple(int(x) for x in admin.info.parameter_status("server_version").split("/")[0].split("."))
    log(f"console login ok; server_version {admin.info.parameter_status('server_version')!r}, "
        f"client_encoding {admin.info.parameter_status('client_encoding')!r}")

    cols, pools = show(admin, "POOLS")
    need(cols, ["database", "user", "cl_active", "cl_waiting", "sv_active", "sv_idle", "sv_used", "maxwait",
                "pool_mode"], "POOLS")
    mine = [p for p in pools if p["database"] == data_db and p["user"] == t.user]
    check(len(mine) == 1, f"SHOW POOLS: no single row for {data_db}/{t.user}: {pools}")
    check_eq(mine[0]["pool_mode"], "transaction", "SHOW POOLS pool_mode")
    check(int(mine[0]["cl_active"]) >= 1, f"SHOW POOLS: our data client is not counted in cl_active: {mine[0]}")
    check(int(mine[0]["sv_idle"]) + int(mine[0]["sv_used"]) >= 1, f"SHOW POOLS: no server for {data_db}: {mine[0]}")
    log(f"SHOW POOLS {data_db}: cl_active={mine[0]['cl_active']} sv_idle={mine[0]['sv_idle']} "
        f"sv_used={mine[0]['sv_used']}")

    cols, stats = show(admin, "STATS")
    need(cols, ["database", "total_xact_count", "total_query_count", "total_received", "total_sent",
                "total_xact_time", "total_query_time", "total_wait_time", "avg_xact_count"], "STATS")
    row = [s for s in stats if s["database"] == data_db]
    check(len(row) == 1, f"SHOW STATS: no row for {data_db}: {stats}")
    xacts = int(row[0]["total_xact_count"])
    queries = int(row[0]["total_query_count"])
    check(xacts >= 6, f"SHOW STATS: total_xact_count {xacts} < the 6 transactions just run")
    check(queries >= xacts, f"SHOW STATS: total_query_count {queries} < total_xact_count {xacts}")
    log(f"SHOW STATS {data_db}: total_xact_count={xacts} total_query_count={queries}")

    cols, clients = show(admin, "CLIENTS")
    has_id = bouncer >= (1, 23)
    need(cols, ["type", "user", "database", "state", "addr", "port", "connect_time"] + ["id"] * has_id, "CLIENTS")
    dbs = sorted({(c["database"], c["user"]) for c in clients})
    check((data_db, t.user) in dbs and ("pgbouncer", t.user) in dbs,
          f"SHOW CLIENTS: want our data and console clients, got {dbs}")

    cols, servers = show(admin, "SERVERS")
    need(cols, ["type", "user", "database", "state", "addr", "port"] + ["id"] * has_id, "SERVERS")
    check(any(s["database"] == data_db for s in servers), f"SHOW SERVERS: no server for {data_db}: {servers}")

    cols, dbrows = show(admin, "DATABASES")
    need(cols, ["name", "host", "port", "database", "pool_size", "pool_mode", "max_connections"], "DATABASES")
    check(any(d["name"] == data_db for d in dbrows), f"SHOW DATABASES: no {data_db}")

    cols, config = show(admin, "CONFIG")
    need(cols, ["key", "value", "default", "changeable"], "CONFIG")
    settings = {c["key"]: c["value"] for c in config}
    check_eq(settings.get("pool_mode"), "transaction", "SHOW CONFIG pool_mode")

    _, version = show(admin, "VERSION")
    log(f"SHOW VERSION: {version}")

    # psycopg's own connect-time conventions on the console: SHOW/SET of a driver parameter.
    with admin.cursor() as cur:
        cur.execute("SHOW client_encoding")
        log(f"SHOW client_encoding on the console: {cur.fetchone()[0]!r}")

    with admin.cursor() as cur:
        cur.execute(sql.SQL("SHOW {}").format(sql.Identifier("pools")))
        check(cur.fetchall(), "SHOW \"pools\" (quoted identifier) returned nothing")
    if has_id:
        kill_client(t, admin, data, data_db)
    else:
        log(f"PgBouncer {bouncer} has no client id: KILL_CLIENT not checked")

    # The stats user may SHOW, and is refused control commands.
    stats_conn = console(t, stats_user, stats_pw)
    cols, _ = show(stats_conn, "POOLS")
    need(cols, ["cl_active", "sv_idle"], "POOLS (stats user)")
    try:
        with stats_conn.cursor() as cur:
            cur.execute("PAUSE")
        fail("the stats user could PAUSE")
    except psycopg.Error as e:
        log(f"PAUSE as stats user -> {type(e).__name__}: {e.diag.message_primary}")
    stats_conn.close()

    # A server-side-binding cursor is refused with a clear error. (psycopg sends a query without
    # parameters as a simple query; binary=True makes it use Parse/Bind/Execute.)
    plain = psycopg.connect(t.libpq(), autocommit=True)
    try:
        plain.execute("SHOW POOLS", binary=True)
        fail("the console accepted the extended query protocol")
    except psycopg.Error as e:
        msg = e.diag.message_primary or str(e)
        check("extended query protocol not supported" in msg, f"unexpected error for extended protocol: {e!r}")
        log(f"extended protocol on the console -> {e.sqlstate}: {msg}")
    plain.close()

    admin.close()
    data.close()


if __name__ == "__main__":
    bound(120)
    main(go)
