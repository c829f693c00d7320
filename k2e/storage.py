"""The storage layout: one root folder (a volume shared by API and workers), one folder
per tenant in it, so that every path a spec names resolves inside its tenant's folder.

<root>/tmp/                                          uploads while they arrive
<root>/tenants/<tenant>/models/<id>/model.h5 + info.json     uploaded Keras models
<root>/tenants/<tenant>/datasets/<id>/data.npz + info.json   uploaded datasets
<root>/tenants/<tenant>/jobs/<job id>/               a job's own model_dir
<root>/tenants/<tenant>/model_dirs/<name>/           named model_dirs (reusable)
<model_dir>/export/<version>/                        finished SavedModels
<model_dir>/downloads/                               archives built for presigned downloads

The files themselves are kept in a BlobStore (k2e.blobstore), keyed by their path relative
to the root: the local folder itself (the default), or an S3 bucket, where ``Storage``'s
paths are only the layout and each read or write goes through ``blobs``. ``local_copy``
gives a Path to code that needs one (a fetched temporary copy on bucket storage).
"""

import hashlib
import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pydantic import BaseModel

from k2e.blobstore import BlobStore, LocalBlobStore, ObjectInfo
from k2e.errors import InvalidSpec, NotFound
from k2e.schemas import CheckpointInfo, DatasetInfo, ModelInfo

# Matched whole (fullmatch): `$` also matches before a final newline.
_ID = re.compile(r"[0-9a-f]{32}")
_CKPT_INDEX = re.compile(r"model\.ckpt-([0-9]+)\.index")
EXPORT_DIR = "export"
EXPORT_STAGING_DIR = "export-staging"
_HASH_CHUNK = 1024 * 1024


