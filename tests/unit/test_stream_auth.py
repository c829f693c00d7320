"""An event stream ends when its caller is no longer signed in: a revoked key, a signed-out
or expired dashboard session. Against a real API process (uvicorn, as `make run` starts
it), a job that stays queued (no worker consumes it) and log lines written to it as a
worker would, so that events keep flowing until the server closes the stream."""

import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import update

from k2e.client import Client
from k2e.jobs.event_log import notifier_for
from k2e.jobs.job_store import NewJob
from k2e.jobs.leases import JobLeases
from k2e.launcher.embedded_redis import EmbeddedRedis
from k2e.schemas import JobLog
from k2e.settings import Settings
from k2e.tables import sessions
from k2e.tenancy.scope import ANY_TENANT
from tests.support.api_keys import ADMIN, TEST_ADMIN_KEY, bearer
from tests.support.api_server import running_api

KEY_CACHE_S = 1.0
# A stream checks its caller every key_cache_s and the check reads through a cache of that
# lifetime: it ends within two of them, plus a margin for this loaded machine.
BOUND_S = 2 * KEY_CACHE_S + 3.0


@dataclass
class Api:
    url: str
    settings: Settings
    store: JobLeases


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, redis_server: EmbeddedRedis) -> Iterator[Api]:
    root = tmp_path_factory.mktemp("stream-auth")
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "K2E_DATABASE_URL")}
    env.update(
        K2E_DATA_DIR=str(root / "data"),
        REDIS_URL=redis_server.url,
        K2E_ADMIN_KEY=TEST_ADMIN_KEY,
        K2E_KEY_CACHE_S=str(KEY_CACHE_S),
        PYTHONUNBUFFERED="1",
    )
    settings = Settings(data_dir=root / "data", redis_url=redis_server.url)
    with running_api(env, root / "api.log") as (url, _):
        store = JobLeases(settings.sqlalchemy_url, notifier_for(redis_server.url))
        yield Api(url, settings, store)
        store.engine.dispose()


@dataclass
class Stream:
    """What one connection received, read on a thread until the server closed it."""

    events: list[float] = field(default_factory=list)  # arrival times
    closed_at: float | None = None
    error: BaseException | None = None


def _read(url: str, headers: dict[str, str], cookies: dict[str, str], give_up: float) -> Stream:
    stream = Stream()

    def run() -> None:
        try:
            with (
                httpx.Client(timeout=httpx.Timeout(give_up, connect=10)) as http,
                http.stream("GET", url, headers={**headers, **_cookie(cookies)}) as response,
            ):
                assert response.status_code == 200, response.read()
                for line in response.iter_lines():
                    if line.startswith("id:"):
                        stream.events.append(time.monotonic())
                    if time.monotonic() > give_up_at:
                        return  # still open: the test fails on closed_at
                stream.closed_at = time.monotonic()
        except BaseException as exc:  # surfaced by the test
            stream.error = exc

    give_up_at = time.monotonic() + give_up
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    stream.thread = thread  # type: ignore[attr-defined]
    return stream


def _cookie(cookies: dict[str, str]) -> dict[str, str]:
    return {"Cookie": "; ".join(f"{k}={v}" for k, v in cookies.items())} if cookies else {}


def _writing(store: JobLeases, job_id: str) -> Callable[[], None]:
    """Log lines on the job every 0.2 s, as a worker's flushes write them; returns stop."""
    stop = threading.Event()

    def run() -> None:
        n = 0
        while not stop.wait(0.2):
            n += 1
            store.log_many(job_id, [f"INFO k2e: line {n}"])

    threading.Thread(target=run, daemon=True).start()
    return stop.set


def _member(http: httpx.Client) -> tuple[str, str, str]:
    """A new tenant with a member key: (tenant, key id, key)."""
    tenant = f"s{uuid.uuid4().hex[:10]}"
    assert http.post("/tenants", json={"name": tenant}, headers=ADMIN).status_code == 201
    created = http.post(f"/tenants/{tenant}/keys", json={"name": "m"}, headers=ADMIN)
    assert created.status_code == 201, created.text
    return tenant, created.json()["id"], created.json()["key"]


def _queued_job(store: JobLeases, tenant: str) -> str:
    job_id = str(uuid.uuid4())
    store.create(NewJob(job_id, tenant, {"note": "stays queued"}, "cpu", f"jobs/{job_id}", 10))
    return job_id


def _revoke_key(http: httpx.Client, api: Api, key_id: str, cookies: dict[str, str]) -> None:
    assert http.delete(f"/keys/{key_id}", headers=ADMIN).status_code == 204


