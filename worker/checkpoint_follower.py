"""A cluster evaluator's view of the chief's checkpoints with bucket storage, where no
folder is shared: the chief publishes each checkpoint it saves (worker/sync.py), and the
evaluator's process copies the newest one the bucket's ``checkpoint`` state names into
its own local model_dir, where ``train_and_evaluate``'s evaluator finds it as it would in
a shared model_dir.

The local folder is kept as the chief's would be: a checkpoint's files are all there
before the local state file names it (the evaluator never reads a partial one), and the
local checkpoints the bucket's state no longer names (the chief's Saver removed them,
``keep_checkpoint_max``) are removed, as they would be from a shared folder.
"""

import logging
import threading
from pathlib import Path

from k2e.errors import NotFound
from worker.sync import _CHECKPOINT_FILE, STATE, BucketDir, _state_names, fetch_checkpoint
from worker.tfrt import tf

log = logging.getLogger("k2e.worker")
POLL_S = 0.5


def pull_newest(bucket: BucketDir, model_dir: Path, have: str | None) -> str | None:
    """Copy the bucket's newest checkpoint into ``model_dir`` unless it is ``have`` (the
    one copied last); the newest one the local state names afterwards."""
    try:
        state = bucket.store.get_bytes(bucket.object(STATE)).decode()
    except NotFound:
        return have
    names = _state_names(state)
    newest = names.get("model_checkpoint_path", [None])[0]
    if newest is None or newest == have:
        return have
    if fetch_checkpoint(bucket.store, bucket.object(newest), model_dir) is None:
        return have  # incomplete in the bucket: the next poll looks again
    kept = [n for n in names.get("all_model_checkpoint_paths", []) if n != newest]
    local = [n for n in kept if (model_dir / f"{n}.index").is_file()]
    tf.compat.v1.train.update_checkpoint_state(
        str(model_dir), newest, all_model_checkpoint_paths=[*local, newest]
    )
    for path in model_dir.iterdir():
        found = _CHECKPOINT_FILE.fullmatch(path.name)
        if found and found[1] != newest and found[1] not in kept:
            path.unlink(missing_ok=True)
    log.info("evaluator: %s copied from the bucket", newest)
    return newest


class CheckpointFollower:
    """Pulls the bucket's newest checkpoint into ``model_dir`` every ``poll_s`` on a
    daemon thread, until :meth:`stop`. A bucket that does not answer is tried again at
    the next poll (the evaluator waits, as for a chief that saves nothing new)."""

    def __init__(self, bucket: BucketDir, model_dir: Path, poll_s: float = POLL_S) -> None:
        self.bucket, self.model_dir, self.poll_s = bucket, model_dir, poll_s
        self.newest: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="checkpoint-follower", daemon=True)

    def start(self) -> "CheckpointFollower":
        self.model_dir.mkdir(parents=True, exist_ok=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.newest = pull_newest(self.bucket, self.model_dir, self.newest)
            except Exception as exc:  # the bucket is briefly away: next poll
                log.warning("evaluator: the bucket's checkpoints not read: %s", exc)
            self._stop.wait(self.poll_s)
