"""A cluster job's chief: the normal job task (it holds the job's lease) whose training
phase is the gang's. It joins its ``chief:0`` row, waits for the gang, runs its own
TensorFlow process to ``max_steps`` (feeding its progress lines to the job), and watches
the members; the phases after training (evaluation, export) run as for any job.

With bucket storage no folder is shared: the chief's TensorFlow process trains in this
attempt's scratch model_dir (the bucket's newest checkpoints restored into it as the
attempt started), writes every checkpoint itself (worker/cluster_saver.py) and publishes
each one to the bucket as it is saved; each other member reads the job's inputs from its
own node's cache, and the evaluator the chief's checkpoints from the bucket
(worker/cluster_member.py, worker/checkpoint_follower.py).

How a placement ends when it does not train to the end:

- it is not the job's newest, or did not form in time (GangGone): the job waits for a new
  placement, like a yield (the attempt is given back);
- a member is lost or fails, or the chief's own process dies (ClusterDown): the job waits
  for a new placement and the attempt counts (K2E_MAX_ATTEMPTS bounds the placements);
- a cancel, timeout, suspend or preemption (RunControl): the chief's process stops at its
  next step with a checkpoint, and the job ends or yields as a single-node job does; the
  members see the job leave their placement and stop.
"""

import logging
import time
from typing import TYPE_CHECKING, Any

from k2e.jobs.gangs import GangStore, Member, tf_config
from k2e.jobs.records import JobRecord
from k2e.schemas import JobStatus
from k2e.tenancy.scope import ANY_TENANT
from worker.estimator import JobEstimator
from worker.gang_watch import (
    BEAT_S,
    WATCH_S,
    ClusterDown,
    GangGone,
    MemberLogs,
    gang_steps,
    join,
    lost_member,
    wait_formed,
)
from worker.heartbeat import RunControl
from worker.member_child import MemberChild
from worker.phases import JobPhases, checkpoint_step

if TYPE_CHECKING:
    from worker.training import JobRunner

log = logging.getLogger("k2e.worker")
CHIEF = "chief:0"


def trains_on_cluster(spec: Any) -> bool:
    """A job whose spec asks for more than one member trains on a gang."""
    return spec.distribution is not None and spec.distribution.size > 1


class ChiefCluster:
    def __init__(self, runner: "JobRunner", phases: JobPhases, control: RunControl) -> None:
        self.runner, self.phases, self.control = runner, phases, control
        self.job = phases.job
        self.gangs = GangStore(runner.store.engine)

    def train(self, built: JobEstimator) -> None:
        """Train on the gang to max_steps, or until the job must stop; raises GangGone or
        ClusterDown when the placement cannot go on."""
        job_id, settings = self.job.id, self.runner.settings
        files = self.phases.files
        train, shape = self.phases.spec.train, self.phases.spec.distribution
        assert train is not None
        assert shape is not None
        target = gang_steps(train.max_steps, shape.workers)
        reached = checkpoint_step(built.newest_checkpoint())
        if reached >= target:
            log.info("job %s: at step %d, past the gang's part (%d)", job_id, reached, target)
            return
        gang = self.gangs.gang_of(job_id)
        if gang is None or join(self.gangs, settings, job_id, gang, "chief", 0) is None:
            raise GangGone(f"placement {gang} of the job is not there for its chief")
        me = Member(job_id, "chief", 0, gang, "ready", None, None, None, None)
        logs = MemberLogs(self.runner.store, job_id, CHIEF)
        members = wait_formed(
            self.gangs,
            settings,
            job_id,
            me,
            lambda: not self.control.must_stop() and self.gangs.placement_live(job_id, gang),
            logs.flush,
        )
        log.info("job %s: gang %d formed: %s", job_id, gang, _addresses(members))
        report = self.phases.progress_report(train.max_steps)
        plan = {
            "job_id": job_id,
            "role": "chief",
            "index": 0,
            "model_dir": str(files.model_dir),
            "warm_start": self.phases.warm_start_checkpoint,
            "max_steps": target,
        }
        if files.bucket is not None:
            # The chief's process trains in this attempt's scratch model_dir (restored
            # from the bucket's checkpoints as the attempt started) and publishes each
            # checkpoint it writes; the uploads are read from this node's cache.
            plan.update(bucket=True, storage_root=str(files.storage.base))
        child = MemberChild(
            plan,
            tf_config(members, "chief", 0),
            logs.add,
            lambda line: report(int(line["step"]), float(line["loss"]), line.get("rate")),
        ).start()
        log.info("job %s: chief training as process %d", job_id, child.pid)
        try:
            self._watch(me, child, logs)
        finally:
            child.kill()
            logs.flush()

    def _watch(self, me: Member, child: MemberChild, logs: MemberLogs) -> None:
        settings, control = self.runner.settings, self.control
        next_beat = 0.0
        while (code := child.poll()) is None:
            if control.should_stop():
                child.terminate()  # it saves a checkpoint at its next step
                if child.overdue(2 * settings.job_stop_grace_s):
                    child.kill()
            now = time.monotonic()
            if now >= next_beat:
                next_beat = now + BEAT_S
                self.gangs.beat(me.job_id, me.gang, "chief", 0, "running")
                logs.flush()
                members = self.gangs.members(me.job_id)
                over = [m for m in members if m.gang == me.gang and m.state == "out_of_memory"]
                if over and not control.out_of_memory.is_set():
                    log.error("job %s: %s is past the job memory bound", me.job_id, over[0].name)
                    control.out_of_memory_in = over[0].name
                    control.out_of_memory.set()  # the job ends as a single-node job does
                lost = lost_member(members, me, settings.lease_s)
                if lost is not None and not control.should_stop():
                    child.kill()
                    raise ClusterDown(f"{lost} was lost")
            time.sleep(WATCH_S)
        child.join_readers()
        if control.should_stop():
            return
        if code != 0:
            raise ClusterDown(f"the chief's TensorFlow exited with {code}: {logs.last}")
        self.gangs.beat(me.job_id, me.gang, "chief", 0, "done")


def end_placement(
    runner: "JobRunner", job: JobRecord, owner: str, end: BaseException, step: int
) -> None:
    """Give the job back to the scheduler for a new placement after ``end`` (GangGone or
    ClusterDown), its newest checkpoint at ``step``."""
    store = runner.store
    if isinstance(end, GangGone):
        log.info("job %s: %s; waiting for a new placement", job.id, end)
        store.log_many(job.id, [f"cluster: {end}"])
        runner._release(job, owner, step)
        return
    gangs = GangStore(store.engine)
    gang = gangs.gang_of(job.id) or 0
    note = f"cluster down: {end}; placed again, from step {step}"
    log.warning("job %s: gang %d: %s", job.id, gang, note)
    if gangs.bring_down(job.id, gang, owner, note):
        if store.notifier is not None:
            store.notifier.notify(job.id)
        runner._pump(job, every_tenant=True)
        return
    current = store.get(job.id, ANY_TENANT)
    if current.status is JobStatus.cancelling:  # a cancel came first: it wins
        store.finish(job.id, JobStatus.cancelled, owner)


def _addresses(members: list[Member]) -> str:
    return ", ".join(f"{m.name}={m.address}" for m in members)
