"""A worker's bounded local copy of the uploads its jobs read, with bucket storage.

Objects are kept under ``<data_dir>/cache/objects/`` at their storage keys, so that the
folder is itself a storage root (k2e.storage.Storage reads a job's model and datasets from
it as from the local folder). Each file is checked against the sha256 its upload recorded
when it is fetched; a cache hit whose file is as it was left then (size, mtime, ctime and
inode, kept beside the cache under ``verified/``) is trusted without reading it again, and
any other is hashed again: a file changed on disk is fetched again (a bucket object that
does not match its record is refused: the job fails with the reason).

Past ``limit_bytes`` the least recently used files go (a file's mtime is its last use),
never one a running job holds: a job holds its inputs with a shared ``flock`` on each file
until it ends, and eviction skips a file it cannot lock exclusively. Worker processes of
one machine share the folder; fetches and evictions take turns under ``.lock``.
"""

import contextlib
import fcntl
import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

from k2e.blobstore import BlobStore, check_key
from k2e.catalog import Catalog, Kind
from k2e.errors import InvalidSpec, NotFound
from k2e.schemas import ConvertRequest
from k2e.storage import file_sha256, is_upload_id
from k2e.tenancy.scope import Scope

log = logging.getLogger("k2e.worker")


class InputMismatch(InvalidSpec):
    """A stored upload whose bytes are not those its upload recorded."""


class InputCache:
    """The cache of one machine's workers; ``root`` is the storage root of its copies."""

    def __init__(self, store: BlobStore, folder: Path, limit_bytes: int) -> None:
        self.store = store
        self.folder = folder
        self.root = folder / "objects"
        self.verified = folder / "verified"
        self.limit_bytes = limit_bytes
        self.root.mkdir(parents=True, exist_ok=True)
        # Files this process holds for its running job: fd per path.
        self._held: dict[Path, int] = {}

    def path(self, key: str) -> Path:
        return self.root / check_key(key)

    def fetch(self, key: str, sha256: str | None = None, size: int | None = None) -> Path:
        """The local copy of the object ``key``, downloaded unless a copy is here already.

        With ``sha256`` (the upload's record) the copy must have that digest: a cached copy
        that does not is fetched again, a downloaded one that does not raises InputMismatch.
        Without it (an upload recorded none, a file named by path, an export) a cached copy
        of the object's ``size`` (when not given, asked of the store) is used. The file is
        held until :meth:`release`.
        """
        path = self.path(key)
        with self._turn():
            if not self._valid(key, path, sha256, size):
                self._download(key, path, sha256)
            now = time.time_ns()  # the last use (eviction order), finer than the clock
            os.utime(path, ns=(now, now))  # the file system's own times would give
            if sha256:
                self._remember(key, path, sha256)  # as it is now, after the utime
            self._hold(path)
            self._evict()
        return path

    def put_local(self, key: str, data: bytes) -> Path:
        """Write a small file (an upload's info.json from the job store) into the copy."""
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".put-{os.getpid()}-{path.name}")
        tmp.write_bytes(data)
        os.replace(tmp, path)
        return path

    def release(self) -> None:
        """Let eviction take the files this process held for its job."""
        for fd in self._held.values():
            os.close(fd)
        self._held.clear()

    def usage(self) -> int:
        return sum(size for _, _, size in self._files())

    def _valid(self, key: str, path: Path, sha256: str | None, size: int | None) -> bool:
        if not path.is_file():
            return False
        if sha256:
            recorded = self._recorded(key)
            if recorded is not None and recorded == _stamp(path, sha256):
                log.info("cache: %s is here (unchanged since its sha256 was checked)", key)
                return True
            if file_sha256(path) == sha256:
                log.info("cache: %s is here (sha256 checked)", key)
                return True
            log.warning("cache: %s changed on disk (sha256 differs); fetching it again", key)
            self._forget(key, path)
            return False
        if (self.store.size(key) if size is None else size) == path.stat().st_size:
            return True
        self._forget(key, path)
        return False

    def _record_path(self, key: str) -> Path:
        return self.verified / f"{check_key(key)}.json"

    def _recorded(self, key: str) -> dict | None:
        try:
            return json.loads(self._record_path(key).read_text())
        except (OSError, ValueError):
            return None

    def _remember(self, key: str, path: Path, sha256: str) -> None:
        """Record that ``path``, as it stands now, has the digest ``sha256``."""
        record = self._record_path(key)
        record.parent.mkdir(parents=True, exist_ok=True)
        tmp = record.with_name(f".put-{os.getpid()}-{record.name}")
        tmp.write_text(json.dumps(_stamp(path, sha256)))
        os.replace(tmp, record)

    def _forget(self, key: str, path: Path) -> None:
        path.unlink(missing_ok=True)
        self._record_path(key).unlink(missing_ok=True)

    def _download(self, key: str, path: Path, sha256: str | None) -> None:
        log.info("cache: fetching %s", key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".get-{os.getpid()}-{path.name}")
        try:
            self.store.get_file(key, tmp)
            if sha256:
                found = file_sha256(tmp)
                if found != sha256:
                    raise InputMismatch(
                        f"the stored file {key} does not match its upload: sha256 {found}, "
                        f"recorded {sha256}; upload it again"
                    )
            os.replace(tmp, path)
        except NotFound:
            raise InvalidSpec(f"the stored file {key} is gone") from None
        finally:
            tmp.unlink(missing_ok=True)

    def _hold(self, path: Path) -> None:
        if path in self._held:
            return
        fd = os.open(path, os.O_RDONLY)
        fcntl.flock(fd, fcntl.LOCK_SH)
        self._held[path] = fd

    def _files(self) -> Iterator[tuple[float, Path, int]]:
        for dirpath, _, names in os.walk(self.root):
            for name in names:
                path = Path(dirpath) / name
                with contextlib.suppress(FileNotFoundError):
                    stat = path.stat()
                    yield stat.st_mtime, path, stat.st_size

    def _evict(self) -> None:
        files = sorted(self._files())
        total = sum(size for _, _, size in files)
        for _, path, size in files:
            if total <= self.limit_bytes:
                return
            if path in self._held or not self._take(path):
                continue
            key = path.relative_to(self.root).as_posix()
            with contextlib.suppress(ValueError):
                self._record_path(key).unlink(missing_ok=True)
            total -= size
            log.info("cache: evicted %s (%d bytes)", path.relative_to(self.root), size)

    @staticmethod
    def _take(path: Path) -> bool:
        """Remove ``path`` unless a job holds it."""
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        finally:
            os.close(fd)  # closing drops the lock; the file goes before anyone reads it
        path.unlink(missing_ok=True)
        return True

    @contextlib.contextmanager
    def _turn(self) -> Iterator[None]:
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.folder / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            started = time.monotonic()
            fcntl.flock(fd, fcntl.LOCK_EX)
            waited = time.monotonic() - started
            if waited > 1:
                log.info("cache: waited %.1f s for another worker's fetch", waited)
            yield
        finally:
            os.close(fd)


