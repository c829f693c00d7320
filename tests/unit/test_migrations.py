"""The store's schema migrations (k2e.migrations): a store the release before migrations
(796de42) created keeps its tenants, keys, jobs and events when today's code starts on it,
a new store is created at head, processes starting at once take turns, and the migrated
schema is exactly k2e/tables.py (a table change without a revision fails here)."""

import importlib.util
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import insert, inspect, text

from k2e import migrations
from k2e.jobs.leases import JobLeases
from k2e.migrations import baseline
from k2e.schemas import JobStatus
from k2e.tables import metadata
from k2e.tenancy import keys
from k2e.tenancy.bodies import EffectiveQuotas
from k2e.tenancy.scope import Scope
from k2e.tenancy.tenant_store import TenantStore
from tests.support.postgres import fresh_postgres_schema

PREVIOUS_RELEASE = "796de42"
REPO = Path(__file__).resolve().parents[2]
HEAD = ScriptDirectory(str(migrations.HERE)).get_current_head()
SECRET = "k2e_" + "a" * 40


def previous_release_metadata(tmp_path: Path) -> sqlalchemy.MetaData:
    """k2e/tables.py as the previous release shipped it (its ``metadata``), loaded from git;
    in a checkout without that commit (a shallow clone), the frozen copy the baseline
    revision creates, which test_the_baseline_is_the_previous_release_schema checks
    against git wherever the history is there."""
    shown = subprocess.run(
        ["git", "show", f"{PREVIOUS_RELEASE}:k2e/tables.py"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    if shown.returncode != 0:  # pragma: no cover - a checkout without history
        return baseline.metadata
    path = tmp_path / "tables_796de42.py"
    path.write_text(shown.stdout)
    spec = importlib.util.spec_from_file_location("tables_796de42", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.pop(spec.name, None)
    spec.loader.exec_module(module)
    return module.metadata


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'jobs.db'}"
    else:
        with fresh_postgres_schema("k2e_migrations") as pg:
            yield pg


def start_previous_release(url: str, old: sqlalchemy.MetaData) -> sqlalchemy.Engine:
    """What the previous release's start did to a new store: create_all, then a unique
    index per unique column."""
    engine = sqlalchemy.create_engine(url)
    old.create_all(engine)
    with engine.begin() as conn:
        for table in old.sorted_tables:
            for column in table.columns:
                if column.unique:
                    conn.execute(
                        text(
                            f"CREATE UNIQUE INDEX IF NOT EXISTS uq_{table.name}_{column.name} "
                            f'ON {table.name} ("{column.name}")'
                        )
                    )
    return engine


def write_previous_release_rows(engine: sqlalchemy.Engine, old: sqlalchemy.MetaData) -> None:
    """A tenant, its key, a running job with log events, and a job that failed before the
    event stream had "end" events; events interleaved, as their global seq ordered them."""
    t0 = datetime(2026, 11, 1, tzinfo=UTC)
    job = {
        "status": "running",
        "queue": "cpu",
        "created_at": t0,
        "updated_at": t0,
        "spec": {},
        "progress": {},
        "metrics": {},
        "attempts": 0,
        "model_dir": "m",
        "tenant": "acme",
        "uploads": "",
        "dispatched_at": t0,
    }
    with engine.begin() as conn:
        conn.execute(
            insert(old.tables["k2e_tenants"]).values(name="acme", created_at=t0, quotas={})
        )
        conn.execute(
            insert(old.tables["k2e_api_keys"]).values(
                id=keys.key_id(SECRET),
                key_hash=keys.key_hash(SECRET),
                tenant="acme",
                role="member",
                name="ci",
                created_at=t0,
            )
        )
        conn.execute(insert(old.tables["k2e_jobs"]).values(id="run-1", **job))
        failed = job | {"status": "failed", "finished_at": t0 + timedelta(seconds=5)}
        conn.execute(insert(old.tables["k2e_jobs"]).values(id="fail-1", **failed))
        for n in range(3):
            for job_id in ("run-1", "fail-1"):
                conn.execute(
                    insert(old.tables["k2e_job_events"]).values(
                        job_id=job_id, at=t0, kind="log", message=f"{job_id} {n}"
                    )
                )


def version(engine: sqlalchemy.Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def test_a_previous_release_store_keeps_its_rows_and_is_migrated_to_head(
    url: str, tmp_path: Path
) -> None:
    old = previous_release_metadata(tmp_path)
    old_engine = start_previous_release(url, old)
    write_previous_release_rows(old_engine, old)
    assert "alembic_version" not in inspect(old_engine).get_table_names()
    old_engine.dispose()

    store = JobLeases(url)
    store.create_schema()  # today's start
    store.create_schema()  # a second start changes nothing
    assert version(store.engine) == HEAD

    tenants = TenantStore(
        store.engine, EffectiveQuotas(max_active_jobs=1, max_bytes=1, max_steps=1, max_run_s=1)
    )
    assert [t.name for t in tenants.list_tenants()] == ["acme"]
    caller = tenants.authenticate(SECRET)
    assert caller is not None
    assert (caller.tenant, caller.role) == ("acme", "member")

    assert store.get("run-1", Scope.of("acme")).status == JobStatus.running
    assert store.get("fail-1", Scope.of("acme")).status == JobStatus.failed
    # Numbered per job in the order written; the failed job got its "end" event once.
    assert [(e["seq"], e["message"]) for e in store.stream_events("run-1")] == [
        (1, "run-1 0"),
        (2, "run-1 1"),
        (3, "run-1 2"),
    ]
    assert [(e["seq"], e["kind"]) for e in store.stream_events("fail-1")] == [
        (1, "log"),
        (2, "log"),
        (3, "log"),
        (4, "end"),
    ]
    assert store.end_event("fail-1") == 4
    store.log_many("run-1", ["after the upgrade"])
    assert store.stream_events("run-1", after=3)[0]["seq"] == 4

    with store.engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), metadata) == []
        assert not [
            i["name"]
            for table in inspect(conn).get_table_names()
            for i in inspect(conn).get_indexes(table)
            if str(i["name"]).startswith("uq_")
        ]
    store.engine.dispose()


def test_a_new_store_is_created_at_head_and_matches_the_tables(url: str) -> None:
    store = JobLeases(url)
    store.create_schema()
    assert version(store.engine) == HEAD
    with store.engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), metadata) == []
    store.engine.dispose()


