"""An .npz larger than 2 GB trains with the worker's memory growth bounded.

Not part of `make test` (it writes and uploads 2.2 GB): run with `make test-large`. Fed
with ``from_tensor_slices``, such a file could not train at all: its arrays became graph
constants, past protobuf's 2 GB limit. It prints the worker's RSS before and during
training.
"""

import zipfile
from pathlib import Path

import numpy as np
import pytest
from numpy.lib import format as npy_format

from service.main import create_app
from tests.support.api_keys import admin_client

tf = pytest.importorskip("tensorflow")
from tests.support.wide_job import WIDTH, train_wide  # noqa: E402  (needs TensorFlow)

pytestmark = [pytest.mark.integration, pytest.mark.large]

EXAMPLES = 270_000  # 2.06 GiB of inputs


def _write_npz(path: Path) -> None:
    """Write the arrays member by member, a block at a time: never held whole here either."""
    rng = np.random.default_rng(0)
    block = rng.normal(size=(1000, WIDTH)).astype("float32")
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name, width in (("a", WIDTH), ("b", WIDTH), ("y", 0)):
            shape = (EXAMPLES, width) if width else (EXAMPLES,)
            with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                header = {"descr": "<f4", "fortran_order": False, "shape": shape}
                npy_format.write_array_header_2_0(member, header)
                for start in range(0, EXAMPLES, len(block)):
                    rows = block[: min(len(block), EXAMPLES - start)]
                    member.write((rows if width else rows[:, 0]).tobytes())


def test_a_2gb_npz_trains_with_bounded_worker_memory(settings, worker, tmp_path) -> None:
    data = tmp_path / "big.npz"
    _write_npz(data)
    size = data.stat().st_size
    assert size > 2 * 1024**3
    # The upload limit is 2 GiB by default: this API takes a bigger file.
    roomy = settings.model_copy(update={"max_upload_bytes": 3 * 1024**3})
    with admin_client(create_app(roomy)) as client:
        with data.open("rb") as f:
            response = client.post("/datasets", files={"file": ("big.npz", f)})
        assert response.status_code == 201, response.text
        info = response.json()
        assert info["num_examples"] == EXAMPLES
        data.unlink()

        job, before, peak = train_wide(client, worker.process.pid, info["id"], tmp_path, 1200, 50)
    growth = peak - before
    print(
        f"\nnpz {size / 2**30:.2f} GiB, {EXAMPLES} examples; worker RSS {before:.0f} MB before, "
        f"{peak:.0f} MB peak (+{growth:.0f} MB) over {job['progress']['global_step']} steps"
    )
    assert job["status"] == "succeeded", job["error"]
    # 1200 steps x 256 examples pass over every example once and start again.
    assert job["progress"]["global_step"] == 1200
    assert growth < 0.15 * size / 2**20
