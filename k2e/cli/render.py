"""What people read: durations, sizes, ages, tables, problems."""

import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from pydantic import BaseModel
from rich.console import Console
from rich.table import Table
from rich.text import Text

from k2e.client.exceptions import ProblemError
from k2e.cluster_schemas import Cluster
from k2e.compat import UTC
from k2e.queue_schemas import WorkerSummary
from k2e.schemas import DatasetInfo, Job, ModelInfo
from k2e.tenancy.bodies import ApiKey, Tenant

STATUS_STYLE = {
    "queued": "yellow",
    "running": "cyan",
    "cancelling": "magenta",
    "succeeded": "green",
    "failed": "red",
    "cancelled": "magenta",
    "suspended": "blue",
}


def duration(seconds: float | None) -> str:
    """``42s``, ``3m 05s``, ``2h 01m``, ``3d 4h``; ``-`` for unknown."""
    if seconds is None:
        return "-"
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 86400}d {s % 86400 // 3600}h"


def size(n: int | None) -> str:
    """Bytes in binary units: ``512 B``, ``1.5 KiB``, ``2.0 GiB``."""
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def ago(when: datetime | None, now: datetime | None = None) -> str:
    if when is None:
        return "-"
    now = now or datetime.now(UTC)
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return duration((now - when).total_seconds()) + " ago"


def job_duration(job: Job) -> float | None:
    """Run time: from start to end, or to now while it runs."""
    if job.started_at is None:
        return None
    end = job.finished_at or datetime.now(UTC)
    start = job.started_at
    if start.tzinfo is None:
        start = start.replace(tzinfo=UTC)
    if end.tzinfo is None:
        end = end.replace(tzinfo=UTC)
    return (end - start).total_seconds()


MEMBER_STYLE = {
    "placed": "yellow",
    "ready": "cyan",
    "running": "cyan",
    "done": "green",
    "failed": "red",
    "lost": "red",
    "out_of_memory": "red",
}


def status_text(status: str) -> Text:
    return Text(status, style=STATUS_STYLE.get(status, ""))


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def cluster_shape(job: Job) -> str | None:
    """A cluster job's shape as asked for: ``3 workers (the chief + 2), 1 parameter server,
    an evaluator; between_graph, placement 1``; None for a job on one worker."""
    shape = job.spec.get("distribution")
    if not isinstance(shape, dict):
        return None
    workers = int(shape.get("workers", 1))
    parts = [f"{_count(workers, 'worker')} (the chief + {workers - 1})"]
    parts.append(_count(int(shape.get("parameter_servers", 0)), "parameter server"))
    if shape.get("evaluator"):
        parts.append("an evaluator")
    placed = f"placement {job.cluster.gang}" if job.cluster is not None else "not placed yet"
    return f"{', '.join(parts)}; {shape.get('strategy', 'between_graph')}, {placed}"


def members_table(cluster: Cluster) -> Table:
    """Each member of a cluster's placement: role:index, state, node, address, last seen."""
    table = Table(box=None, header_style="bold")
    for column in ("MEMBER", "STATE", "NODE", "ADDRESS", "SEEN"):
        table.add_column(column, no_wrap=True)
    for m in cluster.members:
        table.add_row(
            f"{m.role}:{m.index}",
            Text(m.state, style=MEMBER_STYLE.get(m.state, "")),
            m.node or "-",
            m.address or "-",
            ago(m.beat_at),
        )
    return table


def steps(job: Job) -> str:
    p = job.progress
    return f"{p.global_step}/{p.max_steps}" if p.max_steps else str(p.global_step)


def print_json(console: Console, value: BaseModel | list[Any] | dict[str, Any]) -> None:
    """JSON for scripts: plain, no colour, one document."""
    if isinstance(value, BaseModel):
        text = value.model_dump_json(indent=2)
    else:
        text = json.dumps(
            [v.model_dump(mode="json") if isinstance(v, BaseModel) else v for v in value]
            if isinstance(value, list)
            else value,
            indent=2,
        )
    console.print(text, markup=False, highlight=False, soft_wrap=True)


def jobs_table(jobs: Iterable[Job]) -> Table:
    table = Table(box=None, header_style="bold")
    for column in ("ID", "STATUS", "STEP", "LOSS", "CREATED", "RAN", "TENANT"):
        table.add_column(column, no_wrap=column in ("ID", "STATUS"))
    for job in jobs:
        loss = job.metrics.train[-1].loss if job.metrics.train else None
        table.add_row(
            job.id,
            status_text(job.status),
            steps(job),
            "-" if loss is None else f"{loss:.4g}",
            ago(job.created_at),
            duration(job_duration(job)),
            job.tenant or "-",
        )
    return table


def models_table(models: Iterable[ModelInfo]) -> Table:
    table = Table(box=None, header_style="bold")
    for column in ("ID", "FORMAT", "INPUTS", "OUTPUTS", "METRICS", "SIZE"):
        table.add_column(column, no_wrap=column == "ID")
    for m in models:
        table.add_row(
            m.id,
            m.format,
            ", ".join(t.name for t in m.inputs),
            ", ".join(t.name for t in m.outputs),
            ", ".join(m.metric_names) or "-",
            size(m.size),
        )
    return table


def datasets_table(datasets: Iterable[DatasetInfo]) -> Table:
    table = Table(box=None, header_style="bold")
    for column in ("ID", "FORMAT", "EXAMPLES", "ARRAYS", "SIZE"):
        table.add_column(column, no_wrap=column == "ID")
    for d in datasets:
        arrays = ", ".join(f"{name}{tuple(shape)}" for name, shape in d.arrays.items())
        table.add_row(d.id, d.format, str(d.num_examples), arrays, size(d.size))
    return table


def tenants_table(tenants: Iterable[Tenant]) -> Table:
    table = Table(box=None, header_style="bold")
    for column in ("TENANT", "ACTIVE JOBS", "STORAGE", "MAX STEPS", "MAX RUN", "CREATED"):
        table.add_column(column)
    for t in tenants:
        usage = t.usage
        table.add_row(
            t.name,
            f"{usage.active_jobs if usage else '-'}/{t.quotas.max_active_jobs}",
            f"{size(usage.bytes) if usage else '-'}/{size(t.quotas.max_bytes)}",
            str(t.quotas.max_steps),
            duration(t.quotas.max_run_s),
            ago(t.created_at),
        )
    return table


def keys_table(keys: Iterable[ApiKey]) -> Table:
    table = Table(box=None, header_style="bold")
    for column in ("ID", "TENANT", "ROLE", "NAME", "CREATED", "LAST USED", "REVOKED"):
        table.add_column(column, no_wrap=column == "ID")
    for k in keys:
        table.add_row(
            k.id,
            k.tenant,
            k.role,
            k.name,
            ago(k.created_at),
            ago(k.last_used_at),
            ago(k.revoked_at) if k.revoked_at else "-",
        )
    return table


def workers_table(workers: Iterable[WorkerSummary]) -> Table:
    table = Table(box=None, header_style="bold")
    columns = ("WORKER", "STATE", "QUEUES", "ACCEL", "VERSION", "JOB", "MEMORY", "HEARTBEAT")
    for column in columns:
        table.add_column(column, no_wrap=column in ("WORKER", "JOB"))
    for w in workers:
        table.add_row(
            w.name,
            Text(w.state, style="green" if w.state == "live" else "red"),
            " ".join(w.queues),
            w.accelerator,
            w.version,
            " ".join(w.current_jobs) or "-",
            size(w.rss_bytes) if w.rss_bytes is not None else "-",
            ago(w.last_heartbeat),
        )
    return table


def print_problem(console: Console, exc: ProblemError, what: str = "") -> None:
    """The problem's title and detail, then each broken rule with the field it names."""
    prefix = f"{what}: " if what else ""
    console.print(Text(f"{prefix}{exc.status} {exc.title}: ", style="bold red") + Text(exc.detail))
    for error in exc.errors:
        console.print(Text(f"  {error.field or '(body)'}: ", style="bold") + Text(error.msg))
    if exc.retry_after:
        console.print(f"  retry after {exc.retry_after} s")
