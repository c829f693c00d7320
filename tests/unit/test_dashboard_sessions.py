"""Dashboard sessions over plain HTTP: an API key exchanged for an HttpOnly, SameSite=Strict
cookie that expires, ends on sign-out or when its key is revoked, and needs the session's
CSRF token on state-changing requests; the pages and their static files."""

import time
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from k2e.db import utcnow
from k2e.settings import Settings
from k2e.tables import sessions
from k2e.tenancy.sessions import SessionStore
from service.main import create_app
from tests.support.api_keys import TEST_ADMIN_KEY, admin_client, new_tenant


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, redis_server) -> Iterator[dict]:
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("sessions"),
        redis_url=redis_server.url,
        admin_key=TEST_ADMIN_KEY,
        key_cache_s=0,
    )
    app = create_app(settings)
    with admin_client(app) as admin:
        yield {"app": app, "admin": admin, "member": new_tenant(admin, "crew")}


def _sign_in(app, key: str) -> tuple[TestClient, dict]:
    client = TestClient(app)
    response = client.post("/ui/session", json={"key": key})
    assert response.status_code == 200, response.text
    return client, response.json()


def test_sign_in_sets_a_strict_httponly_cookie_standing_for_the_key(world: dict) -> None:
    client = TestClient(world["app"])
    refused = client.post("/ui/session", json={"key": "k2e_not-a-key-of-this-server-000"})
    assert refused.status_code == 401
    assert "k2e_session" not in refused.cookies
    response = client.post("/ui/session", json={"key": world["member"]})
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie
    assert "Path=/" in cookie
    assert response.json()["tenant"] == "crew"
    assert response.json()["role"] == "member"
    assert client.get("/tenants/me").json()["name"] == "crew"
    assert client.get("/ui/session").json()["csrf_token"] == response.json()["csrf_token"]
    # A member's cookie is a member: admin routes are refused as for its key.
    assert client.get("/tenants").status_code == 403


def test_sign_out_needs_the_token_and_ends_the_session(world: dict) -> None:
    client, info = _sign_in(world["app"], world["member"])
    assert client.delete("/ui/session").status_code == 403
    assert client.get("/jobs").status_code == 200
    cookie = client.cookies["k2e_session"]
    assert (
        client.delete("/ui/session", headers={"X-CSRF-Token": info["csrf_token"]}).status_code
        == 204
    )
    # The browser drops the cookie; one kept elsewhere is dead too.
    replay = TestClient(world["app"], cookies={"k2e_session": cookie})
    assert replay.get("/jobs").status_code == 401
    assert replay.get("/ui/session").status_code == 401


def test_an_expired_session_is_refused(world: dict) -> None:
    client, _ = _sign_in(world["app"], world["member"])
    assert client.get("/jobs").status_code == 200
    engine = world["app"].state.backend.store.engine
    with engine.begin() as conn:
        conn.execute(update(sessions).values(expires_at=utcnow() - timedelta(seconds=1)))
    # The cache holds the session as it was before: forget it, so the store is read again.
    world["app"].state.session_cache.forget_where(lambda _session: True)
    response = client.get("/jobs")
    assert response.status_code == 401
    assert "expired" in response.json()["detail"]


def test_revoking_the_key_ends_its_sessions(world: dict) -> None:
    key = new_tenant(world["admin"], "brief")
    client, _ = _sign_in(world["app"], key)
    assert client.get("/tenants/me").status_code == 200
    key_id = next(k["id"] for k in world["admin"].get("/keys").json() if k["tenant"] == "brief")
    assert world["admin"].delete(f"/keys/{key_id}").status_code == 204
    assert client.get("/tenants/me").status_code == 401


def test_pages_are_served_with_a_strict_content_security_policy(world: dict) -> None:
    client = TestClient(world["app"])
    pages = (
        "/ui",
        "/ui/jobs",
        "/ui/submit",
        "/ui/models",
        "/ui/datasets",
        "/ui/queues",
        "/ui/webhooks",
    )
    for path in (*pages, "/ui/jobs/x"):
        page = client.get(path)
        assert page.status_code == 200, path
        assert '<script type="module" src="/ui/static/js/app.js">' in page.text
        assert "default-src 'self'" in page.headers["content-security-policy"]
        assert page.headers["x-frame-options"] == "DENY"
    script = client.get("/ui/static/js/job.js")
    assert script.status_code == 200
    assert "EventSource" in script.text
    assert "javascript" in script.headers["content-type"]
    assert client.get("/ui/static/../routes.py").status_code == 404
    assert client.get("/ui/static/%2e%2e/routes.py").status_code == 404
    assert client.get("/ui/static/nothing.js").status_code == 404


