"""Storage's calls through its BlobStore on the local folder (the default): the same
calls the bucket answers (tests/unit/test_bucket_api.py), with files used in place."""

from pathlib import Path

import pytest

from k2e.errors import NotFound
from k2e.schemas import DatasetInfo
from k2e.storage import Storage


def test_the_local_folder_is_used_in_place(tmp_path: Path) -> None:
    storage = Storage(tmp_path / "storage")
    storage.ensure()
    view = storage.for_tenant("t")
    assert view.local
    model_dir = view.job_model_dir("j")
    assert not view.holds_files(model_dir)
    (model_dir / "export" / "1").mkdir(parents=True)
    (model_dir / "model.ckpt-3.index").write_bytes(b"i" * 10)
    (model_dir / "export" / "1" / "saved_model.pb").write_bytes(b"p" * 5)
    assert view.holds_files(model_dir)
    assert view.stored_bytes(model_dir) == 15
    assert view.key(model_dir / "model.ckpt-3.index") == "tenants/t/jobs/j/model.ckpt-3.index"
    assert [i.key for i in view.listing(model_dir)] == [
        "tenants/t/jobs/j/export/1/saved_model.pb",
        "tenants/t/jobs/j/model.ckpt-3.index",
    ]
    assert [c.step for c in view.stored_checkpoints(model_dir)] == [3]
    with view.local_copy(model_dir / "model.ckpt-3.index") as local:
        assert local == model_dir / "model.ckpt-3.index"  # no copy
    assert view.read_bytes(model_dir / "model.ckpt-3.index") == b"i" * 10
    with pytest.raises(NotFound):
        view.read_bytes(model_dir / "none")
    assert view.remove_tree(model_dir) == 2
    assert not model_dir.exists()
    assert view.remove_tree(model_dir) == 0


def test_an_entry_is_moved_into_place_with_its_info(tmp_path: Path) -> None:
    view = Storage(tmp_path / "storage").for_tenant("t")
    received = tmp_path / "upload.npz"
    received.write_bytes(b"data")
    info = DatasetInfo(
        id="a" * 32, format="npz", num_examples=1, arrays={}, dtypes={}, sha256="0", size=4
    )
    target = view.save_entry("datasets", info.id, received, "data.npz", info)
    assert not received.exists()  # moved, not copied
    assert target.read_bytes() == b"data"
    assert view.dataset_info(info.id) == info
    assert view.exists(target)
