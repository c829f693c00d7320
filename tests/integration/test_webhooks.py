"""Webhooks with a real worker process, real Redis and real TensorFlow: the events of real
jobs reach a receiver on loopback (allow-listed), signed, after failed attempts, each
counted once; deliveries wait in the job store through a Redis outage and an API restart.
The receiver is the only address anything is sent to."""

import time
from collections.abc import Iterator

import pytest

from service.main import create_app
from tests.support.api_keys import admin_client
from tests.support.job_polling import wait_for_job
from tests.support.webhook_receiver import Receiver, running_receiver

pytest.importorskip("tensorflow")
from tests.support.fault_deployment import FAST_RECOVERY, Env  # noqa: E402  (needs TensorFlow)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ALL = ["job.succeeded", "job.failed", "job.cancelled", "job.suspended", "job.preempted"]
# Retries within a second, so that the failures the receiver answers first pass quickly.
QUICK_WEBHOOKS = {
    "webhook_allow_cidrs": "127.0.0.1/32",
    "webhook_retry_base_s": 0.3,
    "webhook_retry_max_s": 1.0,
    "webhook_poll_s": 0.2,
    "webhook_timeout_s": 3.0,
}


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    deployment = Env(tmp_path_factory.mktemp("webhooks"), **FAST_RECOVERY, **QUICK_WEBHOOKS)
    try:
        deployment.worker()
        yield deployment
    finally:
        deployment.close()


def _register(env: Env, receiver: Receiver) -> str:
    created = env.client.post("/webhooks", json={"url": receiver.url, "events": ALL})
    assert created.status_code == 201, created.text
    receiver.secret = created.json()["secret"]
    return created.json()["id"]


def _deliveries(client, hook: str, count: int, timeout: float = 30) -> list[dict]:
    """The endpoint's deliveries once ``count`` of them are delivered."""
    deadline = time.monotonic() + timeout
    while True:
        found = client.get(f"/webhooks/{hook}/deliveries").json()
        if sum(d["state"] == "delivered" for d in found) >= count:
            return found
        assert time.monotonic() < deadline, found
        time.sleep(0.1)


def _status(env: Env, job_id: str, wanted: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while (job := env.job(job_id))["status"] != wanted:
        assert time.monotonic() < deadline, job
        time.sleep(0.1)
    return job


def test_real_jobs_events_arrive_signed_once_each_after_failed_attempts(env: Env) -> None:
    with running_receiver(Receiver(fail_first=2)) as receiver:
        hook = _register(env, receiver)
        done = env.submit(max_steps=20)
        long = env.submit(max_steps=100_000)
        assert wait_for_job(env.client, done["id"], timeout=180)["status"] == "succeeded"
        env.wait_step(long["id"], 50)
        assert env.client.post(f"/jobs/{long['id']}/suspend").status_code == 202
        _status(env, long["id"], "suspended")
        assert env.client.post(f"/jobs/{long['id']}/cancel").status_code == 202

        receiver.wait_for(3, timeout=60)
        deliveries = _deliveries(env.client, hook, 3)
        time.sleep(1)  # a repeat would have come by now

        assert receiver.bad_signatures == 0
        assert receiver.effective() == {"job.succeeded": 1, "job.suspended": 1, "job.cancelled": 1}
        assert set(receiver.attempts.values()) == {3}
        jobs = {e["type"]: e["data"]["job"] for e in receiver.accepted.values()}
        assert jobs["job.succeeded"]["id"] == done["id"]
        assert jobs["job.succeeded"]["status"] == "succeeded"
        assert jobs["job.succeeded"]["progress"]["global_step"] == 20
        assert jobs["job.suspended"]["id"] == jobs["job.cancelled"]["id"] == long["id"]
        assert jobs["job.cancelled"]["status"] == "cancelled"
        assert {(d["state"], d["attempts"], d["response_status"]) for d in deliveries} == {
            ("delivered", 3, 200)
        }
        assert {d["event_id"] for d in deliveries} == set(receiver.accepted)
        assert env.client.delete(f"/webhooks/{hook}").status_code == 204


def test_deliveries_wait_in_the_store_through_a_redis_outage_and_an_api_restart(
    env: Env,
) -> None:
    with running_receiver(Receiver(answer=503)) as receiver:
        hook = _register(env, receiver)
        job = env.submit(max_steps=10)
        assert wait_for_job(env.client, job["id"], timeout=180)["status"] == "succeeded"
        deadline = time.monotonic() + 30
        while not receiver.attempts:  # the endpoint is down: the delivery waits to retry
            assert time.monotonic() < deadline
            time.sleep(0.1)
        env.kill_redis_hard()
        env._client_cm.__exit__(None, None, None)  # the API stops too
        try:
            receiver.answer = 200
            receiver.wait_for(1, timeout=30)  # sent while Redis is down
        finally:
            env.redis.start()
            env._client_cm = admin_client(create_app(env.settings))
            env.client = env._client_cm.__enter__()
        (delivery,) = _deliveries(env.client, hook, 1)  # the restarted API reads the store
        (event,) = receiver.accepted.values()
        assert event["type"] == "job.succeeded"
        assert event["data"]["job"]["id"] == job["id"]
        assert delivery["attempts"] == receiver.attempts[event["id"]] >= 2
