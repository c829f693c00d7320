"""The dashboard's Webhooks page in a real headless Chromium, against a real API process:
add an endpoint (the secret shown once), a refused target shown at the form, a test event
delivered to a receiver on loopback by a delivery loop, its deliveries listed with their
attempts and answers, and the endpoint deleted."""

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from k2e.db import make_engine
from k2e.settings import Settings
from k2e.webhooks.courier import Courier
from tests.integration.test_dashboard import _require_browser, _sign_in
from tests.support.api_keys import TEST_ADMIN_KEY
from tests.support.api_server import running_api
from tests.support.webhook_receiver import Receiver, running_receiver

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, redis_server) -> Iterator[dict[str, Any]]:
    """An API on a data folder of its own (loopback allowed as a target), and the delivery
    loop a worker runs, here in the test's process on the same store."""
    root = tmp_path_factory.mktemp("dashboard-webhooks")
    env = dict(
        os.environ,
        K2E_DATA_DIR=str(root / "data"),
        REDIS_URL=redis_server.url,
        K2E_ADMIN_KEY=TEST_ADMIN_KEY,
        K2E_WEBHOOK_ALLOW_CIDRS="127.0.0.1/32",
    )
    settings = Settings(
        data_dir=root / "data",
        webhook_allow_cidrs="127.0.0.1/32",
        webhook_poll_s=0.2,
        webhook_retry_base_s=0.3,
        webhook_retry_max_s=0.6,
    )
    with running_api(env, Path(root) / "api.log") as (base, _):
        engine = make_engine(settings.sqlalchemy_url)
        courier = Courier.from_settings(engine, settings)
        courier.start()
        try:
            yield {"base": base}
        finally:
            courier.stop()
            engine.dispose()


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    sync_api = _require_browser()
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path="/usr/bin/chromium", args=["--no-sandbox"]
        )
        yield browser
        browser.close()


def test_add_test_and_delete_an_endpoint_from_the_webhooks_page(
    stack: dict[str, Any], chromium: Any
) -> None:
    base = stack["base"]
    with running_receiver(Receiver(fail_first=1)) as receiver:
        page = _sign_in(chromium, base, TEST_ADMIN_KEY, "/ui/webhooks")
        page.wait_for_selector("#webhook-add")

        page.fill("#webhook-url", "http://169.254.169.254/latest/meta-data/")
        page.click("#webhook-add button[type=submit]")
        refused = page.wait_for_selector("#webhook-error:has-text('metadata')")
        assert "169.254.169.254" in refused.inner_text()

        page.fill("#webhook-url", receiver.url)
        page.uncheck("#ev-job\\.preempted")
        page.click("#webhook-add button[type=submit]")
        secret = page.wait_for_selector("#webhook-secret-value").inner_text()
        assert secret.startswith("whsec_")
        receiver.secret = secret
        card = page.wait_for_selector("#webhooks-list article")
        hook = card.get_attribute("data-id")
        assert "job.preempted" not in card.inner_text()
        assert secret not in page.inner_text("#webhooks-list")

        page.click(f"[data-id='{hook}'] button.test")
        page.click(f"[data-id='{hook}'] button.toggle")
        row = page.wait_for_selector("tr[data-state='delivered']", timeout=30_000)
        assert row.query_selector("[data-field='attempts']").inner_text() == "2"
        assert "200" in row.inner_text()
        assert "webhook.test" in row.inner_text()
        assert receiver.effective() == {"webhook.test": 1}

        page.on("dialog", lambda dialog: dialog.accept())
        page.click(f"[data-id='{hook}'] button.danger")
        page.wait_for_selector(f"[data-id='{hook}']", state="detached")
        page.wait_for_selector("#webhooks-info:has-text('No webhooks yet.')")
        page.context.close()
