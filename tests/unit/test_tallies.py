"""The tally ledger behind GET /metrics' counters (k2e.jobs.tallies): folding its rows into
totals changes no count, and processes folding at once never count a row twice."""

import random
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from k2e.db import create_schema, make_engine
from k2e.jobs.tallies import BUCKETS, fold, read_tallies, tally
from k2e.tables import tallies
from tests.support.postgres import fresh_postgres_schema


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "sqlite":
        engine = make_engine(f"sqlite:///{tmp_path / 'k2e.db'}")
        create_schema(engine)
        yield engine
        engine.dispose()
        return
    with fresh_postgres_schema("tallies") as url:
        engine = make_engine(url)
        create_schema(engine)
        yield engine
        engine.dispose()


def write(engine: Engine, rows: int, seed: int) -> None:
    rng = random.Random(seed)
    with engine.begin() as conn:
        for _ in range(rows):
            value = rng.choice([None, rng.uniform(0, 2 * BUCKETS[-1])])
            tally(conn, rng.choice(["submitted", "failed"]), "cpu", rng.choice(["", "x"]), value)


def counts(engine: Engine) -> list:
    with engine.connect() as conn:
        return [
            (t.event, t.reason, t.count, t.observed, round(t.total, 3), t.buckets)
            for t in read_tallies(conn)
        ]


def test_folding_changes_no_count(engine: Engine) -> None:
    write(engine, 300, seed=1)
    before = counts(engine)
    assert fold(engine, after=100) == 300
    assert counts(engine) == before
    write(engine, 50, seed=2)
    assert fold(engine, after=100) == 0  # few rows: left for a later scrape
    write(engine, 100, seed=3)
    grown = counts(engine)
    assert fold(engine, after=100) == 150
    assert counts(engine) == grown
    assert sum(c for _, _, c, _, _, _ in grown) == 450


def test_folds_at_once_count_each_row_once(engine: Engine) -> None:
    write(engine, 400, seed=4)
    before = counts(engine)
    folded: list[int] = []
    errors: list[BaseException] = []

    def fold_now() -> None:
        try:
            folded.append(fold(engine, after=0))
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=fold_now) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    assert sum(folded) == 400
    assert counts(engine) == before
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(tallies)).scalar_one() == 0
