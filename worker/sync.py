"""A job's model_dir with bucket storage: trained in local scratch, published to the bucket.

TensorFlow writes checkpoints into a local folder (``<data_dir>/scratch/<job id>/``);
the bucket holds the job's model_dir under ``tenants/<tenant>/<stored model_dir>/`` with
the same file names, and is the truth:

- :class:`CheckpointPublisher` uploads each checkpoint as it is saved, off the training
  thread (worker/publish_queue.py), in the order they were saved: its data files and
  ``.meta`` first, then its ``.index``, then the ``checkpoint`` state file as that save
  left it, so the newest checkpoint the bucket's state names is always complete;
  checkpoints the Saver deleted (``keep_checkpoint_max``) then leave the bucket too.
  Training's end, however it ends, waits for the uploads queued before it;
- :func:`publish_files` uploads the rest (event files, ``graph.pbtxt``, ``eval/``) when
  they changed, at each checkpoint and at the end of each phase;
- :func:`restore_checkpoints` starts a job (a retry on any machine, an evaluation of a
  named model_dir) from the checkpoints the bucket's state names;
- :func:`publish_export` uploads a verified SavedModel, ``saved_model.pb`` last; an
  upload that fails is removed again (as far as the bucket lets it), and a version folder
  without ``saved_model.pb`` is never listed as an export.
"""

import logging
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from k2e.blobstore import BlobStore, ObjectInfo, check_key
from k2e.errors import NotFound
from k2e.storage import EXPORT_DIR, EXPORT_STAGING_DIR
from worker.cache import InputCache
from worker.publish_queue import PublishQueue
from worker.tfrt import tf

log = logging.getLogger("k2e.worker")

STATE = "checkpoint"
_STATE_LINE = re.compile(r'^(model_checkpoint_path|all_model_checkpoint_paths): "(.*)"$', re.M)
_CHECKPOINT_FILE = re.compile(r"(model\.ckpt-[0-9]+)\.(index|meta|data-([0-9]+)-of-([0-9]+))")
# What training writes for a moment only: a save's temporary folder (model.ckpt-N_temp/),
# an atomic write's temporary file (graph.pbtxt.tmp<hex>, checkpoint.tempstate<n>).
_TEMPORARY = re.compile(r"^model\.ckpt-[0-9]+_temp|\.tmp[0-9a-f]{32}$|\.tempstate")
# Written and read only locally: the Keras weights model_to_estimator saves (from the
# upload, again on every attempt) and the export's staging folder.
_LOCAL_ONLY = ("keras", EXPORT_DIR, EXPORT_STAGING_DIR)


@dataclass
class BucketDir:
    """A job's model_dir in the bucket: objects under ``key`` (``tenants/<t>/<stored>``);
    ``stored`` is the model_dir as the job store keeps it (relative to the tenant)."""

    store: BlobStore
    tenant: str
    stored: str
    # Sizes of the files publish_files uploaded: a file is sent again when it grew.
    sent: dict[str, int] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return check_key(f"tenants/{self.tenant}/{self.stored}")

    def object(self, name: str) -> str:
        return f"{self.key}/{name}"

    def usage(self) -> int:
        return sum(info.size for info in self.store.list(f"{self.key}/"))

    def tenant_key(self, stored: str) -> str:
        """The bucket key of a path the job store keeps for this tenant."""
        return check_key(f"tenants/{self.tenant}/{stored}")


def publish_checkpoint(
    bucket: BucketDir, model_dir: Path, step: int, state: str | None = None
) -> bool:
    """Upload the checkpoint of ``step`` (data, then index), then ``state``: the state
    file as the checkpoint's save left it (by default, as it is now). Then remove from the
    bucket the checkpoints that neither ``model_dir`` nor that state holds any more (the
    Saver removed them). False, and nothing more uploaded, when the checkpoint is gone
    from ``model_dir`` by then: the Saver removed it, a newer one follows."""
    name = f"model.ckpt-{step}"
    index = model_dir / f"{name}.index"
    try:
        if not index.is_file():
            raise FileNotFoundError(f"checkpoint {name} has no index in {model_dir}")
        state = (model_dir / STATE).read_text() if state is None else state
        for path in sorted(model_dir.glob(f"{name}.*")):
            if path != index and _CHECKPOINT_FILE.fullmatch(path.name):
                bucket.store.put_file(bucket.object(path.name), path)
        bucket.store.put_file(bucket.object(index.name), index)
    except Exception:
        if index.is_file() or not _saved_after(model_dir, step):
            raise
        # Its data, if any was sent, goes with the next checkpoint's clean-up below.
        log.info("checkpoint %s was removed before it was published: skipped", name)
        return False
    bucket.store.put_bytes(bucket.object(STATE), _relative_state(state).encode())
    named = {n for names in _state_names(state).values() for n in names}
    for info in list(bucket.store.list(f"{bucket.key}/model.ckpt-")):
        leaf = info.key[len(bucket.key) + 1 :]
        found = _CHECKPOINT_FILE.fullmatch(leaf)
        if found and found[1] not in named and not (model_dir / leaf).exists():
            bucket.store.delete(info.key)
    return True


