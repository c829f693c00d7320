"""The ``k2e`` command against the real stack: a real API process (uvicorn, as ``make run``
serves it) on the session worker's job store and broker, a real worker, real TensorFlow.
The command runs as a child process (``python -m k2e.cli``), as a user runs it."""

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from k2e.settings import Settings
from tests.support.api_keys import TEST_ADMIN_KEY
from tests.support.api_server import running_api
from tests.support.checkout import ROOT
from tests.support.worker_process import WorkerProcess, worker_env

tf = pytest.importorskip("tensorflow")
from tests.support import keras_models  # noqa: E402  (needs TensorFlow)

pytestmark = pytest.mark.integration

SEED_MAP = '{"dense_2_categorical_accuracy": "acc_1", "dense_3_categorical_accuracy": "acc_2"}'
SUBMITTED = re.compile(r"submitted job (\S+)")


@pytest.fixture(scope="module")
def api_url(
    settings: Settings, worker: WorkerProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    env = worker_env(settings)
    env["K2E_ADMIN_KEY"] = TEST_ADMIN_KEY
    with running_api(env, tmp_path_factory.mktemp("cli-api") / "api.log") as (url, _):
        yield url


@pytest.fixture(scope="module")
def seed_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("seed-files")
    keras_models.save_h5(keras_models.seed_multi_io_model(), folder / "seed.h5")
    np.savez(folder / "train.npz", **keras_models.seed_multi_io_data())
    return folder


def k2e(api_url: str, *args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = dict(
        os.environ,
        K2E_URL=api_url,
        K2E_API_KEY=TEST_ADMIN_KEY,
        K2E_CONFIG=str(cwd / "no-config.toml"),
        COLUMNS="160",
    )
    return subprocess.run(
        [sys.executable, "-m", "k2e.cli", *args],
        cwd=cwd,
        env={**env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_submit_wait_trains_to_max_steps_and_the_download_loads(
    api_url: str, seed_files: Path, tmp_path: Path
) -> None:
    done = k2e(
        api_url, "submit", str(seed_files / "seed.h5"), "--train", str(seed_files / "train.npz"),
        "--eval", str(seed_files / "train.npz"), "--set", "train.max_steps=200",
        "--set", "config.save_checkpoints_steps=100", "--set", f"metric_names_map={SEED_MAP}",
        "--wait", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    job_id = SUBMITTED.search(done.stderr).group(1)  # type: ignore[union-attr]
    # Progress shown as the job went, reaching max_steps, then the evaluation.
    assert "step 200/200 (100%)" in done.stdout
    assert f"job {job_id} succeeded" in done.stdout
    assert "acc_1" in done.stdout
    assert "acc_2" in done.stdout
    assert "Traceback" not in done.stderr

    status = k2e(api_url, "status", job_id, "--json", cwd=tmp_path)
    job = json.loads(status.stdout)
    assert job["status"] == "succeeded"
    assert job["progress"]["global_step"] == 200

    listed = json.loads(k2e(api_url, "jobs", "--json", cwd=tmp_path).stdout)
    assert job_id in [item["id"] for item in listed["items"]]
    table = k2e(api_url, "jobs", cwd=tmp_path).stdout
    assert job_id in table
    assert "200/200" in table

    logs = k2e(api_url, "logs", job_id, cwd=tmp_path)
    assert logs.returncode == 0
    assert "succeeded" in logs.stdout

    downloaded = k2e(api_url, "download", job_id, "-o", "export", "--json", cwd=tmp_path)
    assert downloaded.returncode == 0, downloaded.stderr
    version = Path(json.loads(downloaded.stdout)["path"])
    assert (tmp_path / version / "saved_model.pb").is_file()
    loaded = tf.saved_model.load(str(tmp_path / version))
    serve = loaded.signatures["serving_default"]
    data = keras_models.seed_multi_io_data(4)
    outputs = serve(input_a=tf.constant(data["input_a"]), input_b=tf.constant(data["input_b"]))
    assert {tuple(v.shape) for v in outputs.values()} == {(4, 3), (4, 2)}

    archive = k2e(api_url, "download", job_id, "-o", "ckpt", "--checkpoint", "200", "--archive",
                  cwd=tmp_path)  # fmt: skip
    assert archive.returncode == 0, archive.stderr
    assert list((tmp_path / "ckpt").glob("*.tar.gz"))


@pytest.mark.parametrize(
    ("setting", "field", "words"),
    [
        ("train.batch_size=0", "train.batch_size", "greater than or equal to 1"),
        ('metric_names_map={"dense_2_acc": "acc_1"}', "metric_names_map", "dense_2_categorical"),
    ],
)
def test_a_refused_spec_exits_2_naming_the_field(
    api_url: str, seed_files: Path, tmp_path: Path, setting: str, field: str, words: str
) -> None:
    done = k2e(
        api_url, "submit", str(seed_files / "seed.h5"), "--train", str(seed_files / "train.npz"),
        "--set", setting, "--wait", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    assert "spec refused: 422" in done.stderr
    assert f"{field}:" in done.stderr
    assert words in done.stderr
    assert "Traceback" not in done.stderr


def test_a_failing_job_exits_1_with_its_error_and_reason(
    api_url: str, seed_files: Path, tmp_path: Path
) -> None:
    done = k2e(
        api_url, "submit", str(seed_files / "seed.h5"), "--train", str(seed_files / "train.npz"),
        "--set", "train.max_steps=1000000", "--set", "timeout_s=3", "--wait", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    assert "failed" in done.stdout
    assert "error (timed_out)" in done.stdout
    assert "Traceback" not in done.stderr


def test_admin_commands_create_a_tenant_and_a_key_that_works(api_url: str, tmp_path: Path) -> None:
    created = k2e(api_url, "admin", "tenants", "create", "cli-team", "--max-active-jobs", "3",
                  "--json", cwd=tmp_path)  # fmt: skip
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout)["quotas"]["max_active_jobs"] == 3
    key = k2e(
        api_url, "admin", "keys", "create", "cli-team", "--name", "ci", "--json", cwd=tmp_path
    )
    secret = json.loads(key.stdout)["key"]
    whoami = k2e(api_url, "--api-key", secret, "whoami", "--json", cwd=tmp_path)
    assert json.loads(whoami.stdout)["name"] == "cli-team"
    # A member key may not call the admin routes: a message and exit 1, not a traceback.
    refused = k2e(api_url, "--api-key", secret, "admin", "keys", "list", cwd=tmp_path)
    assert refused.returncode == 1
    assert "403" in refused.stderr
    assert "Traceback" not in refused.stderr
    key_id = json.loads(key.stdout)["id"]
    assert k2e(api_url, "admin", "keys", "revoke", key_id, cwd=tmp_path).returncode == 0
    listed = json.loads(k2e(api_url, "admin", "keys", "list", "--json", cwd=tmp_path).stdout)
    assert next(k for k in listed if k["id"] == key_id)["revoked_at"] is not None


def test_demo_trains_the_seed_example_and_downloads_its_savedmodel(
    api_url: str, tmp_path: Path
) -> None:
    done = k2e(api_url, "demo", "--workdir", "demo", "--max-steps", "50", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "step 50/50 (100%)" in done.stdout
    assert "acc_1" in done.stdout
    assert "tensorflow/serving" in done.stdout
    assert list((tmp_path / "demo" / "export").glob("*/saved_model.pb"))


def test_submit_takes_a_priority_class_and_refuses_an_unknown_one(
    api_url: str, seed_files: Path, tmp_path: Path
) -> None:
    done = k2e(
        api_url, "submit", str(seed_files / "seed.h5"), "--train", str(seed_files / "train.npz"),
        "--set", "train.max_steps=5", "--priority", "high", "--json", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["spec"]["priority"] == "high"
    refused = k2e(
        api_url, "submit", str(seed_files / "seed.h5"), "--train", str(seed_files / "train.npz"),
        "--priority", "urgent", cwd=tmp_path,
    )  # fmt: skip
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "priority:" in refused.stderr
    assert "not a priority class" in refused.stderr


def test_dry_run_keeps_nothing_and_rerun_repeats_a_deterministic_job(
    api_url: str, seed_files: Path, tmp_path: Path
) -> None:
    models_before = k2e(api_url, "models", "list", "--json", cwd=tmp_path).stdout
    planned = k2e(
        api_url, "submit", str(seed_files / "seed.h5"), "--train", str(seed_files / "train.npz"),
        "--eval", str(seed_files / "train.npz"), "--set", f"metric_names_map={SEED_MAP}",
        "--dry-run", "--json", cwd=tmp_path,
    )  # fmt: skip
    assert planned.returncode == 0, planned.stdout + planned.stderr
    plan = json.loads(planned.stdout)
    assert sorted(plan["eval_metric_keys"]) == ["acc_1", "acc_2", "global_step", "loss"]
    assert plan["spec"]["train"]["max_steps"] == 1000
    assert k2e(api_url, "models", "list", "--json", cwd=tmp_path).stdout == models_before
    shown = k2e(
        api_url, "submit", str(seed_files / "seed.h5"), "--train", str(seed_files / "train.npz"),
        "--dry-run", cwd=tmp_path,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert "signature serving_default" in shown.stdout
    assert "nothing was submitted" in shown.stderr

    done = k2e(
        api_url, "submit", str(seed_files / "seed.h5"), "--train", str(seed_files / "train.npz"),
        "--set", "train.max_steps=5", "--deterministic", "--wait", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    job_id = SUBMITTED.search(done.stderr).group(1)
    again = k2e(api_url, "rerun", job_id, "--json", cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    rerun = json.loads(again.stdout)
    assert rerun["spec"]["deterministic"] is True
    status = k2e(api_url, "status", job_id, cwd=tmp_path)
    assert "deterministic" in status.stdout
    assert "tf_random_seed" in status.stdout
    assert "tensorflow" in status.stdout
