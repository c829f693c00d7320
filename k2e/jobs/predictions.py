"""POST /jobs/{id}/predict's round trip: the API sends a prediction task on the job's queue
and waits for its answer on a Redis list the worker pushes it to.

Celery keeps no results in k2e (job state lives in the job store), so the answer travels
on a list of its own: one key per request, pushed once, expiring soon after. A task that
waits in the broker past the API's timeout expires unrun.
"""

import json
import uuid
from typing import Any

import redis
from celery import Celery
from kombu.exceptions import OperationalError

from k2e.errors import InvalidInput, TimedOut, Unavailable
from k2e.settings import Settings

PREDICT_TASK = "k2e.predict"
_REPLY_PREFIX = "k2e:predict:"
# An answer nobody waits for any more is dropped by Redis after this.
REPLY_TTL_S = 60


class PredictionRequests:
    """The API's side: send a prediction task, wait for its answer."""

    def __init__(self, settings: Settings, celery: Celery) -> None:
        self._celery = celery
        self._url = settings.broker_url
        self._timeout_s = settings.predict_timeout_s

    def ask(
        self, job_id: str, tenant: str, queue: str, instances: list[Any], signature: str | None
    ) -> dict[str, Any]:
        """The worker's answer ``{"signature_name", "predictions"}``. Raises Unavailable
        (the broker does not answer), TimedOut (no worker answered in time) or
        InvalidInput (the instances do not fit the model)."""
        reply_key = f"{_REPLY_PREFIX}{uuid.uuid4().hex}"
        timeout = self._timeout_s
        try:
            # BLPOP's own timeout bounds the wait; the socket's must outlast it.
            client = redis.Redis.from_url(
                self._url, socket_connect_timeout=2, socket_timeout=timeout + 5
            )
            self._celery.send_task(
                PREDICT_TASK,
                args=[job_id, tenant, instances, signature, reply_key],
                queue=queue,
                expires=timeout,
            )
            answer: Any = client.blpop([reply_key], timeout=max(1, round(timeout)))
            client.close()
        except (OperationalError, redis.RedisError, OSError) as exc:
            raise Unavailable(f"the broker does not answer: {exc}") from exc
        if answer is None:
            raise TimedOut(
                f"no worker answered within {timeout:g} s (K2E_PREDICT_TIMEOUT_S): the "
                f"workers of queue {queue!r} are busy or down"
            )
        body: dict[str, Any] = json.loads(answer[1])
        if "error" in body:
            raise InvalidInput(body["error"])
        return body


def send_reply(redis_url: str, reply_key: str, body: dict[str, Any]) -> None:
    """The worker's side: push the answer where the API waits for it."""
    if not reply_key.startswith(_REPLY_PREFIX):
        raise ValueError(f"not a prediction reply key: {reply_key!r}")
    client = redis.Redis.from_url(redis_url, socket_connect_timeout=2, socket_timeout=5)
    try:
        pipe = client.pipeline()
        pipe.rpush(reply_key, json.dumps(body))
        pipe.expire(reply_key, REPLY_TTL_S)
        pipe.execute()
    finally:
        client.close()
