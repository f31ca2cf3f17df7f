"""Scenario 3: alembic migrations through the pooler in transaction mode, on sync psycopg 3
(`postgresql+psycopg://`).

The script writes a small alembic environment into a temp dir (env.py and two revisions) and drives
it with alembic's programmatic API: upgrade to head (each revision's DDL in its own transaction,
transaction_per_migration), check the schema, downgrade one step, upgrade again, then a third
revision that fails half-way must leave nothing behind (PostgreSQL's transactional DDL, through
the pooler). env.py passes prepare_threshold=None, as PgBouncer users do with psycopg 3: psycopg
would otherwise prepare named statements after 5 executions of the same query.
"""

import os
import tempfile
import textwrap

import alembic
import psycopg
import sqlalchemy
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

from _common import bound, check, check_eq, fail, log, main, target

ENV_PY = '''
from alembic import context
from sqlalchemy import create_engine, pool

config = context.config


def run_migrations_online():
    engine = create_engine(
        config.get_main_option("sqlalchemy.url"),
        poolclass=pool.NullPool,
        connect_args={"prepare_threshold": None, "connect_timeout": 10},
    )
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=None,
            transaction_per_migration=True,
            version_table="clients_alembic_version",
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline mode is not used by this test")
run_migrations_online()
'''

REV_1 = '''
"""create clients_alembic_service"""
import sqlalchemy as sa
from alembic import op

revision = "c1a0000001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "clients_alembic_service",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
    )
    op.bulk_insert(
        sa.table("clients_alembic_service", sa.column("id", sa.Integer), sa.column("name", sa.String)),
        [{"id": i, "name": f"svc-{i}"} for i in range(1, 21)],
    )


def downgrade():
    op.drop_table("clients_alembic_service")
'''

REV_2 = '''
"""add tier column, index and a check constraint"""
import sqlalchemy as sa
from alembic import op

revision = "c1a0000002"
down_revision = "c1a0000001"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("clients_alembic_service", sa.Column("tier", sa.String(16), nullable=True))
    op.execute("UPDATE clients_alembic_service SET tier = CASE WHEN id % 2 = 0 THEN 'gold' ELSE 'free' END")
    op.alter_column("clients_alembic_service", "tier", nullable=False)
    op.create_index("ix_clients_alembic_service_tier", "clients_alembic_service", ["tier"])
    op.create_check_constraint("ck_tier", "clients_alembic_service", "tier IN ('free', 'gold')")


def downgrade():
    op.drop_constraint("ck_tier", "clients_alembic_service", type_="check")
    op.drop_index("ix_clients_alembic_service_tier", "clients_alembic_service")
    op.drop_column("clients_alembic_service", "tier")
'''

# Fails half-way: its CREATE TABLE must roll back with it.
REV_3_BROKEN = '''
"""broken: creates a table, then fails"""
import sqlalchemy as sa
from alembic import op

revision = "c1a0000003"
down_revision = "c1a0000002"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table("clients_alembic_doomed", sa.Column("id", sa.Integer, primary_key=True))
    op.execute("UPDATE clients_alembic_service SET tier = 'platinum'")  # violates ck_tier


def downgrade():
    op.drop_table("clients_alembic_doomed")
'''


def write(path, body):
    with open(path, "w") as f:
        f.write(textwrap.dedent(body).lstrip())


def db(t, sql, *params):
    """One query on its own autocommit connection (psycopg, prepare_threshold=None)."""
    with psycopg.connect(t.libpq(), prepare_threshold=None, autocommit=True) as conn:
        cur = conn.execute(sql, params or None)
        return cur.fetchall() if cur.description else []


def schema(t):
    cols = [r[0] for r in db(t, "SELECT column_name FROM information_schema.columns "
                                "WHERE table_name = 'clients_alembic_service' ORDER BY ordinal_position")]
    idx = [r[0] for r in db(t, "SELECT indexname FROM pg_indexes WHERE tablename = 'clients_alembic_service' "
                               "ORDER BY indexname")]
    return cols, idx


