"""A job's run recorded in its provenance, with TensorFlow's op determinism on for the
jobs that ask for it (``spec.deterministic``) and off again for the next.

Op determinism is a process-wide switch and a worker process runs job after job: it is
turned on for one job's phases and off when they end, however they end. A job says it
ran deterministically only when the switch was on for it.
"""

import logging
import os
import platform
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib import metadata
from typing import TypeVar

from k2e.jobs.leases import JobLeases
from k2e.jobs.provenance import record_run
from k2e.jobs.records import JobRecord
from k2e.plan_schemas import Provenance, WorkerInfo
from k2e.schemas import ConvertRequest
from k2e.version import __version__
from worker.tfrt import tf, tf_config

log = logging.getLogger("k2e.worker")
T = TypeVar("T")


def versions() -> dict[str, str]:
    """What made the job's numbers: k2e's, TensorFlow's, the Estimator's and Python's."""
    return {
        "k2e": __version__,
        "tensorflow": tf.__version__,
        "tensorflow_estimator": metadata.version("tensorflow-estimator"),
        "python": platform.python_version(),
    }


@contextmanager
def op_determinism(enabled: bool) -> Iterator[bool]:
    """Op determinism on while the block runs when ``enabled``, off otherwise; yields
    whether it is on (read back from TensorFlow, not assumed)."""
    if enabled:
        tf_config.enable_op_determinism()
    elif tf_config.is_op_determinism_enabled():
        tf_config.disable_op_determinism()
    try:
        yield bool(tf_config.is_op_determinism_enabled())
    finally:
        tf_config.disable_op_determinism()


def run_recorded(
    store: JobLeases, job: JobRecord, owner: str, spec: ConvertRequest, run: Callable[[], T]
) -> T:
    """``run()`` the job's phases with its determinism, its provenance recorded first."""
    with op_determinism(spec.deterministic) as deterministic:
        recorded = job.provenance or Provenance(model_sha256="")
        provenance = recorded.model_copy(
            update={
                "versions": versions(),
                "deterministic": deterministic,
                "worker": WorkerInfo(node=socket.gethostname(), process=os.getpid()),
            }
        )
        record_run(store.engine, job.id, owner, provenance)
        state = "on" if deterministic else "off"
        log.info("job %s: op determinism %s, seeds %s", job.id, state, provenance.seeds)
        return run()
