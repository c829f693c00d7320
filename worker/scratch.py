"""Jobs' local scratch folders with bucket storage: ``<data_dir>/scratch/<job id>/``.

A job holds its folder with an exclusive ``flock`` on ``<folder>/.lock`` while it runs and
removes it when it ends. A worker process killed mid-job (the memory bound's kill, a
crash) leaves its folder behind: :meth:`Scratch.sweep`, run as each job starts, removes
every folder no running job holds, whichever worker process of the machine left it; a
worker process also sweeps as it starts (worker.training.JobRunner), so a restarted machine keeps
nothing of the jobs its killed processes ran.
"""

import contextlib
import fcntl
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger("k2e.worker")
LOCK = ".lock"


class Scratch:
    def __init__(self, root: Path) -> None:
        self.root = root

    def folder(self, job_id: str) -> Path:
        return self.root / job_id

    @contextlib.contextmanager
    def hold(self, job_id: str) -> Iterator[Path]:
        """The job's folder, held until the block ends, then removed. Waits while another
        process holds it (an attempt that lost its lease and has not stopped yet)."""
        folder = self.folder(job_id)
        while True:
            folder.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
            except FileNotFoundError:  # swept meanwhile
                continue
            fcntl.flock(fd, fcntl.LOCK_EX)
            if _still_there(fd, folder / LOCK):
                break
            os.close(fd)  # a sweep removed the folder while this process waited
        try:
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)
            os.close(fd)

    def sweep(self) -> int:
        """Remove the folders no running job holds; how many."""
        if not self.root.is_dir():
            return 0
        removed = 0
        for folder in self.root.iterdir():
            if not folder.is_dir() or folder.is_symlink():
                continue
            try:
                fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
            except FileNotFoundError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            try:
                shutil.rmtree(folder, ignore_errors=True)
            finally:
                os.close(fd)
            log.info("removed the scratch folder a stopped job left: %s", folder.name)
            removed += 1
        return removed


def _still_there(fd: int, path: Path) -> bool:
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False
