"""The store's schema, brought to head by Alembic revisions (``versions/``) at start.

``upgrade(engine)`` is what every API process runs at start, before it uses the store:

- a new store is created at head by running every revision;
- a store the release before migrations left (k2e tables, no ``alembic_version``) is
  stamped at the baseline (0001, ``baseline.py``) and brought to head from there; tables
  and nullable columns that even older releases lacked are added first, as they were;
- processes that start at once take turns: a PostgreSQL advisory lock, or a lock on a
  file next to the SQLite database, is held while one of them checks and upgrades.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, inspect, text

from k2e.migrations import baseline

HERE = Path(__file__).parent
BASELINE = "0001"
# pg_advisory_lock's key: any bigint, the same in every k2e process ("k2e" in ASCII).
PG_LOCK_KEY = 0x6B3265


def config(connection: Connection) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(HERE))
    cfg.attributes["connection"] = connection
    return cfg


def upgrade(engine: Engine) -> None:
    """Bring the store's schema to head (see the module's docstring)."""
    with _store_lock(engine), engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": PG_LOCK_KEY})
            conn.commit()
        try:
            names = set(inspect(conn).get_table_names())
            if "alembic_version" not in names and "k2e_jobs" in names:
                _bring_to_baseline(conn)
                command.stamp(config(conn), BASELINE)
                conn.commit()
            command.upgrade(config(conn), "head")
            conn.commit()
        finally:
            if engine.dialect.name == "postgresql":
                conn.rollback()
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": PG_LOCK_KEY})
                conn.commit()


@contextmanager
def _store_lock(engine: Engine) -> Iterator[None]:
    """On SQLite, an exclusive lock on ``<database>.migrate.lock`` (SQLite's own write lock
    does not span DDL there); elsewhere nothing (the advisory lock does it)."""
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        yield
        return
    with open(f"{database}.migrate.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _bring_to_baseline(conn: Connection) -> None:
    """What start-up did before migrations, up to the baseline's schema: create missing
    tables and add the nullable columns older releases lacked (with a unique index for a
    unique one, which an added column cannot get as a constraint)."""
    baseline.metadata.create_all(conn, checkfirst=True)
    existing = inspect(conn)
    for table in baseline.metadata.sorted_tables:
        have = {c["name"] for c in existing.get_columns(table.name)}
        for column in table.columns:
            if column.name in have:
                continue
            kind = column.type.compile(dialect=conn.dialect)
            conn.execute(text(f'ALTER TABLE {table.name} ADD COLUMN "{column.name}" {kind}'))
            if column.unique:
                conn.execute(
                    text(
                        f"CREATE UNIQUE INDEX uq_{table.name}_{column.name} "
                        f'ON {table.name} ("{column.name}")'
                    )
                )