def _saved_after(model_dir: Path, step: int) -> bool:
    """A checkpoint newer than ``step`` is in ``model_dir``."""
    return any(
        int(found[1].rsplit("-", 1)[1]) > step
        for found in map(_CHECKPOINT_FILE.fullmatch, (p.name for p in model_dir.iterdir()))
        if found and found[2] == "index"
    )


def publish_files(bucket: BucketDir, model_dir: Path) -> int:
    """Upload the model_dir's other files (event files, graph.pbtxt, eval/) that are new
    or grew since the last call; the count uploaded. Training may be writing meanwhile:
    temporary files (a save's, an atomic write's) are not sent, nor one removed before
    it was read."""
    sent = 0
    if not model_dir.is_dir():
        return sent
    for path in sorted(model_dir.rglob("*")):
        relative = path.relative_to(model_dir)
        leaf = relative.as_posix()
        if (
            relative.parts[0] in _LOCAL_ONLY
            or leaf == STATE
            or _CHECKPOINT_FILE.fullmatch(leaf)
            or _TEMPORARY.search(leaf)
            or not path.is_file()
        ):
            continue
        try:
            size = path.stat().st_size
            if bucket.sent.get(leaf) == size:
                continue
            bucket.store.put_file(bucket.object(leaf), path)
        except Exception:
            if path.exists():
                raise
            continue
        bucket.sent[leaf] = size
        sent += 1
    return sent


class CheckpointPublisher(tf.estimator.CheckpointSaverListener):  # type: ignore[misc]
    """Publishes each checkpoint the Estimator saves (pass it in ``saving_listeners``),
    on a thread of its own: ``after_save`` only queues the checkpoint. The listener's
    ``end`` (training finished) waits for what was queued; use the publisher as a
    context manager around the training so that a training that fails or is stopped
    waits too. An upload's failure is raised in the training thread, at its next save
    or at its end.

    Every checkpoint saved is published, in order, none skipped while it exists: the
    bucket keeps the checkpoints the Saver keeps (``keep_checkpoint_max``), which GET
    /jobs/{id}/checkpoints lists. One the Saver removed before its turn came is skipped
    (a newer one is queued behind it); its index was never sent, so no state names it."""

    def __init__(
        self,
        bucket: BucketDir,
        model_dir: Path,
        owned: Callable[[], bool] = lambda: True,
        waiting: int = 2,
    ) -> None:
        self.bucket = bucket
        self.model_dir = model_dir
        self.owned = owned
        self.published: list[int] = []
        self.queue = PublishQueue(f"publish-{bucket.key}", waiting)

    def after_save(self, session: Any, global_step_value: int) -> None:
        step = int(global_step_value)
        if not self.owned():
            log.warning("checkpoint model.ckpt-%d not published: the job is not ours", step)
            return
        # The state as this save left it: the bucket's state never names a checkpoint
        # saved later, whose upload may not have started.
        state = (self.model_dir / STATE).read_text()
        self.queue.submit(lambda: self._publish(step, state))

    def end(self, session: Any, global_step_value: int) -> None:
        if self.owned():
            self.queue.submit(self._publish_files)
        self.queue.drain()

    def close(self, raise_error: bool = True) -> None:
        """Wait for every queued upload; then raise the first one's failure (unless
        ``raise_error`` is False)."""
        self.queue.drain(raise_error)

    def __enter__(self) -> "CheckpointPublisher":
        return self

    def __exit__(self, kind: type[BaseException] | None, *rest: object) -> None:
        # A training that failed fails with its own error; an upload's comes second.
        self.close(raise_error=kind is None)

    def _publish(self, step: int, state: str) -> None:
        if not self.owned():  # the lease was lost while the checkpoint waited
            log.warning("checkpoint model.ckpt-%d not published: the job is not ours", step)
            return
        if publish_checkpoint(self.bucket, self.model_dir, step, state):
            self.published.append(step)
            log.info("published checkpoint model.ckpt-%d to %s", step, self.bucket.store.url)
        publish_files(self.bucket, self.model_dir)

    def _publish_files(self) -> None:
        if self.owned():
            publish_files(self.bucket, self.model_dir)


