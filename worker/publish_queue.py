"""A job's uploads to the bucket, run one at a time, in the order they were queued, on a
thread of the job's own, so that training does not wait for the bucket.

The queue is bounded: queuing past ``limit`` waiting uploads waits for one to finish
(a bucket slower than the checkpoints come slows training down rather than piling them
up). The first upload that fails is kept: the uploads still waiting are dropped, and
:meth:`PublishQueue.submit` and :meth:`PublishQueue.drain` raise it, the very exception
the upload raised, so that the job fails as if it had uploaded itself (a bucket that does
not answer is the job's ``StorageUnavailable``). :meth:`PublishQueue.drain` returns only
once the thread has ended: no upload outlives its job.
"""

import logging
import threading
from collections import deque
from collections.abc import Callable

log = logging.getLogger("k2e.worker")

Upload = Callable[[], None]


class PublishQueue:
    """Uploads run in order on one background thread, started with the first one."""

    def __init__(self, name: str, limit: int = 2) -> None:
        self.name = name
        self.limit = limit
        self._lock = threading.Condition()
        self._waiting: deque[Upload] = deque()
        self._closing = False
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    @property
    def error(self) -> BaseException | None:
        """The first upload's failure, or None."""
        return self._error

    def submit(self, upload: Upload) -> None:
        """Queue ``upload`` behind the others (waiting while ``limit`` already wait);
        raises the failure of an earlier upload instead."""
        with self._lock:
            while self._error is None and len(self._waiting) >= self.limit:
                self._lock.wait()
            if self._error is not None:
                raise self._error
            self._waiting.append(upload)
            if self._thread is None:
                self._closing = False
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()
            self._lock.notify_all()

    def drain(self, raise_error: bool = True) -> None:
        """Wait until every queued upload has run and the thread has ended; then raise
        the first failure, unless ``raise_error`` is False (the caller is failing already)."""
        with self._lock:
            thread = self._thread
            self._closing = True
            self._lock.notify_all()
        if thread is not None:
            _join(thread)
            with self._lock:
                if self._thread is thread:
                    self._thread = None
        if raise_error and self._error is not None:
            raise self._error

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._waiting and not self._closing:
                    self._lock.wait()
                if not self._waiting:
                    return
                upload = self._waiting.popleft()
                self._lock.notify_all()  # a place is free
            try:
                upload()
            except BaseException as exc:  # kept for the job's thread to raise
                log.warning(
                    "%s: upload failed, the ones queued after it dropped: %s", self.name, exc
                )
                with self._lock:
                    self._error = exc
                    self._waiting.clear()
                    self._lock.notify_all()
                return


def _join(thread: threading.Thread) -> None:
    """Wait for ``thread`` to end, even when an exception lands in this thread meanwhile
    (the heartbeat's JobInterrupted, a time limit): that one is raised after the wait, so
    an upload never runs on past the job that queued it."""
    landed: BaseException | None = None
    while thread.is_alive():
        try:
            thread.join()
        except BaseException as exc:
            landed = landed or exc
    if landed is not None:
        raise landed
