"""One cluster member's TensorFlow, in a fresh process: ``python -m worker.member_process
'<plan JSON>'`` with TF_CONFIG in its environment (worker/member_child.py starts it).

- ``ps``: a ``tf.distribute.Server`` that serves until its parent kills it;
- ``chief``, ``worker``: ``tf.estimator.train_and_evaluate`` to ``max_steps`` (between-graph
  replication, variables on the parameter servers); the chief writes one JSON line per
  progress report on stdout (``{"step", "loss", "rate"}``);
- ``evaluator``: ``train_and_evaluate`` as the evaluator: each new checkpoint of the chief
  is evaluated, until the one at ``max_steps``.

SIGTERM asks training to stop at its next step (the chief saves a checkpoint there). The
process ends itself when its parent is gone (a backstop of the parent-death signal).
"""

import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

PARENT_POLL_S = 0.5
KERAS_CHECKPOINT_WAIT_S = 60.0


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
    from worker.estimator import KERAS_CHECKPOINT, build_estimator
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
    storage = Storage(settings.storage_root).for_tenant(tenant)
    model_dir = Path(plan["model_dir"])
    if role != "chief":
        # The chief's process converted the model first: its Keras weights checkpoint is
        # there, and no two members write it at once.
        _wait_for(model_dir / KERAS_CHECKPOINT.parent / "checkpoint")
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
            spec, resolved, settings, model_dir, objects, plan.get("warm_start")
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
        tf.estimator.train_and_evaluate(
            built.estimator,
            tf.estimator.TrainSpec(train_input, max_steps=plan["max_steps"], hooks=hooks),
            tf.estimator.EvalSpec(
                eval_input,
                steps=spec.eval.steps if spec.eval is not None else 1,
                hooks=[StopHook(control)],
                start_delay_secs=0,
                throttle_secs=1,
            ),
        )


def _wait_for(path: Path) -> None:
    deadline = time.monotonic() + KERAS_CHECKPOINT_WAIT_S
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.2)


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
