"""Fixtures the unit tests share."""

import pytest


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
