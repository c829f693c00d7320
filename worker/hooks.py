"""Training hooks: progress into the job record; stopping on cancel, timeout or lost lease."""

import time
from collections.abc import Callable
from typing import Any

from worker.heartbeat import RunControl
from worker.tfrt import tf

MAX_CURVE_POINTS = 500


class LossCurve:
    """The train loss curve, bounded: when full, every other old point is dropped; one
    point per step, in step order."""

    def __init__(self, limit: int = MAX_CURVE_POINTS) -> None:
        self.limit = limit
        self.points: list[dict[str, Any]] = []

    def add(self, step: int, loss: float) -> None:
        # Points past ``step`` are of steps trained again from an older checkpoint (the
        # previous attempt's worker died after reporting them): the new ones replace them.
        while self.points and self.points[-1]["step"] > step:
            self.points.pop()
        if self.points and self.points[-1]["step"] == step:
            return
        self.points.append({"step": step, "loss": loss})
        if len(self.points) > self.limit:
            self.points = self.points[:-1:2] + self.points[-1:]


class ProgressHook(tf.compat.v1.train.SessionRunHook):
    """Reports ``global_step`` and the loss every ``every_steps`` steps or ``every_secs``
    seconds, whichever comes first, but never twice within ``min_interval_s`` seconds
    (K2E_PROGRESS_MIN_INTERVAL_S: each report is a write to the job store, and
    ``log_step_count_steps: 1`` must not write every step); asks training to stop as soon
    as ``control`` says so (checked every step, without a fetch or a store read; the
    Estimator then saves a final checkpoint)."""

    def __init__(
        self,
        report: Callable[[int, float, float | None], None],
        control: RunControl,
        every_steps: int,
        every_secs: float = 2.0,
        *,
        min_interval_s: float,
    ) -> None:
        self._min_interval_s = min_interval_s
        self._report = report
        self._control = control
        self._every_steps = every_steps
        self._every_secs = every_secs
        self.stopped = False

    def begin(self) -> None:
        self._global_step = tf.compat.v1.train.get_global_step()
        # The Estimator appends the model_fn's loss to LOSSES last.
        self._loss = tf.compat.v1.get_collection(tf.compat.v1.GraphKeys.LOSSES)[-1]
        self._last_step: int | None = None
        self._last_time = time.monotonic()
        self._steps_since = 0
        self._rate_step: int | None = None
        self._rate_time = self._last_time

    def _due(self) -> bool:
        # Decided without a fetch: most steps ask the session for nothing extra.
        if self._last_step is None:
            return True
        since = time.monotonic() - self._last_time
        if since < self._min_interval_s:
            return False
        return self._steps_since + 1 >= self._every_steps or since >= self._every_secs

    def before_run(self, run_context: Any) -> Any:
        if self._due():
            return tf.compat.v1.train.SessionRunArgs([self._global_step, self._loss])
        return None

    def after_run(self, run_context: Any, run_values: Any) -> None:
        if self._control.should_stop():
            self.stopped = True
            run_context.request_stop()
        if run_values.results is None:
            self._steps_since += 1
            return
        step, loss = run_values.results
        # The fetched step is read alongside the update: this run ends at step + 1.
        step = int(step) + 1
        now = time.monotonic()
        rate = None
        if self._rate_step is not None and now > self._rate_time:
            rate = (step - self._rate_step) / (now - self._rate_time)
        self._rate_step, self._rate_time = step, now
        self._last_step, self._last_time = step, now
        self._steps_since = 0
        self._report(step, float(loss), rate)


class StopHook(tf.compat.v1.train.SessionRunHook):
    """Ends evaluation (or any loop) at its next step once the job must stop."""

    def __init__(self, control: RunControl) -> None:
        self._control = control

    def after_run(self, run_context: Any, run_values: Any) -> None:
        if self._control.must_stop():
            run_context.request_stop()