def restore_checkpoints(bucket: BucketDir, model_dir: Path) -> str | None:
    """Copy the checkpoints the bucket's state file names into ``model_dir`` (emptied
    first: the bucket is the truth), with a state file naming them; the newest one's name,
    or None when the bucket has none. A listed checkpoint that is incomplete is skipped."""
    shutil.rmtree(model_dir, ignore_errors=True)
    model_dir.mkdir(parents=True)
    try:
        state = bucket.store.get_bytes(bucket.object(STATE)).decode()
    except NotFound:
        return None
    listed = _state_names(state)
    newest = listed.get("model_checkpoint_path", [None])[0]
    names = [*listed.get("all_model_checkpoint_paths", []), *([newest] if newest else [])]
    restored = [
        name
        for name in dict.fromkeys(names)
        if fetch_checkpoint(bucket.store, bucket.object(name), model_dir)
    ]
    if not restored:
        return None
    latest = newest if newest in restored else restored[-1]
    tf.compat.v1.train.update_checkpoint_state(
        str(model_dir), latest, all_model_checkpoint_paths=restored
    )
    log.info("restored %s from %s (%d checkpoints)", latest, bucket.key, len(restored))
    return latest


def fetch_checkpoint(store: BlobStore, key: str, dest: Path) -> Path | None:
    """Download the checkpoint whose objects start with ``key`` (``.../model.ckpt-N``)
    into ``dest``; its local path prefix, or None unless its index and every data shard
    are in the store."""
    name = key.rsplit("/", 1)[-1]
    found = {info.key[len(key) - len(name) :]: info for info in store.list(f"{key}.")}
    shards = [m for m in map(_CHECKPOINT_FILE.fullmatch, found) if m and m[3] is not None]
    total = int(shards[0][4]) if shards else 0
    if (
        f"{name}.index" not in found
        or not shards
        or {int(m[3]) for m in shards} != set(range(total))
        or any(int(m[4]) != total for m in shards)
    ):
        log.warning("checkpoint %s is incomplete in the store: not used", key)
        return None
    dest.mkdir(parents=True, exist_ok=True)
    for leaf, info in found.items():
        if _CHECKPOINT_FILE.fullmatch(leaf):
            store.get_file(info.key, dest / leaf)
    return dest / name


def publish_export(bucket: BucketDir, export_dir: Path) -> str:
    """Upload a published (verified) export to ``<model_dir>/export/<version>/``,
    ``saved_model.pb`` last (a reader that finds it finds the rest); the path the job
    store records for it. An upload that fails (the bucket stopped answering) is removed
    again as far as the bucket allows; what stays has no ``saved_model.pb``, and every
    reader of exports (fetch_newest_export, export_in_bucket, Storage.stored_export)
    passes over a version folder without one."""
    stored = f"{bucket.stored}/{EXPORT_DIR}/{export_dir.name}"
    prefix = bucket.tenant_key(stored)
    files = sorted(p for p in export_dir.rglob("*") if p.is_file())
    files.sort(key=lambda p: p.name == "saved_model.pb")
    try:
        for path in files:
            bucket.store.put_file(f"{prefix}/{path.relative_to(export_dir).as_posix()}", path)
    except BaseException:
        try:
            bucket.store.delete_prefix(f"{prefix}/")
        except Exception as exc:  # the bucket is still down: the folder stays, unlisted
            log.warning("the partial export %s could not be removed: %s", prefix, exc)
        raise
    return stored


def fetch_newest_export(bucket: BucketDir, cache: InputCache) -> Path | None:
    """The model_dir's newest complete export in the bucket, as a folder of the cache
    (held until ``cache.release()``); None when it has none."""
    root = f"{bucket.key}/{EXPORT_DIR}/"
    versions: dict[str, list[ObjectInfo]] = {}
    for info in bucket.store.list(root):
        version = info.key[len(root) :].split("/", 1)[0]
        if version.isdigit():
            versions.setdefault(version, []).append(info)
    complete = [v for v, infos in versions.items() if any(_is_graph(v, i.key) for i in infos)]
    if not complete:
        return None
    newest = max(complete, key=int)
    for info in versions[newest]:
        cache.fetch(info.key, size=info.size)
    return cache.path(f"{root}{newest}")


def _is_graph(version: str, key: str) -> bool:
    return key.endswith(f"/{version}/saved_model.pb")


def export_in_bucket(bucket: BucketDir, stored: str) -> bool:
    """Whether the export the job store recorded is complete in the bucket."""
    return bucket.store.size(f"{bucket.tenant_key(stored)}/saved_model.pb") is not None


def _state_names(state: str) -> dict[str, list[str]]:
    names: dict[str, list[str]] = {}
    for field_name, path in _STATE_LINE.findall(state):
        names.setdefault(field_name, []).append(path.rsplit("/", 1)[-1])
    return names


def _relative_state(state: str) -> str:
    """The state file with each checkpoint named by its file name (the local one names
    them by absolute paths of this machine's scratch folder)."""
    return _STATE_LINE.sub(lambda m: f'{m[1]}: "{m[2].rsplit("/", 1)[-1]}"', state)
