"""A cluster job's page in a real headless Chromium (the system's, as
tests/integration/test_dashboard.py drives it) against a real API process on the
session's store: the page shows the cluster's shape and lists each member of its
placement with its state, node and address, as GET /jobs/{id} reports them."""

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from k2e.cluster_schemas import Distribution
from k2e.db import make_engine
from k2e.jobs.gangs import GangStore, place
from k2e.jobs.workers import WorkerEntry, WorkerRegistry
from k2e.settings import Settings
from tests.support.api_keys import ADMIN, bearer
from tests.support.api_server import running_api
from tests.support.worker_process import worker_env

pytestmark = pytest.mark.integration

CHROMIUM = Path("/usr/bin/chromium")
SHAPE = {"workers": 2, "parameter_servers": 1, "evaluator": False}


@pytest.fixture(scope="module")
def api(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log_path = tmp_path_factory.mktemp("cluster-page-api") / "api.log"
    with running_api(worker_env(settings), log_path) as (base, _):
        yield base


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM}")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield chromium
        chromium.close()


def _ended(api: str, job_id: str) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        status = httpx.get(f"{api}/jobs/{job_id}", headers=ADMIN).json()["status"]
        if status in ("succeeded", "failed", "cancelled"):
            return
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} did not end")


def test_a_cluster_jobs_page_lists_its_members(
    api: str, browser: Any, settings: Settings, tmp_path: Path
) -> None:
    tenant = "dash-cluster"
    assert httpx.post(f"{api}/tenants", json={"name": tenant}, headers=ADMIN).status_code == 201
    key = httpx.post(f"{api}/tenants/{tenant}/keys", json={"name": "m"}, headers=ADMIN)
    member = bearer(key.json()["key"])
    from tests.support import keras_models  # needs TensorFlow

    h5 = keras_models.save_h5(keras_models.seed_multi_io_model(), tmp_path / "seed.h5")
    model = httpx.post(
        f"{api}/models", files={"file": ("seed.h5", h5.read_bytes())}, headers=member
    ).json()["id"]
    arrays = keras_models.seed_multi_io_data(n=64)
    data = httpx.post(
        f"{api}/datasets",
        files={"file": ("d.npz", keras_models.npz_bytes(arrays))},
        headers=member,
    ).json()["id"]
    engine = make_engine(settings.sqlalchemy_url)
    registry = WorkerRegistry(engine)
    # Slots for the gang beside the session worker's one, for this test only.
    extra = WorkerEntry("dash-cluster-host:1", "dash-cluster-host", ("cpu",), 3, "1")
    registry.register(extra)
    try:
        spec = {
            "keras_model_path": model,
            "train": {"dataset": data, "max_steps": 5},
            "distribution": SHAPE,
        }
        job = httpx.post(f"{api}/convert", json=spec, headers=member, timeout=60).json()
    finally:
        registry.unregister(extra.name)
    # Ended, the job's rows change no more: its members are written as a placement writes
    # them, two of them joined.
    httpx.post(f"{api}/jobs/{job['id']}/cancel", headers=member)
    _ended(api, job["id"])
    with engine.begin() as conn:
        gang = place(conn, job["id"], Distribution.model_validate(SHAPE))
    gangs = GangStore(engine)
    assert gangs.join(job["id"], gang, "chief", 0, "n1:1", "node-one", "node-one:2222")
    assert gangs.join(job["id"], gang, "ps", 0, "n2:1", "node-two", "node-two:2223")
    shown = httpx.get(f"{api}/jobs/{job['id']}", headers=member).json()["cluster"]

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.goto(f"{api}/ui/jobs/{job['id']}")
    page.fill("#api-key", key.json()["key"])
    page.click("#signin button[type=submit]")
    page.wait_for_selector("#cluster-members tr[data-member='chief:0']", timeout=60_000)
    assert page.inner_text("#cluster-shape") == (
        f"2 workers (the chief + 1), 1 parameter server · between_graph · placement {gang}"
    )
    rows = page.query_selector_all("#cluster-members tbody tr")
    seen = [
        (
            row.get_attribute("data-member"),
            row.get_attribute("data-state"),
            row.query_selector("[data-field='node']").inner_text(),
            row.query_selector("[data-field='address']").inner_text(),
        )
        for row in rows
    ]
    assert seen == [
        (
            f"{m['role']}:{m['index']}",
            m["state"],
            m["node"] or "–",
            m["address"] or "–",
        )
        for m in shown["members"]
    ]
    assert seen[0] == ("chief:0", "ready", "node-one", "node-one:2222")
    assert seen[1] == ("worker:0", "placed", "–", "–")
    context.close()
