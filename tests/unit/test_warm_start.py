"""The checkpoint a fine-tuning job starts from (worker/warm_start.py) in the storage
folder: found while its index is there, a clear refusal once it is gone."""

from pathlib import Path

import pytest

from k2e.errors import InvalidSpec
from k2e.storage import Storage
from worker.phases import JobFiles
from worker.warm_start import start_checkpoint


def test_a_kept_checkpoint_is_started_from_and_a_gone_one_is_refused(tmp_path: Path) -> None:
    storage = Storage(tmp_path / "storage").for_tenant("acme")
    files = JobFiles(storage=storage, model_dir=tmp_path / "model_dir")
    source = storage.root / "jobs" / "j1"
    source.mkdir(parents=True)
    (source / "model.ckpt-10.index").write_bytes(b"index")
    found = start_checkpoint(files, "jobs/j1/model.ckpt-10", tmp_path / "scratch")
    assert found == str(source / "model.ckpt-10")
    (source / "model.ckpt-10.index").unlink()
    with pytest.raises(InvalidSpec, match="jobs/j1/model.ckpt-10 this job starts from is gone"):
        start_checkpoint(files, "jobs/j1/model.ckpt-10", tmp_path / "scratch")
