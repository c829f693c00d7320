"""Webhook deliveries on the store's side: events enter the outbox with the job's change,
the delivery loop signs and sends them to a real receiver on loopback, retries with
backoff, and refuses targets that resolve to forbidden addresses before connecting.
On SQLite and on the machine's PostgreSQL (a schema of its own)."""

import ipaddress
import json
import re
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import delete, select, update

from k2e.db import utcnow
from k2e.jobs.job_store import NewJob
from k2e.jobs.leases import JobLeases
from k2e.schemas import JobStatus
from k2e.tables import jobs, webhook_deliveries, webhooks
from k2e.tenancy.scope import ANY_TENANT, Scope
from k2e.webhooks.courier import Courier, Schedule
from k2e.webhooks.schemas import EventType
from k2e.webhooks.signing import signature
from k2e.webhooks.store import WebhookStore
from k2e.webhooks.targets import TargetPolicy
from tests.support.postgres import fresh_postgres_schema
from tests.support.webhook_receiver import Receiver, running_receiver, self_signed

OWNER = "host:1:abc"
LOOPBACK = (ipaddress.ip_network("127.0.0.1/32"),)
FAST = Schedule(timeout_s=2.0, base_s=0.05, max_s=0.2, window_s=60, response_bytes=64)


@pytest.fixture(scope="module")
def pg_schema() -> Iterator[str]:
    with fresh_postgres_schema("k2e_webhooks") as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path) -> Iterator[JobLeases]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'jobs.db'}"
    else:
        url = request.getfixturevalue("pg_schema")
    leases = JobLeases(url)
    leases.create_schema()
    _forget_webhooks(leases)  # the PostgreSQL schema is the module's: start empty
    yield leases
    _forget_webhooks(leases)
    leases.engine.dispose()


def _forget_webhooks(store: JobLeases) -> None:
    with store.engine.begin() as conn:
        conn.execute(delete(webhook_deliveries))
        conn.execute(delete(webhooks))


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver(Receiver()) as running:
        yield running


def _register(store: JobLeases, receiver: Receiver, tenant: str, events=None) -> str:
    hooks = WebhookStore(store.engine, 20)
    hook = hooks.create(tenant, receiver.url, events or list(EventType))
    receiver.secret = hook.secret
    return hook.id


def _running(store: JobLeases, tenant: str) -> str:
    job_id = str(uuid.uuid4())
    store.create(NewJob(job_id, tenant, {"train": {"max_steps": 20}}, "cpu", "m", 20))
    _set(store, job_id, dispatched_at=utcnow())
    assert store.start(job_id, OWNER, 30) is not None
    return job_id


def _set(store: JobLeases, job_id: str, **values: object) -> None:
    with store.engine.begin() as conn:
        conn.execute(update(jobs).where(jobs.c.id == job_id).values(**values))


def _courier(store: JobLeases, policy: TargetPolicy | None = None, **kw: object) -> Courier:
    return Courier(store.engine, kw.pop("schedule", FAST), policy or TargetPolicy(LOOPBACK))


