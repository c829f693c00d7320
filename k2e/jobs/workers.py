"""The worker registry: one row per Celery worker (its process pool), kept fresh by a
heartbeat from its main process (worker/registry.py). The scheduler counts the job
slots of the live ones per queue (k2e.jobs.scheduling.live_slots): a worker unseen for
three heartbeats counts none, and GET /workers shows it `lost` (the same rule)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import Engine, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from k2e.db import aware, utcnow
from k2e.queue_schemas import WorkerSummary
from k2e.tables import workers


@dataclass(frozen=True)
class WorkerEntry:
    name: str  # "<host>:<pid>"
    node: str
    queues: tuple[str, ...]
    slots: int
    version: str
    accelerator: str = "cpu"


@dataclass(frozen=True)
class WorkerLoad:
    """What a heartbeat reports besides being alive: the jobs the worker's pool runs and
    the resident memory of its processes (None: not known)."""

    jobs: tuple[str, ...] = ()
    rss_bytes: int | None = None


class WorkerRegistry:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def register(self, entry: WorkerEntry) -> None:
        """Add the worker (or refresh it: a restarted process with the same name)."""
        now = utcnow()
        values = {
            "node": entry.node[:128],
            "queues": " ".join(entry.queues)[:200],
            "slots": entry.slots,
            "version": entry.version[:32],
            "accelerator": entry.accelerator[:16],
            "started_at": now,
            "seen_at": now,
        }
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(workers).values(name=entry.name[:200], **values))
        except IntegrityError:
            with self.engine.begin() as conn:
                conn.execute(update(workers).where(workers.c.name == entry.name).values(**values))

    def beat(self, entry: WorkerEntry, load: WorkerLoad | None = None) -> bool:
        """Mark the worker seen now, with its ``load``; re-registers it when its row is
        gone (removed while it was unreachable). Returns whether it was registered again."""
        load = load if load is not None else WorkerLoad()
        values = {
            "seen_at": utcnow(),
            "current_jobs": " ".join(load.jobs)[:400] or None,
            "rss_bytes": load.rss_bytes,
        }
        with self.engine.begin() as conn:
            seen = conn.execute(
                update(workers).where(workers.c.name == entry.name).values(**values)
            ).rowcount
        if seen:
            return False
        self.register(entry)
        return True

    def unregister(self, name: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(delete(workers).where(workers.c.name == name))

    def summaries(self, live_s: float) -> list[WorkerSummary]:
        """Every registered worker, newest first; ``lost`` when unseen for ``live_s``
        seconds (k2e.jobs.scheduling.live_slots's rule: it holds no slot then)."""
        now = utcnow()
        cutoff = now - timedelta(seconds=live_s)
        with self.engine.connect() as conn:
            rows = conn.execute(select(workers).order_by(workers.c.started_at.desc())).all()
        found = []
        for r in rows:
            seen = aware(r.seen_at)
            assert seen is not None
            jobs = str(r.current_jobs or "").split()
            found.append(
                WorkerSummary(
                    name=r.name,
                    node=r.node,
                    queues=str(r.queues).split(),
                    slots=r.slots,
                    accelerator=r.accelerator or "cpu",
                    version=r.version,
                    current_job=jobs[0] if jobs else None,
                    current_jobs=jobs,
                    rss_bytes=r.rss_bytes,
                    started_at=aware(r.started_at),  # type: ignore[arg-type]
                    last_heartbeat=seen,
                    state="live" if seen >= cutoff else "lost",
                )
            )
        return found
