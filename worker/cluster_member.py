"""A cluster job's member other than its chief (MEMBER_TASK): a training worker, a
parameter server or the evaluator. It holds its worker slot while its TensorFlow process
runs, beats its row, and brings its process down as soon as the gang does.

The chief owns the job (lease, progress, checkpoints, export); a member only reports its
row and its log lines, labelled ``[role:index]``. With bucket storage it shares no folder
with the others: it reads the job's inputs from its own node's cache (``node_files``)."""

import contextlib
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from k2e.cluster_schemas import Role
from k2e.jobs.gangs import GangStore, Member, tf_config
from k2e.jobs.records import JobRecord
from k2e.schemas import TERMINAL_STATUSES, ConvertRequest
from k2e.tenancy.bodies import DEFAULT_TENANT
from k2e.tenancy.scope import ANY_TENANT
from worker.cache import fetch_job_inputs
from worker.gang_watch import (
    BEAT_S,
    WATCH_S,
    GangGone,
    MemberLogs,
    gang_steps,
    join,
    lost_member,
    wait_formed,
)
from worker.heartbeat import job_rss_bytes
from worker.member_child import MemberChild

if TYPE_CHECKING:
    from worker.training import JobRunner

log = logging.getLogger("k2e.worker")
TRAINERS = ("chief", "worker")


def run_member(runner: "JobRunner", job_id: str, gang: int, role: Role, index: int) -> None:
    """Serve one member of placement ``gang`` until its part ends or the gang comes down.
    Never raises for the cluster's own troubles: the worker lives on for the next job."""
    gangs = GangStore(runner.store.engine)
    settings = runner.settings
    name = f"{role}:{index}"
    if not gangs.placement_live(job_id, gang, forming=True):
        log.info("job %s: %s of placement %d is not wanted: not running it", job_id, name, gang)
        return
    address = join(gangs, settings, job_id, gang, role, index)
    if address is None:
        log.info("job %s: %s of placement %d is taken or gone: not running it", job_id, name, gang)
        return
    log.info("job %s: %s of placement %d joined at %s", job_id, name, gang, address)
    me = Member(job_id, role, index, gang, "ready", None, None, address, None)
    logs = MemberLogs(runner.store, job_id, name)
    try:
        members = wait_formed(
            gangs,
            settings,
            job_id,
            me,
            lambda: gangs.placement_live(job_id, gang, forming=True),
            logs.flush,
        )
    except GangGone as gone:
        log.info("job %s: %s gives up: %s", job_id, name, gone)
        gangs.beat(job_id, gang, role, index, "failed")
        return
    job = runner.store.get(job_id, ANY_TENANT)
    spec = ConvertRequest.model_validate(job.spec)
    assert spec.train is not None
    assert spec.distribution is not None
    plan: dict[str, Any] = {
        "job_id": job_id,
        "role": role,
        "index": index,
        "max_steps": gang_steps(spec.train.max_steps, spec.distribution.workers),
    }
    state, code = "failed", None
    try:
        with node_files(runner, job, spec, role, index) as (model_dir, storage_root):
            plan.update(
                model_dir=str(model_dir), storage_root=storage_root, bucket=bool(storage_root)
            )
            child = MemberChild(plan, tf_config(members, role, index), logs.add).start()
            log.info("job %s: %s training as process %d", job_id, name, child.pid)
            try:
                state = _watch(gangs, runner, me, child, logs)
            finally:
                code = child.kill()
    except Exception:  # its inputs could not be fetched (the bucket is down): it fails
        log.exception("job %s: %s failed", job_id, name)
        logs.add("the member failed before its TensorFlow process ended; see the worker log")
    finally:
        logs.flush()
        gangs.beat(job_id, gang, role, index, state)  # type: ignore[arg-type]
        log.info("job %s: %s ended %s (process exit %s)", job_id, name, state, code)


@contextlib.contextmanager
def node_files(
    runner: "JobRunner", job: JobRecord, spec: ConvertRequest, role: Role, index: int
) -> Iterator[tuple[Path, str | None]]:
    """This member's model_dir and the storage root its TensorFlow process reads the
    job's inputs from (None: the storage folder every node shares).

    With bucket storage no folder is shared: the member has a scratch folder of its own on
    this node (``<job id>.<role>-<index>``: the chief's Celery process, or another member
    on the same node, holds its own), removed when it ends, and the job's uploads are
    fetched into this node's cache (a parameter server reads none)."""
    if runner.cache is None:
        yield runner._files(job).model_dir, None
        return
    runner.scratch.sweep()
    with runner.scratch.hold(f"{job.id}.{role}-{index}") as folder:
        try:
            if role != "ps":
                tenant = job.tenant or DEFAULT_TENANT
                fetch_job_inputs(runner.cache, runner.catalog, tenant, spec)
            yield folder / "model_dir", str(runner.cache.root)
        finally:
            runner.cache.release()


def _watch(
    gangs: GangStore, runner: "JobRunner", me: Member, child: MemberChild, logs: MemberLogs
) -> str:
    """Beat and watch until this member's part ends; the state its row ends in."""
    job_id, settings = me.job_id, runner.settings
    next_beat = 0.0
    while True:
        code = child.poll()
        if code is not None:
            child.join_readers()
            if code == 0:
                return "done"
            logs.add(f"TensorFlow process exited with {code}")
            return "failed"
        now = time.monotonic()
        if now >= next_beat:
            next_beat = now + BEAT_S
            gangs.beat(job_id, me.gang, me.role, me.index, "running")
            logs.flush()
            if not gangs.placement_live(job_id, me.gang):
                return _after_job(runner, job_id)
            members = gangs.members(job_id)
            lost = lost_member(members, me, settings.lease_s)
            if lost is not None:
                log.warning("job %s: %s lost: %s:%d stops", job_id, lost, me.role, me.index)
                return "lost"
            if me.role == "ps" and _training_over(members):
                return "done"
            rss = job_rss_bytes()
            if rss is not None and rss > settings.job_memory_bytes:
                # Its TensorFlow process is killed (run_member's finally); the chief
                # sees the row and ends the job out_of_memory, as on a single node.
                logs.add(
                    f"memory {rss} bytes (this member's worker and TensorFlow processes) is "
                    f"past the job memory bound K2E_JOB_MEMORY_BYTES="
                    f"{settings.job_memory_bytes}: stopping this member"
                )
                log.error("job %s: %s:%d over the job memory bound", job_id, me.role, me.index)
                return "out_of_memory"
        time.sleep(WATCH_S)


def _after_job(runner: "JobRunner", job_id: str) -> str:
    """The state of a member whose job left its placement: done when it ended, else lost."""
    status = runner.store.get(job_id, ANY_TENANT).status
    return "done" if status in TERMINAL_STATUSES else "lost"


def _training_over(members: list[Member]) -> bool:
    """Every training member (chief and workers) is done: the parameter servers are
    needed no more."""
    return all(m.state == "done" for m in members if m.role in TRAINERS)
