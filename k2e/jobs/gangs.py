"""A cluster job's members in the store: placed as a gang by the scheduler, joined by the
worker processes that pick up their tasks, and watched by each other.

A placement (``gang``) numbers the job's member rows: the scheduler writes one row per
member (state ``placed``) when it hands the job over, and the job's ``gang`` column then
names the placement every live member belongs to. A member whose task arrives for an
older placement (a message given back by a dead worker) finds its gang number stale and
stops at once.

Members find each other through their rows: each writes its node and ``host:port``
(``join``), then waits until every member of its gang has; the TF_CONFIG cluster is built
from the rows (``cluster_spec``). Each member beats its row while it runs; one silent
past the lease is lost, which brings the whole gang down.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, delete, insert, select, update
from sqlalchemy.engine import Connection

from k2e.cluster_schemas import Cluster, ClusterMember, Distribution, MemberState, Role
from k2e.db import aware, utcnow
from k2e.jobs.rows import add_event
from k2e.schemas import JobStatus
from k2e.tables import job_members, jobs

# TF_CONFIG's cluster keys per task type; the evaluator is not part of the cluster.
_CLUSTER_KEYS: dict[str, str] = {"chief": "chief", "worker": "worker", "ps": "ps"}


@dataclass(frozen=True)
class Member:
    job_id: str
    role: Role
    index: int
    gang: int
    state: MemberState
    owner: str | None
    node: str | None
    address: str | None
    beat_at: datetime | None

    @property
    def name(self) -> str:
        return f"{self.role}:{self.index}"

    def public(self) -> ClusterMember:
        return ClusterMember(
            role=self.role,
            index=self.index,
            state=self.state,
            node=self.node,
            address=self.address,
            worker=self.owner,
            beat_at=self.beat_at,
        )


def place(conn: Connection, job_id: str, shape: Distribution) -> int:
    """Start a new placement of ``job_id``'s gang inside the caller's transaction: bump
    the job's gang number and write one ``placed`` row per member. Returns the number."""
    row = conn.execute(select(jobs.c.gang).where(jobs.c.id == job_id)).first()
    gang = (row.gang or 0) + 1 if row is not None else 1
    conn.execute(update(jobs).where(jobs.c.id == job_id).values(gang=gang))
    conn.execute(delete(job_members).where(job_members.c.job_id == job_id))
    conn.execute(
        insert(job_members),
        [
            {"job_id": job_id, "role": role, "index": index, "gang": gang, "state": "placed"}
            for role, index in shape.roles()
        ],
    )
    return gang


def cluster_spec(members: list[Member]) -> dict[str, list[str]]:
    """TF_CONFIG's ``cluster`` from the members' addresses (the evaluator is not in it)."""
    cluster: dict[str, list[str]] = {}
    for member in sorted(members, key=lambda m: (m.role, m.index)):
        key = _CLUSTER_KEYS.get(member.role)
        if key is not None and member.address is not None:
            cluster.setdefault(key, []).append(member.address)
    return cluster


def tf_config(members: list[Member], role: Role, index: int) -> dict[str, Any]:
    """The TF_CONFIG of one member of a fully joined gang."""
    return {"cluster": cluster_spec(members), "task": {"type": role, "index": index}}


