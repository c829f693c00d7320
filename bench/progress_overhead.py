"""Does reporting progress slow training? steps/s with and without k2e's hooks.

Trains one Estimator (the seed's multi-input/multi-output model) in alternating
rounds: bare ``estimator.train``, then the same with the ProgressHook writing
to a real SQLite job store and the lease heartbeat running, as in a worker.
Target: the median of the per-round ratios hooked/bare is at least 0.98.

    .venv/bin/python -m bench.progress_overhead
"""

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from k2e.jobs.job_store import JobStore
from k2e.settings import get_settings
from tests.support import keras_models
from worker.heartbeat import Heartbeat, RunControl
from worker.hooks import LossCurve, ProgressHook
from worker.tfrt import tf

ROUNDS = 5
STEPS = 3000


def main() -> dict:
    root = Path(tempfile.mkdtemp(prefix="k2e-progress-"))
    store = JobStore(f"sqlite:///{root / 'jobs.db'}")
    store.create_schema()
    store.create("job", {}, "cpu", str(root / "m"), None)
    store.start("job", "bench", 30)

    model = keras_models.seed_multi_io_model()
    estimator = tf.keras.estimator.model_to_estimator(
        keras_model=model,
        config=tf.estimator.RunConfig(
            model_dir=str(root / "m"),
            log_step_count_steps=100,
            save_checkpoints_secs=None,
            save_checkpoints_steps=10**9,
            save_summary_steps=100,
        ),
    )
    data = keras_models.seed_multi_io_data(n=1024)
    features = {k: data[k] for k in ("input_a", "input_b")}
    labels = {k: data[k] for k in ("dense_2", "dense_3")}

    def input_fn():
        ds = tf.data.Dataset.from_tensor_slices((features, labels)).repeat().batch(32)
        return ds.prefetch(tf.data.AUTOTUNE)

    curve = LossCurve()
    min_interval_s = get_settings().progress_min_interval_s

    def report(step: int, loss: float, rate: float | None) -> None:
        curve.add(step, loss)
        store.record_progress(
            "job", "bench", {"global_step": step, "steps_per_sec": rate}, curve.points
        )

    def bare() -> float:
        start = time.perf_counter()
        estimator.train(input_fn, steps=STEPS)
        return STEPS / (time.perf_counter() - start)

    def hooked() -> float:
        control = RunControl()
        with Heartbeat(store, "job", "bench", 30, 5.0, control):
            start = time.perf_counter()
            hooks = [ProgressHook(report, control, 100, min_interval_s=min_interval_s)]
            estimator.train(input_fn, steps=STEPS, hooks=hooks)
            return STEPS / (time.perf_counter() - start)

    estimator.train(input_fn, steps=500)  # warm-up: graph building, first checkpoint
    rates: dict[str, list[float]] = {"bare": [], "hooked": []}
    ratios = []
    for round_ in range(ROUNDS):
        # Alternate the order, and compare within a round: the machine's load drifts.
        if round_ % 2:
            h, b = hooked(), bare()
        else:
            b, h = bare(), hooked()
        rates["bare"].append(b)
        rates["hooked"].append(h)
        ratios.append(h / b)
    result = {
        "bare_steps_per_sec": statistics.median(rates["bare"]),
        "hooked_steps_per_sec": statistics.median(rates["hooked"]),
        "ratio": statistics.median(ratios),
        "rounds": ROUNDS,
        "steps_per_round": STEPS,
        "raw": {**rates, "ratios": ratios},
    }
    return result


if __name__ == "__main__":
    out = main()
    json.dump(out, sys.stdout, indent=1)
    print()