def version(t):
    rows = db(t, "SELECT to_regclass('clients_alembic_version') IS NOT NULL")
    if not rows[0][0]:
        return None
    rows = db(t, "SELECT version_num FROM clients_alembic_version")
    return rows[0][0] if rows else None


def go():
    t = target("alembic on psycopg 3")
    log(f"alembic {alembic.__version__}, sqlalchemy {sqlalchemy.__version__}, psycopg {psycopg.__version__}")
    # Clean slate (a previous failed run may have left tables).
    db(t, "DROP TABLE IF EXISTS clients_alembic_doomed, clients_alembic_service, clients_alembic_version")

    with tempfile.TemporaryDirectory(prefix="olly-alembic-") as tmp:
        os.makedirs(os.path.join(tmp, "versions"))
        write(os.path.join(tmp, "env.py"), ENV_PY)
        write(os.path.join(tmp, "versions", "c1a0000001_create_service.py"), REV_1)
        write(os.path.join(tmp, "versions", "c1a0000002_add_tier.py"), REV_2)
        cfg = Config()
        cfg.set_main_option("script_location", tmp)
        # ConfigParser interpolation: a literal % in the URL must be doubled.
        cfg.set_main_option(
            "sqlalchemy.url", t.url("postgresql+psycopg").render_as_string(hide_password=False).replace("%", "%%")
        )
        heads = ScriptDirectory.from_config(cfg).get_heads()
        check_eq(heads, ["c1a0000002"], "script heads")

        command.upgrade(cfg, "head")
        check_eq(version(t), "c1a0000002", "version after upgrade head")
        cols, idx = schema(t)
        check_eq(cols, ["id", "name", "created_at", "tier"], "columns after upgrade head")
        check("ix_clients_alembic_service_tier" in idx, f"index missing after upgrade head: {idx}")
        rows = db(t, "SELECT tier, count(*) FROM clients_alembic_service GROUP BY tier ORDER BY tier")
        check_eq([tuple(r) for r in rows], [("free", 10), ("gold", 10)], "data migrated by revision 2")
        log(f"upgrade head: columns {cols}, indexes {idx}")

        command.downgrade(cfg, "-1")
        check_eq(version(t), "c1a0000001", "version after downgrade -1")
        cols, idx = schema(t)
        check_eq(cols, ["id", "name", "created_at"], "columns after downgrade -1")
        check("ix_clients_alembic_service_tier" not in idx, f"index left after downgrade: {idx}")

        command.upgrade(cfg, "head")
        check_eq(version(t), "c1a0000002", "version after upgrading again")
        log("downgrade -1 and upgrade head again: ok")

        # A revision that fails after some DDL: the whole revision rolls back.
        write(os.path.join(tmp, "versions", "c1a0000003_broken.py"), REV_3_BROKEN)
        try:
            command.upgrade(cfg, "head")
            fail("the broken revision applied")
        except sqlalchemy.exc.IntegrityError as e:
            check_eq(e.orig.sqlstate, "23514", "check violation sqlstate")
            log(f"broken revision -> {type(e.orig).__name__} {e.orig.sqlstate}")
        check_eq(version(t), "c1a0000002", "version after the failed revision")
        check_eq(db(t, "SELECT to_regclass('clients_alembic_doomed') IS NULL")[0][0], True,
                 "table created by the failed revision survived its rollback")
        check_eq(db(t, "SELECT count(*) FROM clients_alembic_service WHERE tier = 'platinum'")[0][0], 0,
                 "update of the failed revision survived")

        command.downgrade(cfg, "base")
        check_eq(version(t), None, "version after downgrade base")
        check_eq(db(t, "SELECT to_regclass('clients_alembic_service') IS NULL")[0][0], True,
                 "table left after downgrade base")
        log("downgrade base: ok")


if __name__ == "__main__":
    bound(150)
    main(go)
