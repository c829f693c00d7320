"""Jobs' scratch folders with bucket storage (worker/scratch.py): held while the job runs
and removed after; a folder no running job holds is swept, a held one never."""

import multiprocessing
from pathlib import Path

from worker.scratch import Scratch


def test_a_held_folder_is_removed_when_its_job_ends(tmp_path: Path) -> None:
    scratch = Scratch(tmp_path / "scratch")
    with scratch.hold("job-1") as folder:
        (folder / "model_dir").mkdir()
        (folder / "model_dir" / "model.ckpt-1.index").write_bytes(b"x")
        assert scratch.sweep() == 0  # held: kept
        assert (folder / "model_dir" / "model.ckpt-1.index").exists()
    assert not folder.exists()


def _hold_then_die(root: Path, job_id: str, ready: object) -> None:
    scratch = Scratch(root)
    with scratch.hold(job_id) as folder:
        (folder / "partial").write_bytes(b"x")
        ready.set()  # type: ignore[attr-defined]
        multiprocessing.Event().wait(60)


def test_a_folder_a_killed_process_left_is_swept(tmp_path: Path) -> None:
    root = tmp_path / "scratch"
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    held = ctx.Process(target=_hold_then_die, args=(root, "job-2", ready))
    held.start()
    try:
        assert ready.wait(30)
        scratch = Scratch(root)
        assert scratch.sweep() == 0  # another process holds it: kept
        assert (root / "job-2" / "partial").exists()
    finally:
        held.kill()
        held.join(10)
    # Its process is gone (SIGKILL: no clean-up ran); the next job's sweep removes it.
    assert (root / "job-2" / "partial").exists()
    assert Scratch(root).sweep() == 1
    assert not (root / "job-2").exists()
    # A folder with no lock file at all (a process killed before it took the lock) too.
    (root / "job-3").mkdir()
    assert Scratch(root).sweep() == 1
    assert list(root.iterdir()) == []
