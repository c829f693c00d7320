"""The worker reuses the inspection stored at upload only for the bytes that were inspected."""

import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from k2e.catalog import Catalog, recorded_sha256
from k2e.jobs.job_store import JobStore
from k2e.schemas import ConvertRequest
from k2e.settings import Settings
from k2e.spec import checks
from k2e.storage import Storage

tf = pytest.importorskip("tensorflow")
from tests.support import keras_models  # noqa: E402  (needs TensorFlow)


@pytest.fixture
def model_id(client: TestClient, tmp_path: Path) -> str:
    path = tmp_path / "seed.h5"
    keras_models.seed_multi_io_model().save(path, save_format="h5")
    uploaded = client.post("/models", files={"file": ("seed.h5", path.read_bytes())})
    assert uploaded.status_code == 201, uploaded.text
    return uploaded.json()["id"]


@pytest.fixture
def sandbox_runs(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The files the worker's check sends to the sandbox (it still runs for real)."""
    seen: list[Path] = []
    real = checks.inspect_model_file

    def counting(path: Path, *args: Any) -> Any:
        seen.append(path)
        return real(path, *args)

    monkeypatch.setattr(checks, "inspect_model_file", counting)
    return seen


def _worker_check(settings: Settings, model_id: str) -> checks.ResolvedModel:
    """What worker/training.py does before loading the model."""
    spec = ConvertRequest.model_validate(
        {"keras_model_path": model_id, "train": {"dataset": "x", "max_steps": 1}}
    )
    catalog = Catalog(JobStore(settings.sqlalchemy_url).engine)
    digest = recorded_sha256(catalog, model_id, "default")
    assert digest is not None
    storage = Storage(settings.storage_root).for_tenant("default")
    return checks.resolve_model(spec, storage, settings, recorded_sha256=digest)


def test_an_unchanged_upload_is_not_inspected_again(
    settings: Settings, model_id: str, sandbox_runs: list[Path]
) -> None:
    resolved = _worker_check(settings, model_id)
    assert sandbox_runs == []
    assert [t.name for t in resolved.summary.inputs] == ["input_a", "input_b"]
    assert resolved.compiled
    assert resolved.compile_args is not None


def test_changed_bytes_are_inspected_again(
    settings: Settings, model_id: str, sandbox_runs: list[Path]
) -> None:
    storage = Storage(settings.storage_root).for_tenant("default")
    path = storage.model_file(model_id)
    with path.open("ab") as f:
        f.write(b"\0")  # libhdf5 ignores trailing bytes: still a readable model
    resolved = _worker_check(settings, model_id)
    assert sandbox_runs == [path]
    assert resolved.compiled


def test_a_stored_inspection_that_names_a_module_is_not_trusted(
    settings: Settings, model_id: str, sandbox_runs: list[Path]
) -> None:
    folder = Storage(settings.storage_root).for_tenant("default").model_folder(model_id)
    summary = json.loads((folder / "summary.json").read_text())
    summary["compile_args"]["optimizer"] = {
        "module": "os",
        "class_name": "system",
        "config": {"command": "true"},
    }
    (folder / "summary.json").write_text(json.dumps(summary))
    resolved = _worker_check(settings, model_id)
    assert len(sandbox_runs) == 1, "the file itself was inspected instead"
    assert resolved.compile_args is not None
    assert resolved.compile_args["optimizer"] != summary["compile_args"]["optimizer"]


def test_another_tenants_or_unknown_model_has_no_record(settings: Settings, model_id: str) -> None:
    catalog = Catalog(JobStore(settings.sqlalchemy_url).engine)
    assert recorded_sha256(catalog, model_id, "someone-else") is None
    assert recorded_sha256(catalog, "0" * 32, "default") is None
    assert recorded_sha256(catalog, None, "default") is None
