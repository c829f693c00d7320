"""The webhook routes: registration refuses targets k2e must not send to (before any
connection), the secret is shown once, tenants see their own endpoints only, and the test
event and the deliveries list answer as the contract says."""

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from k2e.launcher.embedded_redis import EmbeddedRedis
from k2e.settings import Settings
from service.main import create_app
from tests.support.api_keys import ADMIN, admin_client, bearer, new_tenant

PUBLIC = "https://93.184.216.34/hooks/k2e"  # an address literal: nothing is resolved
ALL = ["job.succeeded", "job.failed", "job.cancelled", "job.suspended", "job.preempted"]


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory, redis_server: EmbeddedRedis) -> Settings:
    return Settings(
        data_dir=tmp_path_factory.mktemp("k2e-data"),
        redis_url=redis_server.url,
        webhook_allow_cidrs="127.0.0.2/32",
        webhook_max_per_tenant=3,
    )


@pytest.fixture(scope="module")
def api(settings: Settings) -> Iterator[TestClient]:
    with admin_client(create_app(settings)) as client:
        yield client


@pytest.fixture
def member(api: TestClient, request: pytest.FixtureRequest) -> dict[str, str]:
    name = "wh-" + str(abs(hash(request.node.name)))[:10]
    return bearer(new_tenant(api, name))


