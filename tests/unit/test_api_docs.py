"""GET /docs: Swagger UI from k2e's own origin under the dashboard's Content-Security-Policy
(it shares the origin with the signed-in dashboard), nothing from a CDN; no ReDoc."""

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from k2e.settings import Settings
from service.main import create_app
from tests.support.api_keys import TEST_ADMIN_KEY
from tests.support.api_server import running_api

CHROMIUM = Path("/usr/bin/chromium")
CONTENT_TYPES = {".js": "text/javascript", ".css": "text/css"}


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory, redis_server) -> Iterator[TestClient]:
    settings = Settings(data_dir=tmp_path_factory.mktemp("docs"), redis_url=redis_server.url)
    # No key: the reference is public, as FastAPI's own /docs was.
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def _assets(page: str) -> list[str]:
    return re.findall(r'(?:src|href)="([^"]*)"', page)


def test_the_docs_page_loads_only_same_origin_assets_under_the_dashboards_policy(client) -> None:
    page = client.get("/docs")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "default-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy
    assert page.headers["x-frame-options"] == "DENY"
    assert "<script>" not in page.text  # no inline script: the policy would refuse it
    assets = _assets(page.text)
    assert any(a.endswith(".js") for a in assets)
    assert any(a.endswith(".css") for a in assets)
    for asset in assets:
        if asset.startswith("data:"):
            continue
        # Same origin: a path on this server, never another host ("//cdn...", "https:").
        assert asset.startswith("/"), asset
        assert not asset.startswith("//"), asset
        served = client.get(asset)
        assert served.status_code == 200, asset
        kind = CONTENT_TYPES[Path(asset).suffix]
        assert served.headers["content-type"].startswith(kind), (asset, served.headers)
        assert served.headers["x-content-type-options"] == "nosniff"
        assert len(served.content) > 100


def test_only_the_docs_files_are_served_and_redoc_is_off(client) -> None:
    for name in ("index.html", "..%2Fstatic%2Fswagger-ui.css", "redoc.standalone.js", "x.js"):
        response = client.get(f"/docs/static/{name}")
        assert response.status_code == 404, name
        assert response.headers["content-type"] == "application/problem+json"
    assert client.get("/redoc").status_code == 404
    assert client.get("/openapi.json").status_code == 200


def _browser() -> Any:
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing: .ci/run installs Debian's chromium package")
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    return pytest.importorskip("playwright.sync_api", reason="playwright is in the dev extras")


def test_swagger_ui_renders_under_the_policy_in_a_browser(tmp_path, redis_server) -> None:
    sync_api = _browser()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "K2E_DATABASE_URL")}
    env.update(K2E_DATA_DIR=str(tmp_path / "data"), REDIS_URL=redis_server.url)
    env.update(K2E_ADMIN_KEY=TEST_ADMIN_KEY)
    with running_api(env, tmp_path / "api.log") as (base, _), sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            page = browser.new_page()
            refused: list[str] = []
            elsewhere: list[str] = []
            page.on(
                "console",
                lambda m: refused.append(m.text) if "Content Security Policy" in m.text else None,
            )
            page.on(
                "request",
                lambda r: None if r.url.startswith((base, "data:")) else elsewhere.append(r.url),
            )
            page.goto(f"{base}/docs")
            # One block per operation, drawn from /openapi.json.
            page.wait_for_selector("#operations-jobs-convert", timeout=30_000)
            assert page.locator(".opblock").count() >= 25
            assert refused == []
            assert elsewhere == []
        finally:
            browser.close()
