"""A job's log lines (k2e's and TensorFlow's) into the job store, for GET /jobs/{id}/logs:
as text, or with ``K2E_LOG_FORMAT=json`` as the worker's own JSON lines (k2e.logs), the
request id and job id in each."""

import json
import logging
import threading
from typing import Literal

from k2e import logs
from k2e.jobs.leases import JobLeases

# TensorFlow's Estimator logs (`loss = ..., step = ...`, `global_step/sec`) go to "tensorflow".
CAPTURED_LOGGERS = ("k2e", "tensorflow")
MAX_LINE = 2000


class JobLogCapture(logging.Handler):
    """Buffers records while a job runs; :meth:`flush_to_store` writes them in one batch
    (called by the heartbeat and at the end), so logging never waits on the database."""

    def __init__(
        self, store: JobLeases, job_id: str, log_format: Literal["text", "json"] = "text"
    ) -> None:
        super().__init__(level=logging.INFO)
        self.store, self.job_id = store, job_id
        self.setFormatter(logs.formatter(log_format, "%(levelname)s %(name)s: %(message)s"))
        self.addFilter(logs.ContextFilter())
        self._buffer: list[str] = []
        self._lock = threading.Lock()
        self._previous_levels: dict[str, int] = {}

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
            if len(line) > MAX_LINE:
                line = shortened(line)
        except Exception:  # a bad log call must not break training
            return
        with self._lock:
            self._buffer.append(line)

    def flush_to_store(self) -> None:
        with self._lock:
            lines, self._buffer = self._buffer, []
        if lines:
            self.store.log_many(self.job_id, lines)

    def __enter__(self) -> "JobLogCapture":
        for name in CAPTURED_LOGGERS:
            logger = logging.getLogger(name)
            self._previous_levels[name] = logger.level
            if logger.getEffectiveLevel() > logging.INFO:
                logger.setLevel(logging.INFO)
            logger.addHandler(self)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for name in CAPTURED_LOGGERS:
            logger = logging.getLogger(name)
            logger.removeHandler(self)
            logger.setLevel(self._previous_levels.get(name, logging.NOTSET))
        self.flush_to_store()


def shortened(line: str) -> str:
    """A line cut to MAX_LINE characters; a JSON line stays JSON (its message is cut)."""
    if not line.startswith("{"):
        return line[:MAX_LINE]
    fields = json.loads(line)
    message = str(fields.get("message", ""))
    fields["message"] = message[: max(0, len(message) - (len(line) - MAX_LINE) - 16)] + "..."
    return json.dumps(fields, ensure_ascii=False)
