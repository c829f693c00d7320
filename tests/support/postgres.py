"""The test server's PostgreSQL (``K2E_TEST_DATABASE_URL``), and stores of their own on it:
a new database, or a schema of its own, for test modules whose counts must not see, or whose
deletes must not touch, what other modules store in the `test` database."""

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import sqlalchemy

from tests.support import ci_skips


def postgres_url() -> str:
    return os.environ.get(
        "K2E_TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
    )


@contextmanager
def fresh_postgres_database() -> Iterator[str]:
    """The URL of a new, empty database on the test server (``postgres_url()``'s), dropped
    afterwards: runs that use it never see another run's rows. Unreachable, the test
    skips, except under CI (which has PostgreSQL: there it fails)."""
    server = sqlalchemy.engine.make_url(postgres_url())
    name = f"k2e_test_{uuid.uuid4().hex[:16]}"
    admin = sqlalchemy.create_engine(server, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    except sqlalchemy.exc.OperationalError as exc:
        admin.dispose()
        if ci_skips.in_ci():
            raise
        pytest.skip(f"PostgreSQL not reachable: {exc}")
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


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
