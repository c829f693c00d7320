"""`k2e run` with settings its environment got wrong: one line per setting (its variable,
the value and the rule), exit 2, and nothing started."""

import os
import subprocess
import sys

from tests.support.checkout import ROOT


def test_bad_settings_are_named_one_per_line_and_nothing_starts(tmp_path) -> None:
    env = dict(
        os.environ,
        K2E_DATA_DIR=str(tmp_path / "data"),
        K2E_MEMBER_PORTS="30000-20000",
        K2E_LOCAL_WORKERS="0",
        K2E_CONTROL_POLL_S="abc",
    )
    done = subprocess.run(
        [sys.executable, "-m", "k2e.launcher"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    lines = sorted(done.stderr.strip().splitlines())  # in the settings' order
    assert lines == sorted(
        [
            "k2e run: K2E_MEMBER_PORTS=30000-20000: Value error, needs 1024 <= first <= last "
            "<= 65535",
            "k2e run: K2E_LOCAL_WORKERS=0: Input should be greater than or equal to 1",
            "k2e run: K2E_CONTROL_POLL_S=abc: Input should be a valid number, unable to parse "
            "string as a number",
        ]
    ), done.stderr
    assert not (tmp_path / "data").exists()  # nothing started, nothing written
