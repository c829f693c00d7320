"""Fixtures the unit tests share."""

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from k2e.launcher.embedded_redis import EmbeddedRedis
from k2e.settings import Settings
from service.main import create_app
from tests.support.api_keys import admin_client


@pytest.fixture(scope="module")
def seed_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """The seed model as HDF5 and 64 examples of data for it, built once per module."""
    from tests.support.keras_models import (
        npz_bytes,
        save_h5,
        seed_multi_io_data,
        seed_multi_io_model,
    )

    folder = tmp_path_factory.mktemp("seed")
    h5 = save_h5(seed_multi_io_model(), folder / "seed.h5").read_bytes()
    return {"model": h5, "data": npz_bytes(seed_multi_io_data(64))}


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory, redis_server: EmbeddedRedis) -> Settings:
    """The module's API settings: a data folder of its own (SQLite store inside) and the
    session's Redis, where submitted jobs stay queued. A module that needs other
    settings defines its own ``settings`` fixture."""
    return Settings(data_dir=tmp_path_factory.mktemp("k2e-data"), redis_url=redis_server.url)


@pytest.fixture(scope="module")
def client(settings: Settings) -> Iterator[TestClient]:
    """The API on ``settings``, in-process, every request signed with the suite's admin key."""
    with admin_client(create_app(settings)) as test_client:
        yield test_client
