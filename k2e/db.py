"""The store's engine and schema upkeep: SQLite by default, PostgreSQL via DATABASE_URL."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, create_engine, event, inspect, text

from k2e.tables import metadata


def utcnow() -> datetime:
    return datetime.now(UTC)


def aware(value: datetime | None) -> datetime | None:
    """SQLite returns naive datetimes; every time k2e writes is UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            # WAL lets the API read while a worker writes progress.
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=8, max_overflow=8)


def create_schema(engine: Engine) -> None:
    """Create the tables, and add columns a newer k2e introduced to older ones.

    k2e only ever adds nullable columns, so this is the whole migration story.
    """
    metadata.create_all(engine)
    existing = inspect(engine)
    with engine.begin() as conn:
        for table in metadata.sorted_tables:
            have = {c["name"] for c in existing.get_columns(table.name)}
            for column in table.columns:
                if column.name not in have:
                    kind = column.type.compile(dialect=engine.dialect)
                    conn.execute(
                        text(f'ALTER TABLE {table.name} ADD COLUMN "{column.name}" {kind}')
                    )
                if column.unique:
                    # An added column has no constraint yet; a unique index does the job.
                    conn.execute(
                        text(
                            f"CREATE UNIQUE INDEX IF NOT EXISTS "
                            f'uq_{table.name}_{column.name} ON {table.name} ("{column.name}")'
                        )
                    )
