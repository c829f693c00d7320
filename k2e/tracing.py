"""Traces (OpenTelemetry), off unless ``K2E_OTLP_ENDPOINT`` (or the standard
``OTEL_EXPORTER_OTLP_ENDPOINT``) or ``K2E_TRACE_FILE`` is set.

A submission's trace starts with its API request (service/tracing.py): its upload, check
and enqueue are spans of it. The job keeps the request's context (``jobs.trace_context``,
a W3C ``traceparent``) and the enqueue span's is sent in the Celery task's headers, so
the worker's job span, its pickup and each phase (worker/phases.py) continue the same
trace in another process, however late the scheduler hands the job over.

With tracing off, ``span`` is a no-op and OpenTelemetry's SDK is never imported.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from k2e import logs
from k2e.observability_settings import ObservabilitySettings

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.trace import Span

TRACEPARENT = "traceparent"
_provider: TracerProvider | None = None


def setup(settings: ObservabilitySettings, role: str) -> bool:
    """Start recording this process's spans as ``<service_name>-<role>`` when tracing is
    on; returns whether it is. Called again (a forked pool process), it starts anew."""
    global _provider
    if not settings.tracing:
        return False
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    provider = TracerProvider(
        resource=Resource.create({"service.name": f"{settings.service_name}-{role}"})
    )
    if settings.trace_file is not None:
        exported = SpanFile(settings.trace_file)
        provider.add_span_processor(SimpleSpanProcessor(exported))  # type: ignore[arg-type]
    if settings.otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=traces_url(settings.otlp_endpoint))
        provider.add_span_processor(BatchSpanProcessor(exporter))
    _provider = provider
    logs.trace_id_source = current_trace_id
    return True


def provider() -> TracerProvider | None:
    """This process's tracer provider (None with tracing off): tests add exporters to it."""
    return _provider


def shutdown() -> None:
    """Export what is left and stop recording (tests; a process that ends)."""
    global _provider
    if _provider is not None:
        _provider.shutdown()
    _provider = None
    logs.trace_id_source = None


def flush() -> None:
    """Export the spans ended so far (a worker process does at the end of each task)."""
    if _provider is not None:
        _provider.force_flush()


def traces_url(endpoint: str) -> str:
    """OTLP/HTTP's traces path on a collector given by its base URL, as the standard
    variable's convention is."""
    endpoint = endpoint.rstrip("/")
    return endpoint if endpoint.endswith("/v1/traces") else f"{endpoint}/v1/traces"


@contextmanager
def span(name: str, parent: str | None = None, **attributes: Any) -> Iterator[Span | None]:
    """A span, current inside, child of the current one or of ``parent`` (a traceparent
    from another process); None with tracing off."""
    if _provider is None:
        yield None
        return
    tracer = _provider.get_tracer("k2e")
    with tracer.start_as_current_span(
        name, context=_context_of(parent), attributes=_plain(attributes)
    ) as current:
        yield current


def start(name: str, **attributes: Any) -> Span | None:
    """A span of the current one that the caller ends (one job phase until the next)."""
    if _provider is None:
        return None
    return _provider.get_tracer("k2e").start_span(name, attributes=_plain(attributes))


def current_traceparent() -> str | None:
    """The current span's context as a W3C traceparent, to carry to another process."""
    if _provider is None:
        return None
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier)
    return carrier.get(TRACEPARENT)


def current_trace_id() -> str | None:
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None


def _context_of(traceparent: str | None) -> Any:
    if not traceparent:
        return None
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    return TraceContextTextMapPropagator().extract({TRACEPARENT: traceparent})


def _plain(attributes: Mapping[str, Any]) -> dict[str, Any]:
    return {f"k2e.{k}": v for k, v in attributes.items() if isinstance(v, str | int | float)}


class SpanFile:
    """An exporter appending finished spans to a file as JSON lines (K2E_TRACE_FILE):
    what tests read back from processes they cannot reach in memory."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> Any:
        from opentelemetry.sdk.trace.export import SpanExportResult

        lines = "".join(json.dumps(span_record(s)) + "\n" for s in spans).encode()
        with self._lock:
            # One write on an O_APPEND descriptor: processes appending at once do not interleave.
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, lines)
            finally:
                os.close(fd)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def span_record(span: ReadableSpan) -> dict[str, Any]:
    """A finished span as one JSON line of the trace file."""
    context = span.get_span_context()
    parent = span.parent
    return {
        "name": span.name,
        "trace_id": format(context.trace_id, "032x") if context else None,
        "span_id": format(context.span_id, "016x") if context else None,
        "parent_id": format(parent.span_id, "016x") if parent else None,
        "service": span.resource.attributes.get("service.name"),
        "pid": os.getpid(),
        "start_ns": span.start_time,
        "end_ns": span.end_time,
        "attributes": dict(span.attributes or {}),
    }