def test_a_job_page_of_another_tenant_is_a_404(world: dict, tmp_path) -> None:
    from tests.support.keras_models import (
        npz_bytes,
        save_h5,
        seed_multi_io_data,
        seed_multi_io_model,
    )

    admin = world["admin"]
    h5 = save_h5(seed_multi_io_model(), tmp_path / "seed.h5").read_bytes()
    model = admin.post("/models", files={"file": ("m.h5", h5)}).json()["id"]
    data = npz_bytes(seed_multi_io_data(32))
    dataset = admin.post("/datasets", files={"file": ("d.npz", data)}).json()["id"]
    spec = {"keras_model_path": model, "train": {"dataset": dataset, "max_steps": 5}}
    job = admin.post("/convert", json=spec)
    assert job.status_code == 202, job.text
    job_id = job.json()["id"]
    member, _ = _sign_in(world["app"], world["member"])
    page = member.get(f"/ui/jobs/{job_id}")
    assert page.status_code == 404
    assert "Not found" in page.text
    assert member.get(f"/jobs/{job_id}").status_code == 404
    owner, _ = _sign_in(world["app"], TEST_ADMIN_KEY)
    assert owner.get(f"/ui/jobs/{job_id}").status_code == 200
    assert owner.get(f"/jobs/{job_id}").json()["id"] == job_id


def test_a_session_lives_for_the_configured_lifetime_and_no_longer(world: dict) -> None:
    """SessionStore: a session expires ``ttl_s`` after sign-in; once past, the store no
    longer resolves it (and sign-in sweeps it away)."""
    engine = world["app"].state.backend.store.engine
    tenants = world["app"].state.backend.tenants
    caller = tenants.authenticate(world["member"])
    store = SessionStore(engine, ttl_s=0.5)
    before = utcnow()
    opened = store.open(caller)
    lifetime = opened.session.expires_at - before
    assert timedelta(seconds=0.5) <= lifetime < timedelta(seconds=1.5)
    resolved = store.resolve(opened.token)
    assert resolved is not None
    assert resolved.caller == caller
    time.sleep(0.7)
    assert store.resolve(opened.token) is None


def test_sign_in_sets_the_lifetime_and_a_cached_session_ends_on_time(
    tmp_path, redis_server
) -> None:
    """The cookie's Max-Age and the session's expires_at are K2E_SESSION_TTL_S; a session
    an API process holds in its cache (key_cache_s) is refused once it has expired."""
    settings = Settings(
        data_dir=tmp_path,
        redis_url=redis_server.url,
        admin_key=TEST_ADMIN_KEY,
        key_cache_s=60,
        session_ttl_s=120,
    )
    app = create_app(settings)
    with admin_client(app) as admin:
        member = new_tenant(admin, "tick")
        asked = utcnow()
        response = TestClient(app).post("/ui/session", json={"key": member})
        assert response.status_code == 200, response.text
        assert "Max-Age=120" in response.headers["set-cookie"]
        expires = datetime.fromisoformat(response.json()["expires_at"])
        assert timedelta(seconds=120) <= expires - asked < timedelta(seconds=130)
        # The same sign-in with a short-lived session store: cached after its first use,
        # refused after its expiry although the cache still holds it.
        app.state.backend.sessions.ttl = timedelta(seconds=1)
        short, _ = _sign_in(app, member)
        assert short.get("/jobs").status_code == 200
        assert short.get("/jobs").status_code == 200  # from the cache
        time.sleep(1.3)
        refused = short.get("/jobs")
        assert refused.status_code == 401
        assert "expired" in refused.json()["detail"]


def test_revoking_the_key_ends_its_cached_sessions_at_once(
    tmp_path_factory: pytest.TempPathFactory, redis_server
) -> None:
    """With lookups cached, the revoking process forgets the key's sessions as well as the
    key: its dashboard cookie is refused at once, not after K2E_KEY_CACHE_S."""
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("cached-sessions"),
        redis_url=redis_server.url,
        admin_key=TEST_ADMIN_KEY,
        key_cache_s=60,
    )
    app = create_app(settings)
    with admin_client(app) as admin:
        key = new_tenant(admin, "cached")
        client, _ = _sign_in(app, key)
        assert client.get("/tenants/me").status_code == 200  # the session is now cached
        key_id = next(k["id"] for k in admin.get("/keys").json() if k["tenant"] == "cached")
        assert admin.delete(f"/keys/{key_id}").status_code == 204
        assert client.get("/tenants/me").status_code == 401
