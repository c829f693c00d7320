"""k2e run from a private folder: a clone under ``mktemp -d`` (mode 0700), its venv inside.

Run as root, the inspection child drops to ``nobody`` before it reads an upload; nobody
cannot enter a 0700 folder, so it can read neither k2e's files
(``k2e/plugins/keras_builtins.json``) nor the venv's modules once it has dropped. Every
upload was refused (422, "the file could not be read (PermissionError)"). Here the tracked
files are copied into a 0700 folder and, as root, this machine's venv is bind-mounted
inside it in a mount namespace of the API's own (``unshare``): the API, its inspection
child and every module they import then live under the private folder, as in a fresh
clone whose ``make`` created ``.venv`` there.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from k2e.vetting.selfcheck import write_sample_model
from tests.support.api_server import running_api
from tests.support.checkout import ROOT
from tests.support.child_processes import SESSION_VARIABLE
from tests.support.dataset_bytes import valid_csv, valid_tfrecord

tf = pytest.importorskip("tensorflow")
from tests.support import keras_models  # noqa: E402  (needs TensorFlow)

pytestmark = pytest.mark.integration

VENV = Path(sys.prefix)
LOG_CONFIG = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "root": {"level": "INFO", "handlers": ["stderr"]},
}


def _tracked_files() -> list[str]:
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout
    return [name for name in listed.decode().split("\0") if name and (ROOT / name).is_file()]


@contextmanager
def _copy_in_a_private_folder() -> Iterator[Path]:
    """The working tree's tracked files in a fresh 0700 folder (as ``mktemp -d`` makes)."""
    private = Path(tempfile.mkdtemp(prefix="k2e-private-"))
    try:
        assert private.stat().st_mode & 0o777 == 0o700
        clone = private / "k2e"
        for name in _tracked_files():
            (clone / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, clone / name)
        yield clone
    finally:
        shutil.rmtree(private, ignore_errors=True)


@pytest.fixture
def checkout() -> Iterator[Path]:
    with _copy_in_a_private_folder() as clone:
        yield clone


def _in_the_checkout(clone: Path) -> tuple[tuple[str, ...], str]:
    """The command prefix and Python that run from ``clone`` with the venv inside it:
    bind-mounted at ``clone/.venv`` in a mount namespace of the process's own (root)."""
    if os.geteuid() != 0:
        # Without root the child never changes user: the venv's place does not matter.
        return (), sys.executable
    inner = clone / ".venv"
    inner.mkdir(exist_ok=True)
    mount = 'mount --bind "$0" "$1" && shift && exec "$@"'
    prefix = ("unshare", "--mount", "--propagation", "private", "sh", "-c", mount)
    return (*prefix, str(VENV), str(inner)), str(inner / "bin" / "python")


def _env(clone: Path, redis_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("K2E_", "PYTHON"))}
    env[SESSION_VARIABLE] = os.environ[SESSION_VARIABLE]  # the suite's mark (child_processes)
    env.update(
        K2E_DATA_DIR=str(clone / "data"),
        K2E_ADMIN_KEY=os.environ["K2E_ADMIN_KEY"],
        REDIS_URL=redis_url,
        PYTHONUNBUFFERED="1",
    )
    env.pop("DATABASE_URL", None)
    return env


def test_uploads_are_inspected_from_a_checkout_in_a_private_folder(
    checkout: Path, redis_server, tmp_path: Path
) -> None:
    prefix, python = _in_the_checkout(checkout)
    env = _env(checkout, redis_server.url)
    # What the API imports: the checkout's k2e and the venv's packages, from inside it.
    where = subprocess.run(
        [*prefix, python, "-c", "import k2e, h5py; print(k2e.__file__); print(h5py.__file__)"],
        cwd=checkout,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert all(path.startswith(str(checkout)) for path in where), where

    seed = keras_models.seed_multi_io_model()
    h5 = keras_models.save_h5(seed, tmp_path / "seed.h5").read_bytes()
    seed.save(tmp_path / "seed.keras")
    uploads = {
        "/models": [("seed.h5", h5), ("seed.keras", (tmp_path / "seed.keras").read_bytes())],
        "/datasets": [
            ("d.npz", keras_models.npz_bytes(keras_models.seed_multi_io_data(n=16))),
            ("d.csv", valid_csv()),
            ("d.tfrecord", valid_tfrecord()),
        ],
    }
    log_path = tmp_path / "api.log"
    # k2e's INFO lines in the log: the inspection sandbox says how it confined its child.
    log_config = tmp_path / "logging.json"
    log_config.write_text(json.dumps(LOG_CONFIG))
    headers = {"Authorization": f"Bearer {os.environ['K2E_ADMIN_KEY']}"}
    args = ("--log-config", str(log_config))
    with running_api(env, log_path, prefix, checkout, python, args) as (base, _):
        for route, files in uploads.items():
            for name, content in files:
                response = httpx.post(
                    f"{base}{route}", files={"file": (name, content)}, headers=headers, timeout=60
                )
                assert response.status_code == 201, f"{name}: {response.text}"
        ready = httpx.get(f"{base}/readyz", timeout=60)
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"]["inspection_sandbox"] == "ok"
    log = log_path.read_text()
    if os.geteuid() == 0:
        # The case that failed: the child became nobody inside the private folder.
        assert "user nobody" in log, log[-3000:]


def test_a_sandbox_that_cannot_work_is_told_at_start_by_readyz_and_by_uploads(
    checkout: Path, redis_server, tmp_path: Path
) -> None:
    """A child that needs a file once confined (here: k2e's Keras built-in names, no longer
    loaded up front in this copy) cannot inspect anything: the API says so when it starts,
    /readyz is 503 and an upload is a 503 naming the cause, not a 422 blaming the file."""
    sealing = checkout / "k2e" / "vetting" / "sealing.py"
    loads = "    keras_builtins()  # plugins/keras_builtins.json, cached for the whole child\n"
    assert loads in sealing.read_text()
    sealing.write_text(sealing.read_text().replace(loads, "    del keras_builtins\n"))
    builtins = checkout / "k2e" / "plugins" / "keras_builtins.json"
    env = _env(checkout, redis_server.url)
    log_path = tmp_path / "api.log"
    headers = {"Authorization": f"Bearer {os.environ['K2E_ADMIN_KEY']}"}
    with running_api(env, log_path, cwd=checkout) as (base, _):
        ready = httpx.get(f"{base}/readyz", timeout=60)
        assert ready.status_code == 503, ready.text
        assert "inspection_sandbox: the inspection sandbox cannot work" in ready.json()["detail"]
        assert str(builtins) in ready.json()["detail"]
        h5 = (tmp_path / "m.h5").as_posix()
        write_sample_model(Path(h5))
        response = httpx.post(
            f"{base}/models",
            files={"file": ("m.h5", Path(h5).read_bytes())},
            headers=headers,
            timeout=60,
        )
        assert response.status_code == 503, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert str(builtins) in response.json()["detail"], response.text
    log = log_path.read_text()
    assert "uploads will be refused (503) until this is fixed" in log, log[-3000:]
    assert str(builtins) in log
