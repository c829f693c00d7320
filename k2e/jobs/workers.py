"""The worker registry: one row per Celery worker (its process pool), kept fresh by a
heartbeat from its main process (worker/registry.py). The scheduler counts the job
slots of the live ones per queue (k2e.jobs.scheduling.live_slots): a worker unseen for
three heartbeats counts none."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine, delete, insert, update
from sqlalchemy.exc import IntegrityError

from k2e.db import utcnow
from k2e.tables import workers


@dataclass(frozen=True)
class WorkerEntry:
    name: str  # "<host>:<pid>"
    node: str
    queues: tuple[str, ...]
    slots: int
    version: str


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
            "started_at": now,
            "seen_at": now,
        }
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(workers).values(name=entry.name[:200], **values))
        except IntegrityError:
            with self.engine.begin() as conn:
                conn.execute(update(workers).where(workers.c.name == entry.name).values(**values))

    def beat(self, entry: WorkerEntry) -> bool:
        """Mark the worker seen now; re-registers it when its row is gone (removed while
        it was unreachable). Returns whether it was registered again."""
        with self.engine.begin() as conn:
            seen = conn.execute(
                update(workers).where(workers.c.name == entry.name).values(seen_at=utcnow())
            ).rowcount
        if seen:
            return False
        self.register(entry)
        return True

    def unregister(self, name: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(delete(workers).where(workers.c.name == name))
