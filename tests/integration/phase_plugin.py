"""A test-only custom-object plugin (manifest: phase_plugin.json, through K2E_PLUGINS)
that the worker imports like any operator's plugin when a job maps one of its layers.

- ``Jitter`` adds uniform noise in [0, 1) to its input on every run, in training and in
  inference alike: the Estimator's own predictions and the exported SavedModel's differ
  by far more than the export tolerance, so the worker meets a verification mismatch.
- ``PausePoint`` is an identity layer. Importing this module (the worker does, while the
  job is building its model) adds a handler to the worker's log that pauses the job's
  thread at the start of the phase named in ``$K2E_TEST_PAUSE_DIR/pause``; building the
  model pauses in the layer's constructor (Keras builds the model there). The file holds
  ``<phase>\\n<until>``; ``until`` is ``interrupted`` (the job's thread waits in Python
  code, as a long load does, until the heartbeat interrupts it), ``cancelling`` (it
  waits until the job store says the job is cancelling, then goes on) or ``yielding``
  (it waits until the worker has heard of a yield request, then goes on to the next
  stop check). A pause is taken once: the file is renamed to ``paused`` and holds
  ``<job id> <phase>``.
"""

import logging
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import tensorflow as tf

PAUSE_LIMIT_S = 60.0
PHASE_LINE = re.compile(r"^job (\S+): ([a-z ]+)$")


def _pause_dir() -> Path | None:
    folder = os.environ.get("K2E_TEST_PAUSE_DIR")
    return Path(folder) if folder else None


def pause_if_asked(job_id: str, phase: str) -> None:
    folder = _pause_dir()
    if folder is None:
        return
    asked = folder / "pause"
    try:
        target, until = asked.read_text().split("\n")[:2]
    except (OSError, ValueError):
        return
    if target != phase:
        return
    taken = folder / "taken"
    try:
        os.rename(asked, taken)  # once: a second reader finds no file
    except OSError:
        return
    taken.write_text(f"{job_id} {phase}")
    os.rename(taken, folder / "paused")
    control = _current_control()
    end = time.monotonic() + PAUSE_LIMIT_S
    while time.monotonic() < end:
        if until == "cancelling" and _status(job_id) == "cancelling":
            return
        if until == "yielding" and control is not None and control.yield_requested.is_set():
            return
        time.sleep(0.05)


def _status(job_id: str) -> str:
    from k2e.jobs.job_store import JobStore
    from k2e.tenancy.scope import ANY_TENANT

    store = JobStore(os.environ["DATABASE_URL"])
    try:
        return store.get(job_id, ANY_TENANT).status.value
    finally:
        store.engine.dispose()


def _current_job() -> tuple[str, str] | None:
    """(job id, phase) of the JobPhases running in this thread's stack, if any."""
    frame = sys._getframe(1)
    while frame is not None:
        owner = frame.f_locals.get("self")
        if type(owner).__name__ == "JobPhases":
            return owner.job.id, owner.control.phase
        frame = frame.f_back  # type: ignore[assignment]
    return None


def _current_control() -> Any:
    """The RunControl of the JobPhases running in this thread's stack, if any."""
    frame = sys._getframe(1)
    while frame is not None:
        owner = frame.f_locals.get("self")
        if type(owner).__name__ == "JobPhases":
            return owner.control
        frame = frame.f_back  # type: ignore[assignment]
    return None


class _PhaseLines(logging.Handler):
    def handle(self, record: logging.LogRecord) -> bool:
        # Without the handler's lock: while a job's thread is held here, the heartbeat
        # thread must still log (it says when it sees the cancel).
        self.emit(record)
        return True

    def emit(self, record: logging.LogRecord) -> None:
        found = PHASE_LINE.match(record.getMessage())
        if found:
            pause_if_asked(found.group(1), found.group(2))


class PausePoint(tf.keras.layers.Layer):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        current = _current_job()
        if current is not None:
            pause_if_asked(*current)

    def call(self, inputs: Any) -> Any:
        return tf.identity(inputs)


class Jitter(tf.keras.layers.Layer):
    def call(self, inputs: Any) -> Any:
        # Seeded by the clock, not the graph: a job's tf_random_seed (always set, k2e
        # chooses one) would give the Estimator and the export the same draws.
        micros = tf.cast(tf.timestamp() * 1e6, tf.int64)
        seed = tf.stack([micros % 2_147_483_647, micros // 2_147_483_647])
        noise = tf.random.stateless_uniform(tf.shape(inputs), seed=seed, dtype=inputs.dtype)
        return inputs + noise


if _pause_dir() is not None and not any(
    isinstance(h, _PhaseLines) for h in logging.getLogger("k2e.worker").handlers
):
    logging.getLogger("k2e.worker").addHandler(_PhaseLines())
