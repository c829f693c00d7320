"""The dashboard in a real headless Chromium, against a real API process (uvicorn) and the
session's real worker: sign in, upload the seed model and data from the pages, submit the
seed document's first example through the form, watch the loss curve grow, see the job
succeed with its evaluation metrics, download the SavedModel; a broken rule shows at its
field; another tenant's job page is a 404.

Screenshots of the job page (running, succeeded) are written to ``test-artifacts/``.
Chromium is the system's (Debian's ``chromium`` package at /usr/bin/chromium), driven by
Playwright's Python API; never a browser Playwright downloads.
"""

import os
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from k2e.examples.seed_data import SEED_METRIC_NAMES_MAP, seed_multi_io_data
from k2e.settings import Settings
from tests.support.api_keys import ADMIN
from tests.support.api_server import running_api
from tests.support.checkout import ROOT
from tests.support.worker_process import WorkerProcess, worker_env

pytestmark = pytest.mark.integration

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "test-artifacts"


def _require_browser() -> Any:
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing: .ci/run installs Debian's chromium package")
        pytest.skip(
            f"no Chromium at {CHROMIUM} (apt-get install chromium to run the browser tests)"
        )
    return pytest.importorskip("playwright.sync_api", reason="playwright is in the dev extras")


@pytest.fixture(scope="module")
def api(
    settings: Settings, worker: WorkerProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The API as ``make run`` starts it, on the worker's store and broker."""
    log_path = tmp_path_factory.mktemp("dashboard-api") / "api.log"
    with running_api(worker_env(settings), log_path) as (base, _):
        yield base


def _member_key(base: str, tenant: str) -> str:
    created = httpx.post(f"{base}/tenants", json={"name": tenant}, headers=ADMIN)
    assert created.status_code == 201, created.text
    key = httpx.post(f"{base}/tenants/{tenant}/keys", json={"name": "dashboard"}, headers=ADMIN)
    assert key.status_code == 201, key.text
    return key.json()["key"]


@pytest.fixture(scope="module")
def keys(api: str) -> dict[str, str]:
    return {"team": _member_key(api, "dash-team"), "other": _member_key(api, "dash-other")}


@pytest.fixture(scope="module")
def seed_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    pytest.importorskip("tensorflow")
    from k2e.examples.seed_models import seed_multi_io_model

    folder = tmp_path_factory.mktemp("dashboard-files")
    model = folder / "seed.h5"
    seed_multi_io_model().save(model, save_format="h5")
    data = folder / "train.npz"
    np.savez(data, **seed_multi_io_data())
    return {"model": model, "data": data}


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    sync_api = _require_browser()
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield browser
        browser.close()


def _sign_in(browser: Any, base: str, key: str, path: str = "/ui/jobs") -> Any:
    context = browser.new_context(accept_downloads=True, viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.goto(base + path)
    page.fill("#api-key", key)
    page.click("#signin button[type=submit]")
    page.wait_for_selector("#nav:not([hidden])")
    return page


def _upload(page: Any, base: str, kind: str, path: Path) -> str:
    page.goto(f"{base}/ui/{kind}")
    page.set_input_files("#upload-file", str(path))
    page.click("#upload button[type=submit]")
    card = page.wait_for_selector(f"#{kind}-list article", timeout=60_000)
    return card.get_attribute("data-id")


@pytest.fixture(scope="module")
def team(chromium: Any, api: str, keys: dict[str, str], seed_files: dict[str, Path]) -> dict:
    """A member of the team tenant, signed in, with the seed model and data uploaded
    through the pages."""
    page = _sign_in(chromium, api, keys["team"])
    model_id = _upload(page, api, "models", seed_files["model"])
    assert page.inner_text(f"[data-id='{model_id}']").count("dense_2_categorical_accuracy") == 1
    dataset_id = _upload(page, api, "datasets", seed_files["data"])
    assert "input_a" in page.inner_text(f"[data-id='{dataset_id}']")
    return {"page": page, "model": model_id, "dataset": dataset_id, "job": None}


def _fill_seed_form(page: Any, base: str, model_id: str, dataset_id: str) -> None:
    page.goto(f"{base}/ui/submit")
    page.select_option("#model", model_id)
    page.select_option("#train-dataset", dataset_id)
    for compiled, renamed in SEED_METRIC_NAMES_MAP.items():
        page.fill(f"input[data-key='{compiled}']", renamed)


def _sample(page: Any) -> tuple[str, int]:
    status = page.get_attribute("#job-status .badge", "data-status") or ""
    points = int(page.get_attribute("#loss-chart", "data-points") or 0)
    return status, points


def test_submit_watch_and_download_the_seed_example(team: dict, api: str, tmp_path: Path) -> None:
    page = team["page"]
    _fill_seed_form(page, api, team["model"], team["dataset"])
    # Long enough to watch (a few seconds on 2 cores), with a loss point every 20 steps.
    page.fill("#max-steps", "4000")
    page.fill("#log-steps", "20")
    page.click("#submit")
    page.wait_for_url(f"{api}/ui/jobs/*", timeout=60_000)
    job_id = page.url.rsplit("/", 1)[1]
    team["job"] = job_id

    ARTIFACTS.mkdir(exist_ok=True)
    samples: list[tuple[str, int]] = []
    shot_running = False
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        status, points = _sample(page)
        samples.append((status, points))
        if status == "running" and points >= 3 and not shot_running:
            page.screenshot(path=str(ARTIFACTS / "job-running.png"), full_page=True)
            shot_running = True
        if status in ("succeeded", "failed", "cancelled"):
            break
        time.sleep(0.1)
    running = [points for status, points in samples if status == "running"]
    assert samples[-1][0] == "succeeded", (samples[-1], page.inner_text("main"))
    # The curve gained points while the page watched the job run.
    assert running, samples
    assert len(set(running)) >= 3, samples  # three or more distinct point counts
    assert shot_running

    page.wait_for_selector("#eval-metrics [data-metric='acc_1']")
    metrics = {
        row.get_attribute("data-metric"): float(row.inner_text().split()[-1])
        for row in page.query_selector_all("#eval-metrics tr[data-metric]")
    }
    assert {"acc_1", "acc_2", "loss"} <= set(metrics), metrics
    assert 0 <= metrics["acc_1"] <= 1
    assert 0 <= metrics["acc_2"] <= 1
    final = httpx.get(f"{api}/jobs/{job_id}", headers=ADMIN).json()
    assert final["metrics"]["eval"]["acc_1"] == pytest.approx(metrics["acc_1"], abs=1e-4)
    assert int(page.get_attribute("#loss-chart", "data-points")) >= len(final["metrics"]["train"])
    assert page.inner_text("#progress").startswith("4000 / 4000")
    assert "succeeded" in page.inner_text("#log")

    page.wait_for_selector("#savedmodel")
    page.screenshot(path=str(ARTIFACTS / "job-succeeded.png"), full_page=True)
    with page.expect_download() as download_info:
        page.click("#savedmodel")
    archive = tmp_path / "model.tar.gz"
    download_info.value.save_as(archive)
    with tarfile.open(archive, "r:gz") as tar:
        names = tar.getnames()
    assert any(name.endswith("/saved_model.pb") for name in names), names
    assert any("/variables/variables.index" in name for name in names), names

    # The jobs list shows it, newest first, with its status and a full progress bar.
    page.goto(f"{api}/ui/jobs")
    row = page.wait_for_selector(f"tr[data-job='{job_id}']")
    assert row.query_selector("[data-status='succeeded']") is not None
    assert "4000 / 4000" in row.inner_text()
    page.select_option("#status-filter", "failed")
    page.wait_for_url(f"{api}/ui/jobs?status=failed")
    page.wait_for_selector("#jobs + p:has-text('No jobs here yet.')")


def test_a_broken_rule_shows_at_its_field(team: dict, api: str) -> None:
    page = team["page"]
    _fill_seed_form(page, api, team["model"], team["dataset"])
    page.fill("#checkpoint-format", "foo")
    page.click("#submit")
    message = page.wait_for_selector("[data-loc='checkpoint_format'] .field-error")
    assert (
        message.inner_text() == 'Checkpoint format must be one of "checkpoint" or "saver". Got foo'
    )
    assert page.get_attribute("#checkpoint-format", "aria-invalid") == "true"
    # A metric_names_map that leaves a compiled metric out: the library's rule, at the map.
    page.fill("#checkpoint-format", "checkpoint")
    page.fill("input[data-key='dense_3_categorical_accuracy']", "")
    page.click("#submit")
    at_map = page.wait_for_selector("[data-loc^='metric_names_map'] .field-error")
    assert "dense_3_categorical_accuracy" in at_map.inner_text()
    assert page.url == f"{api}/ui/submit"


def test_another_tenants_job_page_is_a_404(team: dict, chromium: Any, api: str, keys: dict) -> None:
    job_id = (
        team["job"]
        or httpx.get(f"{api}/jobs?tenant=dash-team", headers=ADMIN).json()["items"][0]["id"]
    )
    page = _sign_in(chromium, api, keys["other"])
    response = page.goto(f"{api}/ui/jobs/{job_id}")
    assert response.status == 404
    assert "Not found" in page.inner_text("h1")
    # The API answers the other tenant's cookie as it answers its key: not found.
    assert page.request.get(f"{api}/jobs/{job_id}").status == 404
    assert team["page"].request.get(f"{api}/jobs/{job_id}").status == 200


def test_a_cookie_without_the_csrf_token_changes_nothing(team: dict, api: str) -> None:
    """Plain HTTP with the browser's session cookie: state-changing requests need the token."""
    cookies = team["page"].context.cookies()
    session = next(c for c in cookies if c["name"] == "k2e_session")
    assert session["httpOnly"]
    assert session["sameSite"] == "Strict"
    jar = {"k2e_session": session["value"]}
    with httpx.Client(base_url=api, cookies=jar) as http:
        assert http.get("/tenants/me").json()["name"] == "dash-team"
        token = http.get("/ui/session").json()["csrf_token"]
        body = {
            "keras_model_path": team["model"],
            "train": {"dataset": team["dataset"], "max_steps": 1},
        }
        refused = http.post("/convert", json=body)
        assert refused.status_code == 403, refused.text
        assert "X-CSRF-Token" in refused.json()["detail"]
        assert (
            http.post("/convert", json=body, headers={"X-CSRF-Token": "wrong"}).status_code == 403
        )
        assert http.delete(f"/datasets/{team['dataset']}").status_code == 403
        assert http.get(f"/datasets/{team['dataset']}").status_code == 200
        accepted = http.post(
            "/convert",
            json={**body, "metric_names_map": SEED_METRIC_NAMES_MAP},
            headers={"X-CSRF-Token": token},
        )
        assert accepted.status_code == 202, accepted.text
        jobs = httpx.get(f"{api}/jobs?tenant=dash-team", headers=ADMIN).json()["items"]
        assert sum(j["spec"]["train"]["max_steps"] == 1 for j in jobs) == 1
