"""The CLI's rendering and settings, without an API: the live progress bar in a recording
terminal, human durations and sizes, --set, and where the URL and key come from."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from k2e.cli.progress import JobProgressView, print_outcome, show_events
from k2e.cli.render import duration, size
from k2e.cli.submit import SpecError, build_spec
from k2e.client.endpoint import resolve_config, write_config_file
from k2e.client.following import JobStreamEvent
from k2e.schemas import Job

ROOT = Path(__file__).resolve().parents[2]
AT = "2026-01-01T00:00:00+00:00"


def _terminal() -> Console:
    return Console(record=True, force_terminal=True, width=120, color_system="truecolor")


def test_the_progress_bar_shows_step_rate_loss_and_eta_in_a_terminal() -> None:
    view = JobProgressView("job-1")
    for event in (
        JobStreamEvent("status", {"status": "running", "at": AT, "message": ""}, 1),
        JobStreamEvent(
            "progress",
            {
                "global_step": 1500,
                "max_steps": 2000,
                "steps_per_sec": 45.25,
                "eta_s": 11.0,
                "at": AT,
            },
            2,
        ),
        JobStreamEvent("loss", {"step": 1500, "loss": 0.53125}, 3),
        JobStreamEvent("log", {"message": "INFO global_step/sec: 45.25", "at": AT}, 4),
    ):
        view.apply(event)
    console = _terminal()
    console.print(view.renderable())
    text = console.export_text(clear=False)
    assert "job job-1" in text
    assert "step 1500/2000 (75%)" in text
    assert "45.2 steps/s" in text
    assert "loss 0.5312" in text
    assert "ETA 11s" in text
    assert "global_step/sec: 45.25" in text
    # A real bar: the terminal output holds the bar's block characters, three quarters full.
    assert text.count("━") >= 20
    assert "\x1b[" in console.export_text(styles=True)


def test_the_live_view_follows_events_to_the_end_in_a_terminal() -> None:
    job = {
        "id": "j",
        "status": "succeeded",
        "created_at": AT,
        "spec": {},
        "queue": "cpu",
        "model_dir": "jobs/j",
        "progress": {"global_step": 200, "max_steps": 200},
        "metrics": {"train": [{"step": 200, "loss": 0.125}], "eval": {"acc_1": 0.5}},
    }
    events = [
        JobStreamEvent("status", {"status": "running", "at": AT, "message": ""}, 1),
        *(
            JobStreamEvent(
                "progress",
                {
                    "global_step": s,
                    "max_steps": 200,
                    "steps_per_sec": 80.0,
                    "eta_s": (200 - s) / 80,
                    "at": AT,
                },
                1 + s,
            )
            for s in (50, 100, 150)
        ),
        JobStreamEvent("end", job, 300),
    ]
    console = _terminal()
    ended = show_events(console, JobProgressView("j"), iter(events))
    assert ended.status == "succeeded"
    text = console.export_text()
    # The live display's last frame: the job's final state.
    assert "succeeded  step 200/200 (100%)" in text
    assert "loss 0.125" in text


def test_without_a_terminal_plain_lines_are_printed() -> None:
    events = [
        JobStreamEvent("status", {"status": "running", "at": AT, "message": ""}),
        JobStreamEvent(
            "progress",
            {"global_step": 10, "max_steps": 20, "steps_per_sec": 5.0, "eta_s": 2.0, "at": AT},
        ),
        JobStreamEvent(
            "end",
            {
                "id": "j",
                "status": "failed",
                "created_at": AT,
                "spec": {},
                "queue": "cpu",
                "model_dir": "jobs/j",
                "metrics": {},
                "progress": {"global_step": 12, "max_steps": 20},
            },
        ),
    ]
    console = Console(record=True, force_terminal=False, width=120)
    assert show_events(console, JobProgressView("j"), iter(events)).status == "failed"
    lines = console.export_text().splitlines()
    assert lines[0].startswith("running")
    assert lines[-1].startswith("failed     step 12/20")


def test_the_outcome_shows_eval_metrics_or_the_error_and_reason() -> None:
    base = {
        "id": "j",
        "created_at": AT,
        "started_at": AT,
        "finished_at": "2026-01-01T00:01:05Z",
        "spec": {},
        "progress": {"global_step": 2000, "max_steps": 2000},
        "queue": "cpu",
        "model_dir": "jobs/j",
    }
    console = _terminal()
    print_outcome(
        console,
        Job.model_validate(
            {
                **base,
                "status": "succeeded",
                "metrics": {"train": [], "eval": {"acc_1": 0.875, "loss": 0.25}},
            }
        ),
    )
    print_outcome(
        console,
        Job.model_validate(
            {
                **base,
                "status": "failed",
                "metrics": {},
                "error": {"type": "TimeoutError", "message": "ran 4 s", "reason": "timed_out"},
            }
        ),
    )
    text = console.export_text()
    assert "job j succeeded in 1m 05s" in text
    assert "acc_1" in text
    assert "0.875" in text
    assert "job j failed" in text
    assert "error (timed_out): TimeoutError: ran 4 s" in text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, "-"), (0.4, "0s"), (59, "59s"), (65, "1m 05s"), (7260, "2h 01m"), (90000, "1d 1h")],
)
def test_durations_read_at_a_glance(seconds: float | None, text: str) -> None:
    assert duration(seconds) == text


@pytest.mark.parametrize(
    ("n", "text"), [(0, "0 B"), (1023, "1023 B"), (1536, "1.5 KiB"), (3 * 1024**3, "3.0 GiB")]
)
def test_sizes_read_at_a_glance(n: int, text: str) -> None:
    assert size(n) == text


def test_set_options_build_nested_json_values(tmp_path: Path) -> None:
    spec_file = tmp_path / "spec.json"
    spec_file.write_text('{"train": {"batch_size": 8}, "export": true}')
    spec = build_spec(
        spec_file,
        [
            "train.max_steps=2000",
            "config.tf_random_seed=1",
            "export=false",
            "model_dir=runs_a",
            'metric_names_map={"a_mae": "mae"}',
        ],
    )
    assert spec == {
        "train": {"batch_size": 8, "max_steps": 2000},
        "config": {"tf_random_seed": 1},
        "export": False,
        "model_dir": "runs_a",
        "metric_names_map": {"a_mae": "mae"},
    }
    with pytest.raises(SpecError, match="FIELD=VALUE"):
        build_spec(None, ["train.max_steps"])
    with pytest.raises(SpecError, match="train is not an object"):
        build_spec(None, ["train=1", "train.max_steps=2"])


def test_settings_come_from_env_then_config_file_then_local_key(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    data = tmp_path / "data"
    data.mkdir()
    (data / "admin.key").write_text("k2e_local-admin-key\n")
    env = {"K2E_CONFIG": str(config), "K2E_DATA_DIR": str(data)}

    local = resolve_config(env=env)
    assert (local.url, local.api_key) == ("http://127.0.0.1:8000", "k2e_local-admin-key")
    assert local.key_source == str(data / "admin.key")

    write_config_file(config, "https://k2e.example.com/", "k2e_from-file")
    assert config.stat().st_mode & 0o777 == 0o600
    stored = resolve_config(env=env)
    assert (stored.url, stored.api_key) == ("https://k2e.example.com", "k2e_from-file")

    env.update(K2E_URL="http://localhost:9000", K2E_API_KEY="k2e_from-env")
    from_env = resolve_config(env=env)
    assert (from_env.url, from_env.api_key, from_env.key_source) == (
        "http://localhost:9000",
        "k2e_from-env",
        "K2E_API_KEY",
    )
    assert resolve_config("http://10.0.0.1:1", "explicit", env=env).api_key == "explicit"

    # A remote URL never gets the local admin key.
    config.unlink()
    remote = resolve_config(env={**env, "K2E_URL": "https://k2e.example.com", "K2E_API_KEY": ""})
    assert remote.api_key is None


def test_an_unreachable_api_is_a_message_and_exit_1_not_a_traceback(tmp_path: Path) -> None:
    env = dict(
        os.environ,
        K2E_URL="http://127.0.0.1:9",
        K2E_API_KEY="k",
        K2E_CONFIG=str(tmp_path / "none.toml"),
    )
    done = subprocess.run(
        [sys.executable, "-m", "k2e.cli", "jobs"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "cannot reach the k2e API at http://127.0.0.1:9" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout
