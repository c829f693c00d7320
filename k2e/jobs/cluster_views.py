"""``Job.cluster`` for the API: a cluster job's newest placement and its members
(k2e.jobs.gangs), read for one job or for a page of jobs at once."""

from __future__ import annotations

from collections.abc import Iterable
from typing import get_args

from sqlalchemy import Engine, select

from k2e.cluster_schemas import Cluster, Role
from k2e.db import aware
from k2e.jobs.gangs import GangStore, Member, is_silent
from k2e.jobs.records import JobRecord
from k2e.tables import job_members, jobs

# Members are listed as a spec's roles are (Distribution.roles): chief, workers, ps, evaluator.
_ROLE_ORDER = {role: n for n, role in enumerate(get_args(Role))}


def is_cluster(record: JobRecord) -> bool:
    """A job whose spec asks for a cluster (``distribution``)."""
    return isinstance(record.spec, dict) and record.spec.get("distribution") is not None


class ClusterViews:
    def __init__(self, engine: Engine, lease_s: float) -> None:
        self.engine = engine
        self.lease_s = lease_s

    def of(self, record: JobRecord) -> Cluster | None:
        """The job's cluster; None for a job on one worker or a cluster not placed yet."""
        if not is_cluster(record):
            return None
        return GangStore(self.engine).public(record.id, self.lease_s)

    def of_many(self, records: Iterable[JobRecord]) -> dict[str, Cluster]:
        """The clusters of the placed cluster jobs among ``records``, by id (two reads for
        the whole page, shown as ``GangStore.public`` shows one)."""
        ids = [record.id for record in records if is_cluster(record)]
        if not ids:
            return {}
        with self.engine.connect() as conn:
            gangs = {
                str(job_id): int(gang)
                for job_id, gang in conn.execute(
                    select(jobs.c.id, jobs.c.gang).where(
                        jobs.c.id.in_(ids), jobs.c.gang.is_not(None)
                    )
                ).all()
            }
            if not gangs:
                return {}
            rows = conn.execute(
                select(job_members).where(job_members.c.job_id.in_(list(gangs)))
            ).mappings()
            members: dict[str, list[Member]] = {job_id: [] for job_id in gangs}
            for row in rows:
                members[row["job_id"]].append(
                    Member(**{**dict(row), "beat_at": aware(row["beat_at"])})
                )
        return {job_id: self._shown(gang, members[job_id]) for job_id, gang in gangs.items()}

    def _shown(self, gang: int, members: list[Member]) -> Cluster:
        ranked = sorted(members, key=lambda m: (_ROLE_ORDER[m.role], m.index))
        shown = [m.public() for m in ranked]
        for member in shown:
            if member.state in ("ready", "running") and is_silent(member.beat_at, self.lease_s):
                member.state = "lost"
        return Cluster(gang=gang, members=shown)
