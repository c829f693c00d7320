"""Jobs' scratch folders with bucket storage (worker/scratch.py): held while the job runs
and removed after; a folder no running job holds is swept, a held one never."""

import subprocess
import sys
from pathlib import Path

from tests.support.checkout import ROOT
from worker.scratch import Scratch

# Another worker process: holds a job's scratch folder, says so, and waits to be killed.
# (A plain child process, not multiprocessing: its resource tracker would outlive the test.)
HOLDER = """
import sys, time
from pathlib import Path
from worker.scratch import Scratch
held = Scratch(Path(sys.argv[1])).hold(sys.argv[2])
folder = held.__enter__()
(folder / "partial").write_bytes(b"x")
print("ready", flush=True)
time.sleep(60)
"""


def test_a_held_folder_is_removed_when_its_job_ends(tmp_path: Path) -> None:
    scratch = Scratch(tmp_path / "scratch")
    with scratch.hold("job-1") as folder:
        (folder / "model_dir").mkdir()
        (folder / "model_dir" / "model.ckpt-1.index").write_bytes(b"x")
        assert scratch.sweep() == 0  # held: kept
        assert (folder / "model_dir" / "model.ckpt-1.index").exists()
    assert not folder.exists()


def test_a_folder_a_killed_process_left_is_swept(tmp_path: Path) -> None:
    root = tmp_path / "scratch"
    held = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(root), "job-2"], cwd=ROOT, stdout=subprocess.PIPE
    )
    try:
        assert held.stdout is not None
        assert held.stdout.readline().strip() == b"ready"
        scratch = Scratch(root)
        assert scratch.sweep() == 0  # another process holds it: kept
        assert (root / "job-2" / "partial").exists()
    finally:
        held.kill()
        held.wait(10)
        if held.stdout is not None:
            held.stdout.close()
    # Its process is gone (SIGKILL: no clean-up ran); the next job's sweep removes it.
    assert (root / "job-2" / "partial").exists()
    assert Scratch(root).sweep() == 1
    assert not (root / "job-2").exists()
    # A folder with no lock file at all (a process killed before it took the lock) too.
    (root / "job-3").mkdir()
    assert Scratch(root).sweep() == 1
    assert list(root.iterdir()) == []
