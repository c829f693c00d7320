"""Requests and their latency per route template, counted in the API process.

These are the only metrics a process keeps itself. With several API processes
(``uvicorn --workers N``), set ``PROMETHEUS_MULTIPROC_DIR`` to an empty folder they share
(created before they start, emptied at each start): prometheus-client then keeps each
process's values in a file there and a scrape of any process adds them all up.
"""

import os
import time

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# The key service/fastpath.py sets when it answers GET /jobs/{job_id} before routing.
ROUTE_KEY = "k2e.route"
UNMATCHED = "unmatched"

# A `_created` series beside every counter and histogram says when the process first
# counted it: nothing an operator reads, and as many series again.
disable_created_metrics()
REGISTRY = CollectorRegistry(auto_describe=False)
REQUESTS = Counter(
    "k2e_http_requests",
    "HTTP requests answered, by method, route template and status code.",
    ("method", "route", "status"),
    registry=REGISTRY,
)
LATENCY = Histogram(
    "k2e_http_request_duration_seconds",
    "Time to answer an HTTP request (to the end of its body), by method and route template.",
    ("method", "route"),
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
    registry=REGISTRY,
)


def http_exposition() -> bytes:
    """The request metrics in the text format: this process's, or every process's in
    multiprocess mode."""
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry(auto_describe=False)
        MultiProcessCollector(registry)
        return generate_latest(registry)
    return generate_latest(REGISTRY)


def route_of(scope: Scope) -> str:
    """The route template that answered (never the path: ids would make a series each)."""
    route = scope.get("route")
    template = getattr(route, "path", None) or scope.get(ROUTE_KEY)
    return str(template) if template else UNMATCHED


class RequestMetrics:
    """ASGI middleware, outermost: counts every HTTP request once it is answered."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # an exception before the response started is answered 500

        async def send_seeing_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_seeing_status)
        finally:
            method = scope["method"] if scope["method"] in METHODS else "other"
            route = route_of(scope)
            REQUESTS.labels(method, route, str(status)).inc()
            LATENCY.labels(method, route).observe(time.perf_counter() - started)