def test_processes_starting_at_once_take_turns(url: str) -> None:
    engines = [JobLeases(url).engine for _ in range(4)]
    errors: list[BaseException] = []
    start = threading.Barrier(len(engines))

    def run(engine: sqlalchemy.Engine) -> None:
        start.wait()
        try:
            migrations.upgrade(engine)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(e,)) for e in engines]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    assert version(engines[0]) == HEAD
    with engines[0].connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM alembic_version")).scalar_one() == 1
    for engine in engines:
        engine.dispose()


def test_a_table_change_without_a_revision_is_found(url: str) -> None:
    """The comparison the tests above rely on does see a column k2e/tables.py would add."""
    store = JobLeases(url)
    store.create_schema()
    changed = sqlalchemy.MetaData()
    for table in metadata.sorted_tables:
        table.to_metadata(changed)
    changed.tables["k2e_jobs"].append_column(sqlalchemy.Column("extra", sqlalchemy.Integer))
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), changed)
    assert [d[0] for d in diff] == ["add_column"]
    store.engine.dispose()


def test_the_baseline_is_the_previous_release_schema(url: str, tmp_path: Path) -> None:
    """Revision 0001 (baseline.py) creates exactly what the previous release created."""
    old = previous_release_metadata(tmp_path)
    if old is baseline.metadata:  # pragma: no cover - a checkout without history
        pytest.skip(f"git cannot show {PREVIOUS_RELEASE}")
    engine = sqlalchemy.create_engine(url)
    old.create_all(engine)
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), baseline.metadata) == []
    engine.dispose()