def _drain(courier: Courier, seconds: float = 10) -> None:
    """Run the loop's rounds until nothing is pending (or ``seconds`` pass)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for claimed in courier.claim(10):
            courier.attempt(claimed)
        with courier.engine.connect() as conn:
            states = set(conn.execute(select(webhook_deliveries.c.state)).scalars())
        if "pending" not in states:
            return
        time.sleep(0.05)


def test_each_kind_of_event_is_signed_retried_and_delivered_once(
    store: JobLeases, receiver: Receiver
) -> None:
    receiver.fail_first = 2
    hook = _register(store, receiver, "t")
    succeeded, failed, cancelled, suspended, preempted = (_running(store, "t") for _ in range(5))
    store.finish(succeeded, JobStatus.succeeded, OWNER)
    store.finish(failed, JobStatus.failed, OWNER)
    store.request_cancel(cancelled, Scope.of("t"))
    store.finish(cancelled, JobStatus.cancelled, OWNER)
    _set(store, suspended, yield_request="suspend")
    assert store.release_yielded(suspended, OWNER, 5) is JobStatus.suspended
    _set(store, preempted, yield_request="preempt")
    assert store.release_yielded(preempted, OWNER, 5) is JobStatus.queued

    _drain(_courier(store))

    assert receiver.bad_signatures == 0
    assert receiver.effective() == {t.value: 1 for t in EventType}
    assert set(receiver.attempts.values()) == {3}  # two failures, then the one that counts
    by_type = {e["type"]: e for e in receiver.accepted.values()}
    assert by_type["job.succeeded"]["data"]["job"]["id"] == succeeded
    assert by_type["job.succeeded"]["data"]["job"]["status"] == "succeeded"
    assert by_type["job.preempted"]["data"]["job"]["preemptions"] == 1
    assert by_type["job.suspended"]["data"]["job"]["status"] == "suspended"
    deliveries = WebhookStore(store.engine, 20).deliveries(hook, Scope.of("t"))
    assert {(d.state, d.attempts, d.response_status) for d in deliveries} == {("delivered", 3, 200)}
    assert all(d.response_excerpt == "ok" and d.next_attempt_at is None for d in deliveries)


def test_only_the_subscribed_events_of_the_tenant_s_own_jobs_are_sent(
    store: JobLeases, receiver: Receiver
) -> None:
    _register(store, receiver, "t", [EventType.failed])
    mine_ok, mine_failed, theirs = _running(store, "t"), _running(store, "t"), _running(store, "u")
    store.finish(mine_ok, JobStatus.succeeded, OWNER)
    store.finish(mine_failed, JobStatus.failed, OWNER)
    store.finish(theirs, JobStatus.failed, OWNER)
    _drain(_courier(store))
    assert [e["data"]["job"]["id"] for e in receiver.accepted.values()] == [mine_failed]


def test_a_job_that_ends_without_a_webhook_writes_no_delivery(store: JobLeases) -> None:
    job = _running(store, "t")
    store.finish(job, JobStatus.succeeded, OWNER)
    with store.engine.connect() as conn:
        assert conn.execute(select(webhook_deliveries)).first() is None


def test_the_event_id_and_body_stay_the_same_across_attempts(
    store: JobLeases, receiver: Receiver
) -> None:
    receiver.fail_first = 1
    _register(store, receiver, "t")
    store.finish(_running(store, "t"), JobStatus.succeeded, OWNER)
    _drain(_courier(store))
    ((event_id, event),) = receiver.accepted.items()
    assert event["id"] == event_id
    assert receiver.attempts[event_id] == 2
    assert set(event) == {"id", "type", "created_at", "data"}


def test_a_name_that_resolves_to_loopback_at_delivery_is_not_connected_to(
    store: JobLeases, receiver: Receiver
) -> None:
    """DNS answered a public address at registration; now it answers loopback (not
    allowed here): the delivery is refused before any connection, and retried."""
    hooks = WebhookStore(store.engine, 20)
    url = f"http://hooks.example.com:{receiver.port}/in"
    registration = TargetPolicy((), resolver=lambda host, port: ["93.184.216.34"])
    assert registration.check(url).address == "93.184.216.34"
    hook = hooks.create("t", url, [EventType.succeeded]).id
    store.finish(_running(store, "t"), JobStatus.succeeded, OWNER)

    rebound = TargetPolicy((), resolver=lambda host, port: ["127.0.0.1"])
    courier = _courier(store, rebound)
    (claimed,) = courier.claim(5)
    outcome = courier.attempt(claimed)

    assert receiver.requests == 0
    assert outcome.status is None
    assert "refused before connecting" in (outcome.error or "")
    (delivery,) = hooks.deliveries(hook, Scope.of("t"))
    assert delivery.state == "pending"
    assert delivery.attempts == 1
    assert "loopback" in (delivery.error or "")
    assert delivery.next_attempt_at is not None


def test_the_sender_connects_to_the_checked_address_with_the_name_as_host(
    store: JobLeases, receiver: Receiver
) -> None:
    """One lookup, then a connection to its answer: a resolver consulted again would
    answer an address nothing listens on."""
    answers = iter([["127.0.0.1"]])
    policy = TargetPolicy(LOOPBACK, resolver=lambda host, port: next(answers))
    hooks = WebhookStore(store.engine, 20)
    hook = hooks.create("t", f"http://receiver.test:{receiver.port}/in", [EventType.failed])
    receiver.secret = hook.secret
    store.finish(_running(store, "t"), JobStatus.failed, OWNER)
    courier = _courier(store, policy)
    (claimed,) = courier.claim(5)
    assert courier.attempt(claimed).delivered
    assert receiver.effective() == {"job.failed": 1}


def test_a_redirect_is_not_followed_and_the_answer_is_read_bounded(
    store: JobLeases, receiver: Receiver
) -> None:
    receiver.answer, receiver.reply = 302, b"x" * 10_000
    receiver.headers = {"Location": "http://169.254.169.254/latest/meta-data/"}
    hook = _register(store, receiver, "t")
    store.finish(_running(store, "t"), JobStatus.succeeded, OWNER)
    courier = _courier(store)
    (claimed,) = courier.claim(5)
    courier.attempt(claimed)
    (delivery,) = WebhookStore(store.engine, 20).deliveries(hook, Scope.of("t"))
    assert delivery.state == "pending"
    assert delivery.response_status == 302
    assert delivery.response_excerpt == "x" * FAST.response_bytes
    assert "302" in (delivery.error or "")
    assert receiver.requests == 1


def test_a_slow_endpoint_fails_the_attempt_at_the_timeout(
    store: JobLeases, receiver: Receiver
) -> None:
    receiver.delay_s = 5
    hook = _register(store, receiver, "t")
    store.finish(_running(store, "t"), JobStatus.succeeded, OWNER)
    schedule = Schedule(timeout_s=0.5, base_s=0.05, max_s=0.2, window_s=60, response_bytes=64)
    courier = Courier(store.engine, schedule, TargetPolicy(LOOPBACK))
    (claimed,) = courier.claim(5)
    started = time.monotonic()
    courier.attempt(claimed)
    assert time.monotonic() - started < 2
    (delivery,) = WebhookStore(store.engine, 20).deliveries(hook, Scope.of("t"))
    assert delivery.state == "pending"
    assert "timed out" in (delivery.error or "")


def test_a_delivery_past_its_retry_window_is_given_up(store: JobLeases, receiver: Receiver) -> None:
    receiver.answer = 503
    hook = _register(store, receiver, "t")
    store.finish(_running(store, "t"), JobStatus.succeeded, OWNER)
    schedule = Schedule(timeout_s=2, base_s=0.05, max_s=0.1, window_s=0.3, response_bytes=64)
    _drain(Courier(store.engine, schedule, TargetPolicy(LOOPBACK)))
    (delivery,) = WebhookStore(store.engine, 20).deliveries(hook, Scope.of("t"))
    assert delivery.state == "failed"
    assert delivery.next_attempt_at is None
    assert delivery.attempts >= 2
    assert delivery.response_status == 503


def test_backoff_doubles_up_to_its_cap() -> None:
    schedule = Schedule(timeout_s=10, base_s=30, max_s=3600, window_s=86400, response_bytes=0)
    assert [schedule.wait_after(n) for n in (1, 2, 3, 8, 100)] == [30, 60, 120, 3600, 3600]


def test_deliveries_wait_in_the_store_for_the_next_delivery_loop(
    store: JobLeases, receiver: Receiver
) -> None:
    """Nothing but the store holds a delivery: a loop started later (another process,
    after a restart) sends what an earlier one left, and a lapsed claim is taken over."""
    _register(store, receiver, "t")
    store.finish(_running(store, "t"), JobStatus.succeeded, OWNER)
    first = _courier(store)
    assert len(first.claim(5)) == 1  # claimed, then its process "died"
    later = JobLeases(store.engine.url.render_as_string(hide_password=False))
    with later.engine.begin() as conn:
        conn.execute(update(webhook_deliveries).values(claimed_until=utcnow()))
    _drain(_courier(later))
    later.engine.dispose()
    assert receiver.effective() == {"job.succeeded": 1}


def test_a_claimed_delivery_is_not_sent_by_a_second_loop(store: JobLeases) -> None:
    hooks = WebhookStore(store.engine, 20)
    hooks.create("t", "http://127.0.0.1:9/x", [EventType.succeeded])
    store.finish(_running(store, "t"), JobStatus.succeeded, OWNER)
    assert len(_courier(store).claim(5)) == 1
    assert _courier(store).claim(5) == []


def test_the_test_event_reaches_one_endpoint(store: JobLeases, receiver: Receiver) -> None:
    hook = _register(store, receiver, "t")
    delivery = WebhookStore(store.engine, 20).send_test(hook, ANY_TENANT)
    assert delivery.state == "pending"
    assert delivery.type == "webhook.test"
    _drain(_courier(store))
    (event,) = receiver.accepted.values()
    assert event["type"] == "webhook.test"
    assert event["data"]["webhook"]["id"] == hook
    assert json.loads(json.dumps(event))["id"] == delivery.event_id


def test_the_documented_verification_snippet_accepts_a_delivery_and_nothing_else(
    store: JobLeases, receiver: Receiver
) -> None:
    text = (Path(__file__).resolve().parents[2] / "docs" / "api.md").read_text()
    (snippet,) = [b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "K2E-Sig" in b]
    scope: dict = {}
    exec(snippet, scope)  # noqa: S102 - the docs' own code, run as a reader would
    verify_k2e_signature = scope["verify_k2e_signature"]
    _register(store, receiver, "t")
    store.finish(_running(store, "t"), JobStatus.succeeded, OWNER)
    _drain(_courier(store))
    ((headers, body),) = receiver.raw
    header = headers["K2E-Signature"]
    assert verify_k2e_signature(receiver.secret, body, header)
    assert not verify_k2e_signature("whsec_another", body, header)
    assert not verify_k2e_signature(receiver.secret, body + b" ", header)
    old = signature(receiver.secret, body, int(time.time()) - 3600)
    assert not verify_k2e_signature(receiver.secret, body, old)


@pytest.mark.parametrize(
    ("certified", "delivered"), [("receiver.test", True), ("other.test", False)]
)
def test_https_goes_to_the_checked_address_and_verifies_the_name(
    store: JobLeases, tmp_path: Path, certified: str, delivered: bool
) -> None:
    """TLS to the checked address, with the URL's name as SNI and as the name the
    certificate must carry: a certificate for another name fails the attempt."""
    server_tls, client_tls = self_signed(tmp_path, certified)
    with running_receiver(Receiver(), tls=server_tls) as receiver:
        hooks = WebhookStore(store.engine, 20)
        url = f"https://receiver.test:{receiver.port}/in"
        hook = hooks.create("t", url, [EventType.succeeded])
        receiver.secret = hook.secret
        store.finish(_running(store, "t"), JobStatus.succeeded, OWNER)
        policy = TargetPolicy(LOOPBACK, resolver=lambda host, port: ["127.0.0.1"])
        courier = Courier(store.engine, FAST, policy, tls=client_tls)
        (claimed,) = courier.claim(5)
        outcome = courier.attempt(claimed)
        assert outcome.delivered is delivered, outcome
        if delivered:
            assert receiver.effective() == {"job.succeeded": 1}
        else:
            assert "certificate" in (outcome.error or "").lower()
            assert receiver.accepted == {}


def test_ended_deliveries_leave_the_history_after_its_days(
    store: JobLeases, receiver: Receiver
) -> None:
    hook = _register(store, receiver, "t")
    store.finish(_running(store, "t"), JobStatus.succeeded, OWNER)
    _drain(_courier(store))
    receiver.answer = 503
    store.finish(_running(store, "t"), JobStatus.failed, OWNER)
    with store.engine.begin() as conn:  # both a month old; the second still pending
        conn.execute(update(webhook_deliveries).values(created_at=utcnow() - timedelta(days=31)))
    assert _courier(store).prune() == 1
    (left,) = WebhookStore(store.engine, 20).deliveries(hook, Scope.of("t"))
    assert left.type == "job.failed"
    assert left.state == "pending"


def test_a_slow_endpoint_does_not_hold_up_another_s_deliveries(store: JobLeases) -> None:
    """The loop sends from threads of its own: while one endpoint keeps an attempt waiting,
    another endpoint's event still arrives at once."""
    with (
        running_receiver(Receiver(delay_s=2.5)) as slow,
        running_receiver(Receiver()) as fast,
    ):
        hooks = WebhookStore(store.engine, 20)
        slow.secret = hooks.create("slow", slow.url, [EventType.succeeded]).secret
        store.finish(_running(store, "slow"), JobStatus.succeeded, OWNER)
        fast.secret = hooks.create("fast", fast.url, [EventType.succeeded]).secret
        schedule = Schedule(timeout_s=5, base_s=0.05, max_s=0.2, window_s=60, response_bytes=64)
        courier = Courier(store.engine, schedule, TargetPolicy(LOOPBACK), poll_s=0.05)
        courier.start()
        try:
            deadline = time.monotonic() + 10
            while not slow.requests:  # the slow endpoint holds a sending thread now
                assert time.monotonic() < deadline
                time.sleep(0.02)
            started = time.monotonic()
            store.finish(_running(store, "fast"), JobStatus.succeeded, OWNER)
            fast.wait_for(1, timeout=3)
            assert time.monotonic() - started < 2
            assert slow.requests == 1  # still in its first attempt
        finally:
            courier.stop()  # waits for the slow attempt to end
        assert len(slow.accepted) == 1


def test_a_slow_lookup_counts_as_a_failed_one(store: JobLeases, receiver: Receiver) -> None:
    def slow_dns(host: str, port: int) -> list[str]:
        time.sleep(2)
        return ["127.0.0.1"]

    hooks = WebhookStore(store.engine, 20)
    hook = hooks.create("t", f"http://slow.test:{receiver.port}/", [EventType.failed]).id
    store.finish(_running(store, "t"), JobStatus.failed, OWNER)
    courier = _courier(store, TargetPolicy(LOOPBACK, slow_dns, lookup_timeout_s=0.3))
    (claimed,) = courier.claim(5)
    started = time.monotonic()
    courier.attempt(claimed)
    assert time.monotonic() - started < 1
    (delivery,) = hooks.deliveries(hook, Scope.of("t"))
    assert "did not resolve within 0.3 s" in (delivery.error or "")
    assert receiver.requests == 0