def _problem(response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    return response.json()


@pytest.mark.parametrize(
    ("url", "rule"),
    [
        ("http://169.254.169.254/latest/meta-data/", "metadata"),
        ("http://[fd00:ec2::254]/", "metadata"),
        ("http://10.0.0.1/hook", "private"),
        ("http://192.168.1.20:8080/hook", "private"),
        ("http://localhost:8080/hook", "loopback"),
        ("http://127.0.0.1/hook", "loopback"),
        ("http://[::1]/hook", "loopback"),
        ("http://[::ffff:127.0.0.1]/hook", "loopback"),
        ("http://0.0.0.0/hook", "unspecified"),
        ("http://224.0.0.251/hook", "multicast"),
        ("http://100.64.0.1/hook", "not-global"),
    ],
)
def test_a_target_at_a_forbidden_address_is_a_422_naming_url_and_the_rule(
    api: TestClient, member: dict[str, str], url: str, rule: str
) -> None:
    body = _problem(api.post("/webhooks", json={"url": url, "events": ALL}, headers=member), 422)
    (error,) = body["errors"]
    assert error["loc"] == ["body", "url"]
    assert f"'{rule}'" in error["msg"]
    assert api.get("/webhooks", headers=member).json() == []


@pytest.mark.parametrize(
    "url",
    ["ftp://93.184.216.34/x", "file:///etc/passwd", "http:///nohost", "http://u:p@93.184.216.34/"],
)
def test_only_plain_http_and_https_urls_are_accepted(
    api: TestClient, member: dict[str, str], url: str
) -> None:
    body = _problem(api.post("/webhooks", json={"url": url, "events": ALL}, headers=member), 422)
    assert body["errors"][0]["loc"] == ["body", "url"]


def test_an_allow_listed_private_address_is_accepted(
    api: TestClient, member: dict[str, str]
) -> None:
    created = api.post(
        "/webhooks", json={"url": "http://127.0.0.2:9000/in", "events": ALL}, headers=member
    )
    assert created.status_code == 201, created.text


@pytest.mark.parametrize(
    "body",
    [
        {"url": PUBLIC, "events": []},
        {"url": PUBLIC, "events": ["job.started"]},
        {"url": PUBLIC, "events": ["job.failed", "job.failed"]},
        {"url": PUBLIC},
        {"url": PUBLIC, "events": ALL, "secret": "mine"},
        {"url": "x" * 3000, "events": ALL},
    ],
)
def test_bad_bodies_are_422(api: TestClient, member: dict[str, str], body: dict) -> None:
    _problem(api.post("/webhooks", json=body, headers=member), 422)


def test_the_secret_is_shown_once_and_endpoints_belong_to_their_tenant(
    api: TestClient, member: dict[str, str]
) -> None:
    created = api.post("/webhooks", json={"url": PUBLIC, "events": ALL}, headers=member)
    assert created.status_code == 201, created.text
    hook = created.json()
    assert set(hook) == {"id", "url", "events", "secret", "created_at"}
    assert hook["secret"].startswith("whsec_")
    assert hook["events"] == ALL
    listed = api.get("/webhooks", headers=member).json()
    assert [h["id"] for h in listed] == [hook["id"]]
    assert "secret" not in listed[0]
    assert hook["secret"] not in api.get(f"/webhooks/{hook['id']}/deliveries", headers=member).text

    other = bearer(new_tenant(api, "wh-other"))
    assert api.get("/webhooks", headers=other).json() == []
    for method, path in [
        ("DELETE", f"/webhooks/{hook['id']}"),
        ("POST", f"/webhooks/{hook['id']}/test"),
        ("GET", f"/webhooks/{hook['id']}/deliveries"),
    ]:
        _problem(api.request(method, path, headers=other), 404)
    theirs = _problem(api.get(f"/webhooks/{hook['id']}/deliveries", headers=other), 404)
    unknown = _problem(api.get("/webhooks/wh_0000000000000000/deliveries", headers=member), 404)
    assert theirs["title"] == unknown["title"]
    assert "no webhook with id" in theirs["detail"]
    everyone = api.get("/webhooks", params={"tenant": "*"}, headers=ADMIN).json()
    assert hook["id"] in {h["id"] for h in everyone}
    _problem(api.get("/webhooks", params={"tenant": "*"}, headers=other), 403)


def test_the_test_event_is_queued_and_listed_with_the_deliveries(
    api: TestClient, member: dict[str, str]
) -> None:
    hook = api.post("/webhooks", json={"url": PUBLIC, "events": ALL}, headers=member).json()
    queued = api.post(f"/webhooks/{hook['id']}/test", headers=member)
    assert queued.status_code == 202, queued.text
    delivery = queued.json()
    assert delivery["type"] == "webhook.test"
    assert delivery["state"] == "pending"
    assert delivery["attempts"] == 0
    assert delivery["next_attempt_at"] is not None
    listed = api.get(f"/webhooks/{hook['id']}/deliveries", headers=member).json()
    assert [d["id"] for d in listed] == [delivery["id"]]


def test_deleting_an_endpoint_forgets_it_and_its_deliveries(
    api: TestClient, member: dict[str, str]
) -> None:
    hook = api.post("/webhooks", json={"url": PUBLIC, "events": ALL}, headers=member).json()
    api.post(f"/webhooks/{hook['id']}/test", headers=member)
    assert api.delete(f"/webhooks/{hook['id']}", headers=member).status_code == 204
    assert api.get("/webhooks", headers=member).json() == []
    _problem(api.get(f"/webhooks/{hook['id']}/deliveries", headers=member), 404)
    _problem(api.delete(f"/webhooks/{hook['id']}", headers=member), 404)


def test_a_tenant_has_a_bounded_number_of_endpoints(
    api: TestClient, member: dict[str, str]
) -> None:
    for _ in range(3):
        assert api.post("/webhooks", json={"url": PUBLIC, "events": ALL}, headers=member).is_success
    body = _problem(api.post("/webhooks", json={"url": PUBLIC, "events": ALL}, headers=member), 409)
    assert "K2E_WEBHOOK_MAX_PER_TENANT" in body["detail"]


def test_odd_ids_are_unknown(api: TestClient, member: dict[str, str]) -> None:
    for odd in ("x" * 40, "wh_%00", "wh-é"):
        _problem(api.get(f"/webhooks/{odd}/deliveries", headers=member), 404)


def test_deleting_a_tenant_forgets_its_endpoints(api: TestClient) -> None:
    key = bearer(new_tenant(api, "wh-gone"))
    hook = api.post("/webhooks", json={"url": PUBLIC, "events": ALL}, headers=key).json()
    assert api.delete("/tenants/wh-gone", headers=ADMIN).status_code == 204
    everyone = api.get("/webhooks", params={"tenant": "*"}, headers=ADMIN).json()
    assert hook["id"] not in {h["id"] for h in everyone}


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"webhook_allow_cidrs": "10.0.0.0/8, not-a-network"}, "not-a-network"),
        ({"webhook_retry_base_s": 60, "webhook_retry_max_s": 30}, "K2E_WEBHOOK_RETRY_MAX_S"),
    ],
)
def test_bad_webhook_settings_are_refused_at_start(values: dict, named: str) -> None:
    with pytest.raises(ValidationError) as refused:
        Settings(**values)
    assert named in str(refused.value)


def test_allowed_networks_are_read_from_the_setting() -> None:
    settings = Settings(webhook_allow_cidrs=" 10.20.0.0/16 ,fd00::/8,")
    assert [str(n) for n in settings.webhook_allowed_networks] == ["10.20.0.0/16", "fd00::/8"]
