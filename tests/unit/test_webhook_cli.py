"""The client and ``k2e webhooks`` against a real API process: add (the secret shown
once), list, test, deliveries (sent by a delivery loop to a receiver on loopback), and
delete; a refused target is a rejected command naming url."""

import json
import os
import subprocess
import sys
from pathlib import Path

from k2e.db import make_engine
from k2e.settings import Settings
from k2e.webhooks.courier import Courier
from tests.support.api_keys import TEST_ADMIN_KEY
from tests.support.api_server import running_api
from tests.support.webhook_receiver import Receiver, running_receiver

ROOT = Path(__file__).resolve().parents[2]


def test_the_client_and_the_cli_manage_webhooks(tmp_path: Path, redis_server) -> None:
    env = dict(
        os.environ,
        K2E_DATA_DIR=str(tmp_path / "data"),
        REDIS_URL=redis_server.url,
        K2E_ADMIN_KEY=TEST_ADMIN_KEY,
        K2E_WEBHOOK_ALLOW_CIDRS="127.0.0.1/32",
    )
    with (
        running_receiver(Receiver()) as receiver,
        running_api(env, tmp_path / "api.log") as (base, _),
    ):

        def k2e(*args: str) -> subprocess.CompletedProcess:
            cli_env = {
                **env,
                "K2E_URL": base,
                "K2E_API_KEY": TEST_ADMIN_KEY,
                "K2E_CONFIG": str(tmp_path / "no-config.toml"),
                "PYTHONPATH": str(ROOT),
            }
            return subprocess.run(
                [sys.executable, "-m", "k2e.cli", *args],
                env=cli_env,
                capture_output=True,
                text=True,
                timeout=120,
            )

        from k2e.client import Client

        with Client(base, TEST_ADMIN_KEY) as client:
            by_client = client.add_webhook("https://93.184.216.34/in", ["job.failed"])
            assert by_client.secret.startswith("whsec_")

        added = k2e("webhooks", "add", receiver.url, "-e", "job.succeeded", "--json")
        assert added.returncode == 0, added.stderr
        hook = json.loads(added.stdout)
        receiver.secret = hook["secret"]
        assert hook["events"] == ["job.succeeded"]

        listed = k2e("webhooks", "list")
        assert hook["id"] in listed.stdout
        assert by_client.id in listed.stdout
        assert hook["secret"] not in listed.stdout

        tested = k2e("webhooks", "test", hook["id"])
        assert tested.returncode == 0, tested.stderr
        settings = Settings(data_dir=tmp_path / "data", webhook_allow_cidrs="127.0.0.1/32")
        engine = make_engine(settings.sqlalchemy_url)
        courier = Courier.from_settings(engine, settings)
        for claimed in courier.claim(5):
            courier.attempt(claimed)
        engine.dispose()
        (event,) = receiver.accepted.values()
        assert event["type"] == "webhook.test"

        shown = k2e("webhooks", "deliveries", hook["id"], "--json")
        (delivery,) = json.loads(shown.stdout)
        assert delivery["state"] == "delivered"
        assert delivery["response_status"] == 200
        table = k2e("webhooks", "deliveries", hook["id"])
        assert "delivered" in table.stdout

        refused = k2e("webhooks", "add", "http://169.254.169.254/latest/")
        assert refused.returncode == 2
        assert "url" in refused.stdout + refused.stderr
        assert "metadata" in refused.stdout + refused.stderr

        deleted = k2e("webhooks", "delete", hook["id"])
        assert deleted.returncode == 0, deleted.stderr
        assert hook["id"] not in k2e("webhooks", "list").stdout
