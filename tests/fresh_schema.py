"""A schema of its own on the machine's PostgreSQL, for test modules whose counts must
not see, or whose deletes must not touch, what other modules store in the `test` database."""

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import sqlalchemy

from tests.conftest import postgres_url


@contextmanager
def fresh_postgres_schema(prefix: str) -> Iterator[str]:
    """Yield a store URL whose tables live in a new schema; the schema is dropped after.
    Skips the test when PostgreSQL is not reachable (fails under CI)."""
    admin = sqlalchemy.create_engine(postgres_url())
    try:
        admin.connect().close()
    except Exception as exc:  # pragma: no cover - depends on the machine
        if os.environ.get("CI"):
            raise
        pytest.skip(f"PostgreSQL not reachable: {exc}")
    schema = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with admin.begin() as conn:
        conn.execute(sqlalchemy.text(f"CREATE SCHEMA {schema}"))
    separator = "&" if "?" in postgres_url() else "?"
    try:
        yield f"{postgres_url()}{separator}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(sqlalchemy.text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()
