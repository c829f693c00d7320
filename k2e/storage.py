"""The storage layout: one root folder (a volume shared by API and workers).

<root>/models/<model id>/model.h5 + info.json     uploaded Keras models
<root>/datasets/<dataset id>/data.npz + info.json uploaded datasets
<root>/jobs/<job id>/                             a job's own model_dir
<root>/model_dirs/<name>/                         named model_dirs (reusable)
<model_dir>/export/<version>/                     finished SavedModels
"""

import json
import os
import re
import uuid
from pathlib import Path

from pydantic import BaseModel

from k2e.errors import InvalidSpec, NotFound
from k2e.schemas import CheckpointInfo, DatasetInfo, ModelInfo

_ID = re.compile(r"^[0-9a-f]{32}$")
_CKPT_INDEX = re.compile(r"^model\.ckpt-(\d+)\.index$")
EXPORT_DIR = "export"
EXPORT_STAGING_DIR = "export-staging"


def new_id() -> str:
    return uuid.uuid4().hex


class Storage:
    """Paths and metadata under the storage root."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def ensure(self) -> None:
        for sub in ("models", "datasets", "jobs", "model_dirs", "tmp"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    # uploads -------------------------------------------------------------

    def tmp_path(self, suffix: str = "") -> Path:
        """A fresh path on the storage volume, so a finished upload is moved, not copied."""
        return self.root / "tmp" / f"{new_id()}{suffix}"

    def model_folder(self, model_id: str) -> Path:
        return self._entry("models", model_id)

    def dataset_folder(self, dataset_id: str) -> Path:
        return self._entry("datasets", dataset_id)

    def save_entry(
        self, kind: str, entry_id: str, data_file: Path, name: str, info: BaseModel
    ) -> Path:
        """Move an inspected upload into place; its info.json is written last, so an
        entry with an info.json is always complete."""
        folder = self.root / kind / entry_id
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / name
        os.replace(data_file, target)
        _write_json_atomic(folder / "info.json", info.model_dump(mode="json"))
        return target

    def write_summary(self, model_id: str, summary: dict) -> None:
        """The upload inspector's full result, kept beside the model (before info.json)."""
        folder = self.root / "models" / model_id
        folder.mkdir(parents=True, exist_ok=True)
        _write_json_atomic(folder / "summary.json", summary)

    def model_summary(self, model_id: str) -> dict | None:
        """The stored inspection of an uploaded model, or None for older entries."""
        try:
            return json.loads((self.model_folder(model_id) / "summary.json").read_text())
        except FileNotFoundError:
            return None

    def model_info(self, model_id: str) -> ModelInfo:
        return ModelInfo.model_validate(self._read_info("models", model_id, "model"))

    def model_file(self, model_id: str) -> Path:
        info = self.model_info(model_id)
        return self.model_folder(model_id) / f"model.{info.format}"

    def dataset_info(self, dataset_id: str) -> DatasetInfo:
        return DatasetInfo.model_validate(self._read_info("datasets", dataset_id, "dataset"))

    def dataset_file(self, dataset_id: str) -> Path:
        info = self.dataset_info(dataset_id)
        return self.dataset_folder(dataset_id) / f"data.{info.format}"

    def _entry(self, kind: str, entry_id: str) -> Path:
        if not _ID.match(entry_id):
            raise NotFound(f"no {kind[:-1]} with id {entry_id!r}")
        return self.root / kind / entry_id

    def _read_info(self, kind: str, entry_id: str, label: str) -> dict:
        path = self._entry(kind, entry_id) / "info.json"
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            raise NotFound(f"no {label} with id {entry_id!r}") from None

    # model_dirs ----------------------------------------------------------

    def job_model_dir(self, job_id: str) -> Path:
        return self.root / "jobs" / job_id

    def named_model_dir(self, name: str) -> Path:
        return self.root / "model_dirs" / name

    def resolve_under_root(self, relative: str, field: str) -> Path:
        """A user-given path under the root; refuses escapes through `..` or symlinks."""
        path = (self.root / relative).resolve()
        if not path.is_relative_to(self.root):
            raise InvalidSpec(
                f"`{field}` resolves outside the storage root",
            )
        return path

    # exports and checkpoints ---------------------------------------------

    @staticmethod
    def latest_export(model_dir: Path) -> Path | None:
        """The newest complete SavedModel: numeric version folders only."""
        root = model_dir / EXPORT_DIR
        if not root.is_dir():
            return None
        versions = [p for p in root.iterdir() if p.is_dir() and p.name.isdigit()]
        return max(versions, key=lambda p: int(p.name), default=None)

    @staticmethod
    def checkpoints(model_dir: Path) -> list[CheckpointInfo]:
        if not model_dir.is_dir():
            return []
        found = []
        for path in model_dir.iterdir():
            match = _CKPT_INDEX.match(path.name)
            if match:
                found.append(CheckpointInfo(step=int(match[1]), name=f"model.ckpt-{match[1]}"))
        return sorted(found, key=lambda c: c.step)

    @staticmethod
    def checkpoint_files(model_dir: Path, step: int) -> list[Path]:
        prefix = f"model.ckpt-{step}."
        return sorted(p for p in model_dir.iterdir() if p.name.startswith(prefix))


def _write_json_atomic(path: Path, data: object) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)