def _sign_out(http: httpx.Client, api: Api, key_id: str, cookies: dict[str, str]) -> None:
    csrf = cookies.pop("csrf")
    response = http.delete("/ui/session", headers={**_cookie(cookies), "X-CSRF-Token": csrf})
    assert response.status_code == 204, response.text


def _expire(http: httpx.Client, api: Api, key_id: str, cookies: dict[str, str]) -> None:
    # The session's lifetime runs out (session_ttl_s is a minute at least: moved here).
    past = datetime.now(UTC) - timedelta(seconds=1)
    with api.store.engine.begin() as conn:
        conn.execute(update(sessions).where(sessions.c.key_id == key_id).values(expires_at=past))


@pytest.mark.parametrize(
    ("how", "end"),
    [("key", _revoke_key), ("session", _sign_out), ("session", _expire)],
    ids=["revoked-key", "signed-out-session", "expired-session"],
)
def test_a_stream_ends_once_its_caller_is_no_longer_signed_in(api: Api, how: str, end) -> None:
    with httpx.Client(base_url=api.url, timeout=30) as http:
        tenant, key_id, key = _member(http)
        job_id = _queued_job(api.store, tenant)
        headers: dict[str, str] = {}
        cookies: dict[str, str] = {}
        if how == "key":
            headers = bearer(key)
        else:
            signed_in = http.post("/ui/session", json={"key": key})
            assert signed_in.status_code == 200, signed_in.text
            cookies = {"k2e_session": signed_in.cookies["k2e_session"]}
            http.cookies.clear()
        stop = _writing(api.store, job_id)
        try:
            stream = _read(f"{api.url}/jobs/{job_id}/events", headers, cookies, give_up=60)
            deadline = time.monotonic() + 30
            while len(stream.events) < 5 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert len(stream.events) >= 5, f"the stream is live before the end: {stream}"
            if how == "session":
                cookies["csrf"] = signed_in.json()["csrf_token"]
            ended_at = time.monotonic()
            end(http, api, key_id, cookies)
            stream.thread.join(BOUND_S + 1)  # type: ignore[attr-defined]
        finally:
            stop()
        assert stream.error is None, stream.error
        assert stream.closed_at is not None, "the stream was still open"
        assert stream.closed_at - ended_at <= BOUND_S
        assert all(t - ended_at <= BOUND_S for t in stream.events)
        # Reconnecting is refused: the caller is not signed in any more.
        again = http.get(f"/jobs/{job_id}/events", headers={**headers, **_cookie(cookies)})
        assert again.status_code == 401
        assert again.headers["content-type"] == "application/problem+json"


def test_a_stream_of_a_valid_caller_stays_open(api: Api) -> None:
    """The check does not close the streams of callers still signed in."""
    with httpx.Client(base_url=api.url, timeout=30) as http:
        tenant, _, key = _member(http)
        job_id = _queued_job(api.store, tenant)
        stop = _writing(api.store, job_id)
        try:
            stream = _read(f"{api.url}/jobs/{job_id}/events", bearer(key), {}, give_up=4 * BOUND_S)
            stream.thread.join(4 * BOUND_S + 2)  # type: ignore[attr-defined]
        finally:
            stop()
        assert stream.error is None, stream.error
        assert stream.closed_at is None, "the stream closed although its key is valid"
        assert len(stream.events) >= 10


def test_the_client_follows_and_resumes_with_the_jobs_own_event_numbers(api: Api) -> None:
    """Ids number the job's events 1, 2, ... whatever other jobs write meanwhile; the
    Python client resumes after one, and the log's `seq` is the same number."""
    with httpx.Client(base_url=api.url, timeout=30) as http:
        tenant, _, key = _member(http)
    job_id, busy = _queued_job(api.store, tenant), _queued_job(api.store, tenant)
    for n in range(5):
        api.store.log_many(job_id, [f"line {n}"])
        api.store.log_many(busy, ["another job's line", "and another"])
    api.store.request_cancel(job_id, ANY_TENANT)  # cancelled, then end: events 7 and 8
    with Client(api.url, key) as client:
        events = list(client.events(job_id, last_event_id=3))
        log = client.session.get_as(JobLog, f"/jobs/{job_id}/logs", params={"since": 3})
    assert [(e.id, e.event) for e in events] == [
        (4, "log"),
        (5, "log"),
        (6, "log"),
        (7, "status"),
        (8, "end"),
    ]
    assert [e.data["message"] for e in events[:3]] == ["line 2", "line 3", "line 4"]
    assert [(item.seq, item.message) for item in log.items] == [
        (4, "line 2"),
        (5, "line 3"),
        (6, "line 4"),
        (7, "cancelled while queued"),
    ]
    assert log.next_since == 7
