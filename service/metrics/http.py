"""Requests and their latency per route template, counted in the API process.

These are the only metrics a process keeps itself, in plain dictionaries on its event
loop (``RequestTally``: under a microsecond a request; prometheus-client's labelled
metrics cost about 6 µs, a fifth of a cached GET /jobs/{id}: bench/METRICS.md). A scrape
reads them directly. With several API processes (``uvicorn --workers N``), set
``PROMETHEUS_MULTIPROC_DIR`` to an empty folder they share (created before they start,
emptied at each start): each process then adds its counts to prometheus-client's
multiprocess files every second, and a scrape of any process adds up every process's.
"""

import asyncio
import os
import time
from bisect import bisect_left
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "unmatched"
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
FLUSH_S = 1.0
REQUESTS_NAME, REQUESTS_HELP = (
    "k2e_http_requests",
    "HTTP requests answered, by method, route template and status code.",
)
LATENCY_NAME, LATENCY_HELP = (
    "k2e_http_request_duration_seconds",
    "Time to answer an HTTP request (to the end of its body), by method and route template.",
)


class RequestTally:
    """This process's counts: requests by (method, route, status); per (method, route),
    requests by latency bucket (BUCKETS' index, its length above the last) and their sum."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, str], int] = {}
        self.latency: dict[tuple[str, str], list[float]] = {}

    def add(self, method: str, route: str, status: str, seconds: float) -> None:
        key = (method, route, status)
        self.requests[key] = self.requests.get(key, 0) + 1
        spread = self.latency.get((method, route))
        if spread is None:
            spread = self.latency[method, route] = [0.0] * (len(BUCKETS) + 2)
        spread[bisect_left(BUCKETS, seconds)] += 1
        spread[-1] += seconds

    def take(self) -> "RequestTally":
        """The counts so far, leaving this tally empty (on the event loop: no request
        counts in between)."""
        taken = RequestTally()
        taken.requests, self.requests = self.requests, {}
        taken.latency, self.latency = self.latency, {}
        return taken

    def families(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            REQUESTS_NAME, REQUESTS_HELP, labels=["method", "route", "status"]
        )
        for labels, count in sorted(self.requests.items()):
            requests.add_metric(list(labels), count)
        latency = HistogramMetricFamily(LATENCY_NAME, LATENCY_HELP, labels=["method", "route"])
        for key, spread in sorted(self.latency.items()):
            cumulative, seen = [], 0.0
            for bound, n in zip(BUCKETS, spread, strict=False):
                seen += n
                cumulative.append((repr(bound), seen))
            cumulative.append(("+Inf", sum(spread[:-1])))
            latency.add_metric(list(key), cumulative, spread[-1])
        yield requests
        yield latency


TALLY = RequestTally()


class _Shared:
    """prometheus-client's metrics, kept in PROMETHEUS_MULTIPROC_DIR's files: only made
    (and only written, once a second) in multiprocess mode."""

    def __init__(self) -> None:
        labels = ("method", "route")
        self.requests = Counter(REQUESTS_NAME, REQUESTS_HELP, (*labels, "status"), registry=None)
        self.latency = Histogram(LATENCY_NAME, LATENCY_HELP, labels, buckets=BUCKETS, registry=None)

    def add(self, counts: RequestTally) -> None:
        for labels, count in counts.requests.items():
            self.requests.labels(*labels).inc(count)
        for key, spread in counts.latency.items():
            child = self.latency.labels(*key)
            # Whole buckets at once: Histogram.observe takes one value at a time.
            for bucket, n in zip(child._buckets, spread, strict=False):
                if n:
                    bucket.inc(n)
            child._sum.inc(spread[-1])


_shared: _Shared | None = None


def _flush() -> None:
    global _shared
    if _shared is None:
        _shared = _Shared()
    _shared.add(TALLY.take())


def http_exposition() -> bytes:
    """The request metrics in the text format: this process's, or every process's in
    multiprocess mode."""
    registry = CollectorRegistry(auto_describe=False)
    if MULTIPROC:
        _flush()
        MultiProcessCollector(registry)
    else:
        registry.register(_Families(TALLY))
    return generate_latest(registry)


class _Families:
    def __init__(self, tally: RequestTally) -> None:
        self.tally = tally

    def collect(self) -> Iterator[Metric]:
        return self.tally.families()


# Read once, as prometheus-client reads it when imported.
MULTIPROC = bool(os.environ.get(MULTIPROC_ENV))
_flush_pending = MULTIPROC


def start_flushing() -> None:
    """In multiprocess mode, write this process's counts to the shared files every second
    from now on (on its event loop); once per process, whoever counts first calls it."""
    global _flush_pending
    if not _flush_pending:
        return
    _flush_pending = False
    loop = asyncio.get_running_loop()
    loop.call_later(FLUSH_S, _flush_every_second, loop)


def _flush_every_second(loop: asyncio.AbstractEventLoop) -> None:
    _flush()
    loop.call_later(FLUSH_S, _flush_every_second, loop)


def route_of(scope: Scope) -> str:
    """The route template that answered (never the path: ids would make a series each)."""
    template = getattr(scope.get("route"), "path", None)
    return str(template) if template else UNMATCHED


class RequestMetrics:
    """ASGI middleware: counts every HTTP request that reaches the routes once it is
    answered (service/fastpath.py counts the reads it answers before them)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start_flushing()
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
            TALLY.add(method, route_of(scope), str(status), time.perf_counter() - started)