class GangStore:
    """Members' rows, read and written by the worker processes that hold them."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def gang_of(self, job_id: str) -> int | None:
        """The job's newest placement, or None (not a cluster job, or never placed)."""
        with self.engine.connect() as conn:
            return conn.execute(select(jobs.c.gang).where(jobs.c.id == job_id)).scalar()

    def placement_live(self, job_id: str, gang: int, forming: bool = False) -> bool:
        """True while the job runs (or is being cancelled) with placement ``gang``, or,
        ``forming``, waits for its chief to start it: a member of an older placement, or
        of a job that ended or went back to the queue, stops."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(jobs.c.status, jobs.c.gang).where(jobs.c.id == job_id)
            ).first()
        live = [JobStatus.running.value, JobStatus.cancelling.value]
        if forming:
            live.append(JobStatus.queued.value)
        return row is not None and row.gang == gang and row.status in live

    def members(self, job_id: str) -> list[Member]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(job_members).where(job_members.c.job_id == job_id)
            ).mappings()
            return sorted(
                (_member(row) for row in rows),
                key=lambda m: (_ROLE_ORDER[m.role], m.index),
            )

    def join(
        self, job_id: str, gang: int, role: Role, index: int, owner: str, node: str, address: str
    ) -> bool:
        """Take this member's row of placement ``gang``: False when the placement is not
        the job's newest any more or another process holds the row."""
        with self.engine.begin() as conn:
            taken = conn.execute(
                update(job_members)
                .where(
                    job_members.c.job_id == job_id,
                    job_members.c.role == role,
                    job_members.c.index == index,
                    job_members.c.gang == gang,
                    job_members.c.state == "placed",
                )
                .values(state="ready", owner=owner, node=node, address=address, beat_at=utcnow())
            ).rowcount
        return bool(taken)

    def beat(
        self, job_id: str, gang: int, role: Role, index: int, state: MemberState | None = None
    ) -> bool:
        """Mark the member seen now (and set its state); False when its placement is gone."""
        values: dict[str, Any] = {"beat_at": utcnow()}
        if state is not None:
            values["state"] = state
        with self.engine.begin() as conn:
            seen = conn.execute(
                update(job_members)
                .where(
                    job_members.c.job_id == job_id,
                    job_members.c.role == role,
                    job_members.c.index == index,
                    job_members.c.gang == gang,
                )
                .values(**values)
            ).rowcount
        return bool(seen)

    def formed(self, job_id: str, gang: int) -> list[Member] | None:
        """Every member of placement ``gang`` once each has joined (holds an address);
        None while some have not, or when the placement is not the newest any more."""
        members = self.members(job_id)
        if not members or any(m.gang != gang for m in members):
            return None
        if any(m.address is None or m.state == "placed" for m in members):
            return None
        return members

    def bring_down(self, job_id: str, gang: int, owner: str, note: str) -> bool:
        """The chief's end of a placement that lost a member: its members are marked
        ``lost`` where still live, and the job goes back to waiting for a new placement
        (status queued, not handed over). The attempt stays counted: a gang that fails
        uses the job's attempts as a crashed single-node run does. False when ``owner``
        no longer holds the job running."""
        now = utcnow()
        with self.engine.begin() as conn:
            released = conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id, jobs.c.lease_owner == owner)
                .where(jobs.c.status == JobStatus.running.value, jobs.c.gang == gang)
                .values(
                    status=JobStatus.queued.value,
                    dispatched_at=None,
                    lease_owner=None,
                    lease_expires_at=None,
                    yield_request=None,
                    updated_at=now,
                )
            ).rowcount
            if not released:
                return False
            conn.execute(
                update(job_members)
                .where(job_members.c.job_id == job_id, job_members.c.gang == gang)
                .where(job_members.c.state.in_(["placed", "ready", "running"]))
                .values(state="lost")
            )
            add_event(conn, job_id, JobStatus.queued.value, note)
        return True

    def public(self, job_id: str, lease_s: float) -> Cluster | None:
        """``Job.cluster``: the newest placement's members, a silent one shown ``lost``."""
        gang = self.gang_of(job_id)
        if gang is None:
            return None
        members = [m.public() for m in self.members(job_id)]
        for member in members:
            if member.state in ("ready", "running") and is_silent(member.beat_at, lease_s):
                member.state = "lost"
        return Cluster(gang=gang, members=members)


def is_silent(beat_at: datetime | None, lease_s: float, now: datetime | None = None) -> bool:
    """True when a member last beat longer than ``lease_s`` ago."""
    stamp = aware(beat_at)
    if stamp is None:
        return False
    now = now if now is not None else utcnow()
    return stamp < now - timedelta(seconds=lease_s)


_ROLE_ORDER = {"chief": 0, "worker": 1, "ps": 2, "evaluator": 3}


def _member(row: Any) -> Member:
    return Member(
        job_id=row["job_id"],
        role=row["role"],
        index=row["index"],
        gang=row["gang"],
        state=row["state"],
        owner=row["owner"],
        node=row["node"],
        address=row["address"],
        beat_at=aware(row["beat_at"]),
    )