def _stamp(path: Path, sha256: str) -> dict | None:
    """What a verified file's record holds: a write, a truncation, a replacement or a
    reset of its times all change it."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return {
        "sha256": sha256,
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "ctime_ns": stat.st_ctime_ns,
        "ino": stat.st_ino,
    }


def fetch_job_inputs(
    cache: InputCache, catalog: Catalog, tenant: str, spec: ConvertRequest
) -> None:
    """Copy the uploads ``spec`` names into the cache, each upload's info.json written from
    the job store's record (the API's copy of it), so that the job's checks and input
    functions read them from ``Storage(cache.root).for_tenant(tenant)``. An upload the
    job store does not know is left out: the job's checks then refuse the spec."""
    base = f"tenants/{tenant}"
    if spec.keras_model_path is not None:
        if is_upload_id(spec.keras_model_path):
            info = _record(catalog, "model", spec.keras_model_path, tenant)
            if info is not None:
                folder = f"{base}/models/{spec.keras_model_path}"
                with contextlib.suppress(InvalidSpec):  # older uploads have no summary
                    cache.fetch(f"{folder}/summary.json")
                cache.fetch(f"{folder}/model.{info['format']}", info.get("sha256") or None)
                cache.put_local(f"{folder}/info.json", json.dumps(info).encode())
        else:
            with contextlib.suppress(InvalidSpec, ValueError):  # the checks say why
                cache.fetch(f"{base}/{spec.keras_model_path}")
    for section in (spec.train, spec.eval):
        if section is None:
            continue
        info = _record(catalog, "dataset", section.dataset, tenant)
        if info is not None:
            folder = f"{base}/datasets/{section.dataset}"
            cache.fetch(f"{folder}/data.{info['format']}", info.get("sha256") or None)
            cache.put_local(f"{folder}/info.json", json.dumps(info).encode())


def _record(catalog: Catalog, kind: Kind, upload_id: str, tenant: str) -> dict | None:
    if not is_upload_id(upload_id):
        return None
    try:
        return catalog.info(kind, upload_id, Scope.of(tenant))
    except NotFound:
        return None
