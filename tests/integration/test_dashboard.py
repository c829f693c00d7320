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
from tests.support.api_keys import ADMIN, TEST_ADMIN_KEY
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


def test_check_shows_the_plan_and_a_job_page_its_provenance_and_rerun(team: dict, api: str) -> None:
    page = team["page"]
    jobs_before = httpx.get(f"{api}/jobs", headers=ADMIN, params={"tenant": "*"}).json()
    _fill_seed_form(page, api, team["model"], team["dataset"])
    page.click("#check")
    plan = page.wait_for_selector("#plan dl")
    text = plan.inner_text()
    assert "acc_1" in text and "acc_2" in text, text  # noqa: PT018
    assert "serving_default" in text, text
    assert page.url == f"{api}/ui/submit"
    jobs_after = httpx.get(f"{api}/jobs", headers=ADMIN, params={"tenant": "*"}).json()
    ids = [[job["id"] for job in page_["items"]] for page_ in (jobs_before, jobs_after)]
    assert ids[0] == ids[1], "Check submitted nothing"
    page.fill("#checkpoint-format", "foo")
    page.click("#check")
    page.wait_for_selector("[data-loc='checkpoint_format'] .field-error")

    assert team["job"] is not None, "runs after the seed example's job"
    page.goto(f"{api}/ui/jobs/{team['job']}")
    page.wait_for_selector("#versions")
    assert page.inner_text("#deterministic") == "no"
    assert "tf_random_seed 1" in page.inner_text("#seeds")
    assert "tensorflow 2.15" in page.inner_text("#versions")
    page.click("#rerun")
    page.wait_for_url(lambda url: team["job"] not in url and "/ui/jobs/" in url, timeout=60_000)
    rerun_id = page.url.rsplit("/", 1)[1]
    # Not left to hold the worker the next tests use.
    assert httpx.post(f"{api}/jobs/{rerun_id}/cancel", headers=ADMIN).status_code == 202


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


def _submit_long_job(page: Any, base: str, team: dict, priority: str) -> str:
    """A seed job long enough to hold the worker's only slot until it is stopped."""
    _fill_seed_form(page, base, team["model"], team["dataset"])
    page.fill("#max-steps", "5000000")
    page.fill("#checkpoint-steps", "1000")
    page.fill("#priority", priority)
    page.click("#submit")
    page.wait_for_url(f"{base}/ui/jobs/*", timeout=60_000)
    return str(page.url.rsplit("/", 1)[1])


def _job_status(page: Any, wanted: str, timeout: float = 120_000) -> None:
    page.wait_for_selector(f"#job-status .badge[data-status='{wanted}']", timeout=timeout)


def test_priority_place_queues_and_suspend_resume(
    team: dict, chromium: Any, api: str, keys: dict
) -> None:
    """The worker has one slot: a `normal` job holds it and a `low` one waits for it. The
    pages show each job's class, the waiting one's place and why it waits, the admin's
    queue view counts both; Suspend hands the slot over, Resume queues the job again."""
    page = team["page"]
    holder = _submit_long_job(page, api, team, "normal")
    waiter = None
    try:
        _job_status(page, "running")
        assert page.inner_text("#priority") == "normal"
        waiter = _submit_long_job(page, api, team, "low")
        assert page.inner_text("#priority") == "low"
        facts = page.wait_for_selector("#facts[data-waiting-for='slot']", timeout=30_000)
        place = httpx.get(f"{api}/jobs/{waiter}", headers=ADMIN).json()["scheduling"]
        assert place == {"position": 1, "priority": "low", "waiting_for": "slot"}
        assert facts.get_attribute("data-position") == "1"
        assert page.inner_text("#waiting") == "#1 in queue · every slot of its queue is taken"
        assert page.inner_text("#preemptions") == "0"

        # The jobs list: each job's class, the waiting one's place.
        page.goto(f"{api}/ui/jobs")
        row = page.wait_for_selector(f"tr[data-job='{waiter}'] [data-waiting-for='slot']")
        assert row.get_attribute("data-position") == "1"
        assert page.inner_text(f"tr[data-job='{waiter}'] [data-priority]") == "low"
        assert page.inner_text(f"tr[data-job='{holder}'] [data-priority]") == "normal"
        assert page.query_selector(f"tr[data-job='{holder}'] [data-waiting-for]") is None

        # The queue view is an admin's: a member has no link to it and is refused.
        assert page.locator("#nav-queues").is_hidden()
        page.goto(f"{api}/ui/queues")
        page.wait_for_selector("#queues-info.error")
        admin = _sign_in(chromium, api, TEST_ADMIN_KEY, "/ui/queues")
        assert admin.locator("#nav-queues").is_visible()
        cpu = admin.wait_for_selector("[data-queue='cpu'] tr[data-tenant='dash-team']")
        summary = next(
            q for q in httpx.get(f"{api}/queues", headers=ADMIN).json() if q["name"] == "cpu"
        )
        team_row = next(t for t in summary["tenants"] if t["tenant"] == "dash-team")
        assert (team_row["running"], team_row["waiting"]) == (1, 1)
        for key in ("share", "running", "waiting", "borrowed"):
            assert cpu.query_selector(f"[data-field='{key}']").inner_text() == str(team_row[key])
        for key in ("slots", "running", "waiting", "borrowed"):
            shown = admin.inner_text(f"[data-queue='cpu'] .nums [data-field='{key}']")
            assert shown == str(summary[key]), key
        # Below the queues, the workers: the one whose slot the holder has, live.
        running = f"[data-field='current_job'] a[href='/ui/jobs/{holder}']"
        admin.wait_for_selector(f"#workers tr[data-state='live'] {running}", timeout=30_000)
        admin.context.close()

        # Suspend the holder from its page: it ends suspended and the waiting job starts.
        page.goto(f"{api}/ui/jobs/{holder}")
        page.click("#suspend")
        _job_status(page, "suspended")
        page.wait_for_selector("#resume")
        assert page.query_selector("#facts[data-waiting-for]") is None
        page.goto(f"{api}/ui/jobs/{waiter}")
        _job_status(page, "running")
        # Resumed, it is queued again (or, ranked above the low job, already back).
        page.goto(f"{api}/ui/jobs/{holder}")
        page.click("#resume")
        page.wait_for_selector("#suspend")
        again = httpx.get(f"{api}/jobs/{holder}", headers=ADMIN).json()
        assert again["status"] in ("queued", "running"), again["status"]
    finally:
        for job_id in (holder, waiter):
            if job_id is not None:
                httpx.post(f"{api}/jobs/{job_id}/cancel", headers=ADMIN)
        for job_id in (holder, waiter):
            if job_id is not None:
                _wait_ended(api, job_id)


def _wait_ended(base: str, job_id: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = httpx.get(f"{base}/jobs/{job_id}", headers=ADMIN).json()["status"]
        if status in ("succeeded", "failed", "cancelled"):
            return
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} did not end")


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