def file_sha256(path: Path) -> str:
    """The SHA-256 (hex) of a file's bytes, read in 1 MiB chunks: the digest an upload's
    info records (POST /models, /datasets), a submission's request hash covers, and a
    worker compares before it trusts a stored inspection (k2e.vetting.stored)."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def new_id() -> str:
    return uuid.uuid4().hex


def is_upload_id(value: str) -> bool:
    """``value`` has the form of a model or dataset id k2e issues (32 hex digits)."""
    return _ID.fullmatch(value) is not None


class Storage:
    """Paths and metadata under the storage root; ``for_tenant`` gives a tenant's view,
    whose ``root`` is that tenant's folder."""

    def __init__(
        self, root: Path, tenant: str | None = None, blobs: BlobStore | None = None
    ) -> None:
        self.base = root.resolve()
        self.tenant = tenant
        self.root = self.base / "tenants" / tenant if tenant is not None else self.base
        self.blobs: BlobStore = blobs if blobs is not None else LocalBlobStore(self.base)

    @property
    def local(self) -> bool:
        """The files are under ``base`` on this machine (not in a bucket)."""
        return self.blobs.local

    def for_tenant(self, tenant: str) -> "Storage":
        view = Storage(self.base, tenant, self.blobs)
        if self.local:
            for sub in ("models", "datasets", "jobs", "model_dirs"):
                (view.root / sub).mkdir(parents=True, exist_ok=True)
        return view

    def key(self, path: Path) -> str:
        """The store's key of a path under the root (ValueError outside it)."""
        return path.resolve().relative_to(self.base).as_posix()

    def folder_key(self, path: Path) -> str:
        """The key prefix of the objects under the folder ``path`` (ends with ``/``)."""
        return self.key(path) + "/"

    def read_bytes(self, path: Path) -> bytes:
        """A stored file's bytes; NotFound when absent."""
        return self.blobs.get_bytes(self.key(path))

    def put_file(self, path: Path, src: Path) -> None:
        """Store ``src`` as the file at ``path`` (on the local folder: copied there)."""
        self.blobs.put_file(self.key(path), src)

    def exists(self, path: Path) -> bool:
        return self.blobs.size(self.key(path)) is not None

    def listing(self, folder: Path) -> list[ObjectInfo]:
        """Every stored file under ``folder``, keys relative to the storage base."""
        return sorted(self.blobs.list(self.folder_key(folder)), key=lambda i: i.key)

    def holds_files(self, folder: Path) -> bool:
        """Anything is stored under ``folder``."""
        if self.local:
            return folder.is_dir() and any(folder.iterdir())
        return any(True for _ in self.blobs.list(self.folder_key(folder)))

    def stored_bytes(self, folder: Path) -> int:
        """Bytes the stored files under ``folder`` hold (e.g. a model_dir's, for quotas)."""
        return sum(info.size for info in self.blobs.list(self.folder_key(folder)))

    def remove_tree(self, folder: Path) -> int:
        """Remove every stored file under ``folder``; the count of objects removed."""
        if self.local:
            count = sum(1 for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else 0
            shutil.rmtree(folder, ignore_errors=True)
            return count
        return self.blobs.delete_prefix(self.folder_key(folder))

    @contextmanager
    def local_copy(self, path: Path) -> Iterator[Path]:
        """A local Path of the stored file ``path``: itself on the local folder, else a
        copy fetched into tmp/ and removed when the block ends. NotFound when absent."""
        if self.local:
            yield path
            return
        copy = self.tmp_path(path.suffix)
        try:
            self.blobs.get_file(self.key(path), copy)
            yield copy
        finally:
            copy.unlink(missing_ok=True)

    def ensure(self) -> None:
        for sub in ("tmp", "tenants") if self.local else ("tmp",):
            (self.base / sub).mkdir(parents=True, exist_ok=True)

    def remove_stale_tmp(self, older_than_s: float = 3600) -> int:
        """Remove upload files a process that died mid-upload left in tmp/ (run at start).

        Only files untouched for ``older_than_s``: another API process sharing the volume
        may be receiving an upload right now.
        """
        cutoff = time.time() - older_than_s
        removed = 0
        for path in (self.base / "tmp").iterdir():
            try:
                if path.lstat().st_mtime >= cutoff:
                    continue
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
                removed += 1
            except FileNotFoundError:
                continue
        return removed

    def relative(self, path: Path) -> str:
        """A path under this tenant's folder as the API shows it (never absolute)."""
        try:
            return path.resolve().relative_to(self.root).as_posix()
        except ValueError:
            return path.name

    def resolve(self, stored: str) -> Path:
        """A path the job store keeps (relative to the tenant folder; absolute in rows
        older than tenancy) as a path on this machine."""
        return self.root / stored

    # uploads -------------------------------------------------------------

    def tmp_path(self, suffix: str = "") -> Path:
        """A fresh path on the storage volume, so a finished upload is moved, not copied."""
        return self.base / "tmp" / f"{new_id()}{suffix}"

    def model_folder(self, model_id: str) -> Path:
        return self._entry("models", model_id)

    def dataset_folder(self, dataset_id: str) -> Path:
        return self._entry("datasets", dataset_id)

    def save_entry(
        self, kind: str, entry_id: str, data_file: Path | None, name: str, info: BaseModel
    ) -> Path:
        """Move an inspected upload into place; its info.json is written last, so an
        entry with an info.json is always complete. ``data_file`` None: the data is in
        the bucket at its key already (sent there while it arrived)."""
        folder = self.root / kind / entry_id
        target = folder / name
        if not self.local:
            if data_file is not None:
                self.put_file(target, data_file)
            self.blobs.put_bytes(
                self.key(folder / "info.json"), _json(info.model_dump(mode="json"))
            )
            return target
        if data_file is None:
            raise ValueError("the local folder keeps an upload by moving its file")
        folder.mkdir(parents=True, exist_ok=True)
        os.replace(data_file, target)
        _write_json_atomic(folder / "info.json", info.model_dump(mode="json"))
        return target

    def write_summary(self, model_id: str, summary: dict) -> None:
        """The upload inspector's full result, kept beside the model (before info.json)."""
        folder = self.root / "models" / model_id
        if not self.local:
            self.blobs.put_bytes(self.key(folder / "summary.json"), _json(summary))
            return
        folder.mkdir(parents=True, exist_ok=True)
        _write_json_atomic(folder / "summary.json", summary)

    def model_summary(self, model_id: str) -> dict | None:
        """The stored inspection of an uploaded model, or None for older entries."""
        try:
            return json.loads(self.read_bytes(self.model_folder(model_id) / "summary.json"))
        except NotFound:
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
        if not _ID.fullmatch(entry_id):
            raise NotFound(f"no {kind[:-1]} with id {entry_id!r}")
        return self.root / kind / entry_id

    def _read_info(self, kind: str, entry_id: str, label: str) -> dict:
        path = self._entry(kind, entry_id) / "info.json"
        try:
            return json.loads(self.read_bytes(path))
        except NotFound:
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
            match = _CKPT_INDEX.fullmatch(path.name)
            if match:
                found.append(CheckpointInfo(step=int(match[1]), name=f"model.ckpt-{match[1]}"))
        return sorted(found, key=lambda c: c.step)

    @staticmethod
    def checkpoint_files(model_dir: Path, step: int) -> list[Path]:
        prefix = f"model.ckpt-{step}."
        return sorted(p for p in model_dir.iterdir() if p.name.startswith(prefix))

    # the same, read from the store (bucket storage) -------------------------
    # A bucket has no rename: a worker publishes an export's files with saved_model.pb
    # last, and a checkpoint's with its .index last, so either counts once that is in.

    def stored_export(self, model_dir: Path) -> tuple[str, list[ObjectInfo]] | None:
        """The newest complete SavedModel's version and its stored files, or None."""
        prefix = self.folder_key(model_dir / EXPORT_DIR)
        versions: dict[str, list[ObjectInfo]] = {}
        complete = set()
        for info in self.blobs.list(prefix):
            version, _, rest = info.key[len(prefix) :].partition("/")
            if version.isdigit() and rest:
                versions.setdefault(version, []).append(info)
                if rest == "saved_model.pb":
                    complete.add(version)
        if not complete:
            return None
        newest = max(complete, key=int)
        return newest, sorted(versions[newest], key=lambda i: i.key)

    def stored_checkpoints(self, model_dir: Path) -> list[CheckpointInfo]:
        if self.local:
            return self.checkpoints(model_dir)
        prefix = self.folder_key(model_dir)
        found = []
        for info in self.blobs.list(prefix):
            match = _CKPT_INDEX.fullmatch(info.key[len(prefix) :])
            if match:
                found.append(CheckpointInfo(step=int(match[1]), name=f"model.ckpt-{match[1]}"))
        return sorted(found, key=lambda c: c.step)

    def stored_checkpoint_files(self, model_dir: Path, step: int) -> list[ObjectInfo]:
        prefix = self.folder_key(model_dir)
        name = f"model.ckpt-{step}."
        return sorted(
            (i for i in self.blobs.list(prefix + name) if "/" not in i.key[len(prefix) :]),
            key=lambda i: i.key,
        )


def disk_usage(folder: Path) -> int:
    """Bytes the files under ``folder`` hold (0 when it does not exist)."""
    total = 0
    for path in folder.rglob("*"):
        try:
            if path.is_file() and not path.is_symlink():
                total += path.stat().st_size
        except OSError:
            continue
    return total


def _json(data: object) -> bytes:
    return json.dumps(data, indent=1).encode()


def _write_json_atomic(path: Path, data: object) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(_json(data))
    os.replace(tmp, path)
