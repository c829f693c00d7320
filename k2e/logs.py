"""k2e's log lines: human text (the default) or one JSON object per line
(``K2E_LOG_FORMAT=json``), each carrying what it is about.

The fields (``request_id``, ``job_id``, ``tenant``, ``worker``, ``trace_id``) come from
two places: ``bound(...)``, a context variable, for what one API request or one task does
(asyncio tasks and the API's thread pool copy it); and ``bind_process(...)``, for the
worker: a pool process runs one job at a time, and threads it starts (the job's
heartbeat) do not inherit context variables, yet their lines are the job's too.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Literal, TextIO

FIELDS = ("request_id", "job_id", "tenant", "worker", "trace_id")
TEXT_FORMAT = "%(asctime)s %(name)s %(message)s"
# X-Request-ID values k2e keeps as given: short, and nothing a log line or header could
# be forged with (no spaces, quotes, control characters).
REQUEST_ID = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,128}$")

_bound: ContextVar[dict[str, str]] = ContextVar("k2e_log_fields", default={})  # noqa: B039
_process: dict[str, str] = {}
# Set by k2e.tracing when tracing is on: the current span's trace id, or None.
trace_id_source: Callable[[], str | None] | None = None


def request_id_from(value: str | None) -> str:
    """The request id for an ``X-Request-ID`` header: the client's when it is short and
    plain, else a new one."""
    if value is not None and REQUEST_ID.match(value):
        return value
    return uuid.uuid4().hex


@contextmanager
def bound(**fields: str | None) -> Iterator[None]:
    """Lines logged inside carry ``fields`` (None values are left out)."""
    token = _bound.set({**_bound.get(), **{k: v for k, v in fields.items() if v}})
    try:
        yield
    finally:
        _bound.reset(token)


def bind_process(**fields: str | None) -> None:
    """Every line this process logs from now on carries ``fields``; None removes one."""
    for name, value in fields.items():
        if value:
            _process[name] = value
        else:
            _process.pop(name, None)


def current() -> dict[str, str]:
    """The fields a line logged here and now carries."""
    fields = {**_process, **_bound.get()}
    if trace_id_source is not None:
        trace_id = trace_id_source()
        if trace_id:
            fields["trace_id"] = trace_id
    return fields


class ContextFilter(logging.Filter):
    """Puts the current fields on each record (``record.k2e``) as it is handled."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "k2e"):
            record.k2e = current()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, the fields, and the
    traceback (``exc``) when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update(getattr(record, "k2e", None) or current())
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exc"] = record.exc_text
        return json.dumps(line, default=str, ensure_ascii=False)


def formatter(log_format: Literal["text", "json"], text: str = TEXT_FORMAT) -> logging.Formatter:
    return JsonFormatter() if log_format == "json" else logging.Formatter(text)


class JsonHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes JSON lines with the current fields (to stderr by default)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__(stream or sys.stderr)
        self.setFormatter(JsonFormatter())
        self.addFilter(ContextFilter())


def use_json_logs(level: int = logging.INFO, loggers: tuple[str, ...] = ()) -> None:
    """Route the root logger, and ``loggers`` that have handlers of their own (a
    server's), to one JSON handler on stderr. Called again, it replaces its handler."""
    root = logging.getLogger()
    for ours in [h for h in root.handlers if isinstance(h, JsonHandler)]:
        root.removeHandler(ours)
    root.addHandler(JsonHandler())
    root.setLevel(level)
    logging.captureWarnings(True)
    for name in loggers:
        logger = logging.getLogger(name)
        if not logger.handlers:
            continue  # switched off (uvicorn's --no-access-log): left so
        for old in list(logger.handlers):
            logger.removeHandler(old)
        logger.propagate = True
