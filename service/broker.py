"""Sends training tasks by name, so the API never imports worker code."""

from typing import Any

import redis
from kombu.exceptions import OperationalError

from k2e.errors import Unavailable
from k2e.queueing import make_celery
from k2e.settings import Settings
from k2e.tasks import TRAIN_TASK


class TaskSender:
    def __init__(self, settings: Settings) -> None:
        self._celery = make_celery(settings, name="k2e-api")
        self._url = settings.broker_url

    def send_train(self, job_id: str, options: dict[str, Any]) -> None:
        """Enqueue a job; ``options`` come from k2e.queueing.train_task_options."""
        try:
            self._celery.send_task(TRAIN_TASK, args=[job_id], **options)
        except (OperationalError, redis.RedisError, OSError) as exc:
            raise Unavailable(f"the broker does not answer: {exc}") from exc

    def ping(self) -> None:
        try:
            client = redis.Redis.from_url(self._url, socket_timeout=1, socket_connect_timeout=1)
            client.ping()
            client.close()
        except (redis.RedisError, OSError) as exc:
            raise Unavailable(f"the broker does not answer: {exc}") from exc
