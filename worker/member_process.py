"""One cluster member's TensorFlow, in a fresh process: ``python -m worker.member_process
'<plan JSON>'`` with TF_CONFIG in its environment (worker/member_child.py starts it).

- ``ps``: a ``tf.distribute.Server`` that serves until its parent kills it;
- ``chief``, ``worker``: ``tf.estimator.train_and_evaluate`` to ``max_steps`` (between-graph
  replication, variables on the parameter servers); the chief writes one JSON line per
  progress report on stdout (``{"step", "loss", "rate"}``);
- ``evaluator``: ``train_and_evaluate`` as the evaluator: each new checkpoint of the chief
  is evaluated, until the one at ``max_steps``.

Every member trains with an unsharded Saver on its own task (worker/cluster_saver.py): the
chief writes every checkpoint into its own model_dir. With bucket storage (``plan["bucket"]``)
the chief publishes each one to the bucket as it is saved, the evaluator copies the
bucket's newest one into its own model_dir (worker/checkpoint_follower.py), and each
member reads the job's inputs from its node's cache (``plan["storage_root"]``).

SIGTERM asks training to stop at its next step (the chief saves a checkpoint there). The
process ends itself when its parent is gone (a backstop of the parent-death signal).
"""

import contextlib
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

PARENT_POLL_S = 0.5


def _watch_parent(parent: int) -> None:
    while True:
        if os.getppid() != parent:
            os._exit(1)
        time.sleep(PARENT_POLL_S)


def _serve(tf: Any, role: str, index: int) -> None:
    cluster = json.loads(os.environ["TF_CONFIG"])["cluster"]
    server = tf.distribute.Server(tf.train.ClusterSpec(cluster), job_name=role, task_index=index)
    logging.getLogger("k2e").info("serving at %s", server.target)
    server.join()


def _train(plan: dict[str, Any], protocol: Any) -> None:
    from k2e.catalog import Catalog, recorded_sha256
    from k2e.jobs.leases import JobLeases
    from k2e.schemas import ConvertRequest
    from k2e.settings import get_settings
    from k2e.spec.checks import check_spec
    from k2e.storage import Storage
    from k2e.tenancy.bodies import DEFAULT_TENANT
    from k2e.tenancy.scope import ANY_TENANT
    from worker import builtin_objects
    from worker.estimator import build_estimator
    from worker.heartbeat import RunControl
    from worker.hooks import ProgressHook, StopHook
    from worker.phases import JobFiles, JobPhases
    from worker.tfrt import tf

    role = plan["role"]
    settings = get_settings()
    store = JobLeases(settings.sqlalchemy_url)
    job = store.get(plan["job_id"], ANY_TENANT)
    spec = ConvertRequest.model_validate(job.spec)
    assert spec.train is not None
    tenant = job.tenant or DEFAULT_TENANT
    # With bucket storage, this node's cached copy of the job's inputs (its Celery task
    # fetched them); else the storage folder every node shares.
    storage = Storage(Path(plan.get("storage_root") or settings.storage_root)).for_tenant(tenant)
    model_dir = Path(plan["model_dir"])
    # A member other than the chief needs nothing of the chief's model_dir (none is shared
    # on bucket storage): model_to_estimator saves the Keras weights and warm-starts from
    # them only when `config.is_chief` (tensorflow_estimator 2.15.0, keras_lib.py), and
    # the chief's session initializes the variables on the parameter servers, which the
    # other members' sessions wait for.
    digest = recorded_sha256(Catalog(store.engine), spec.keras_model_path, tenant)
    resolved = check_spec(spec, storage, settings, recorded_sha256=digest)
    control = RunControl()
    signal.signal(signal.SIGTERM, lambda *_: control.request_yield("stop"))
    phases = JobPhases(
        store, settings, job, "", spec, resolved, control, JobFiles(storage, model_dir)
    )
    objects = builtin_objects.resolve(spec.custom_objects, settings.plugins, resolved.custom_uses)
    with tf.keras.utils.custom_object_scope(objects):
        built = build_estimator(
            spec, resolved, settings, model_dir, objects, plan.get("warm_start"), True
        )
        train_input = phases.train_input()
        eval_input = phases.eval_input() if spec.eval is not None else train_input
        hooks: list[Any] = [StopHook(control)]
        if role == "chief":

            def report(step: int, loss: float, rate: float | None) -> None:
                protocol.write(json.dumps({"step": step, "loss": loss, "rate": rate}) + "\n")
                protocol.flush()

            every = spec.config.log_step_count_steps if spec.config else 100
            hooks = [
                ProgressHook(
                    report, control, every, min_interval_s=settings.progress_min_interval_s
                )
            ]
        stored = job.model_dir
        # Training's end, however it ends, waits for the checkpoints queued for the bucket.
        with bucket_checkpoints(plan, settings, tenant, stored, model_dir) as listeners:
            tf.estimator.train_and_evaluate(
                built.estimator,
                tf.estimator.TrainSpec(
                    train_input,
                    max_steps=plan["max_steps"],
                    hooks=hooks,
                    saving_listeners=listeners or None,
                ),
                tf.estimator.EvalSpec(
                    eval_input,
                    steps=spec.eval.steps if spec.eval is not None else 1,
                    hooks=[StopHook(control)],
                    start_delay_secs=0,
                    throttle_secs=1,
                ),
            )


@contextlib.contextmanager
def bucket_checkpoints(
    plan: dict[str, Any], settings: Any, tenant: str, stored: str, model_dir: Path
) -> Iterator[list[Any]]:
    """The saving listeners of this member's training. With bucket storage: the chief's
    CheckpointPublisher (each checkpoint it writes in its scratch model_dir goes to the
    job's model_dir in the bucket as it is saved; a new placement starts from there,
    and the block's end waits for the uploads); for the evaluator, a CheckpointFollower
    that copies the bucket's newest checkpoint into its own model_dir while the block
    runs. Nothing otherwise (the model_dir is the folder every node shares)."""
    if not plan.get("bucket") or plan["role"] not in ("chief", "evaluator"):
        yield []
        return
    from k2e.blobstore import blob_store
    from worker.sync import BucketDir, CheckpointPublisher

    bucket = BucketDir(blob_store(settings), tenant, stored)
    if plan["role"] == "chief":
        with CheckpointPublisher(bucket, model_dir) as publisher:
            yield [publisher]
        return
    from worker.checkpoint_follower import CheckpointFollower

    follower = CheckpointFollower(bucket, model_dir).start()
    try:
        yield []
    finally:
        follower.stop()


def main(argv: list[str]) -> int:
    plan = json.loads(argv[1])
    threading.Thread(target=_watch_parent, args=(plan["parent"],), daemon=True).start()
    # stdout carries the progress lines alone: anything else printed goes to stderr.
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
    )
    from worker.tfrt import tf

    if plan["role"] == "ps":
        _serve(tf, plan["role"], plan["index"])
    else:
        _train(plan, protocol)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
