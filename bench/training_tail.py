"""The end of Estimator.train for the seed workload, in one process, cases alternating:
(direct) bench/direct.py's input; (worker) the worker's input pipeline
(worker/inputs.py, tf.data's autotuning off); (autotune) the same pipeline with
autotuning on, as the worker had it before; (direct-off) bench/direct.py's input with
autotuning off.

Per run: train()'s wall time, the time to its first step, and its tail: from the last
step's end to train() returning (the last checkpoint's save, the hooks' end, the
session's close: with autotuning on, the close waited about 1 s in one run of two).
Not part of `make bench`.

    python -m bench.training_tail [ROUNDS]
"""

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

import tensorflow as tf  # noqa: E402

from bench.direct import input_fn_for as direct_input  # noqa: E402
from bench.workload import (  # noqa: E402
    BATCH_SIZE,
    METRIC_NAMES_MAP,
    RUN_CONFIG,
    STEPS,
    seed_multi_io_data,
    write_npz,
)
from k2e.examples.seed_models import seed_multi_io_model  # noqa: E402
from k2e.formats.npz import inspect_npz  # noqa: E402
from k2e.formats.read_limits import ReadLimits  # noqa: E402
from k2e.schemas import DatasetInfo, TensorInfo  # noqa: E402
from worker.inputs import Batching, input_fn_for  # noqa: E402

INPUTS, OUTPUTS = ("input_a", "input_b"), ("dense_2", "dense_3")
CASES = ("direct", "worker", "autotune", "direct-off")
SKIP = 300  # steps before the rate is timed
CACHE_BYTES = 256 * 1024**2  # K2E_DATASET_CACHE_BYTES' default


class Marks(tf.compat.v1.train.SessionRunHook):
    """The first and the last step's end, and the steps/s from step SKIP on."""

    def begin(self) -> None:
        self.first: float | None = None
        self.last = 0.0
        self.steps = 0
        self.skipped = 0.0

    def after_run(self, run_context: Any, run_values: Any) -> None:
        self.last = time.perf_counter()
        self.first = self.first or self.last
        self.steps += 1
        if self.steps == SKIP:
            self.skipped = self.last

    def rate(self) -> float:
        return (self.steps - SKIP) / (self.last - self.skipped)


def autotune(input_fn: Any, enabled: bool) -> Any:
    def wrapped() -> Any:
        options = tf.data.Options()
        options.autotune.enabled = enabled
        return input_fn().with_options(options)

    return wrapped


def main() -> int:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 4
    tf.get_logger().setLevel("ERROR")
    scratch = Path(tempfile.mkdtemp())
    arrays = seed_multi_io_data()
    npz = write_npz(scratch / "seed.npz", arrays)
    s = inspect_npz(npz)
    info = DatasetInfo(
        id="seed", format="npz", num_examples=s.num_examples, arrays=s.arrays, dtypes=s.dtypes
    )

    def tensor(name: str) -> TensorInfo:
        return TensorInfo(name=name, shape=[None, *arrays[name].shape[1:]])

    def input_for(case: str) -> Any:
        if case.startswith("direct"):
            direct = direct_input(arrays, training=True)
            return autotune(direct, False) if case == "direct-off" else direct
        batching = Batching(BATCH_SIZE, training=True, shuffle=True, cache_bytes=CACHE_BYTES)
        ins, outs = [tensor(n) for n in INPUTS], [tensor(n) for n in OUTPUTS]
        worker = input_fn_for(info, npz, ins, outs, batching, ReadLimits())
        return autotune(worker, True) if case == "autotune" else worker

    def run(case: str) -> tuple[float, float, float, float]:
        tf.keras.backend.clear_session()
        config = tf.estimator.RunConfig(model_dir=tempfile.mkdtemp(dir=scratch), **RUN_CONFIG)
        estimator = tf.keras.estimator.model_to_estimator(
            keras_model=seed_multi_io_model(), config=config, metric_names_map=METRIC_NAMES_MAP
        )
        marks = Marks()
        started = time.perf_counter()
        estimator.train(input_for(case), max_steps=STEPS, hooks=[marks])
        ended = time.perf_counter()
        assert marks.first is not None
        return ended - started, marks.first - started, ended - marks.last, marks.rate()

    run("direct")  # warm-up
    results: dict[str, list[tuple[float, float, float, float]]] = {case: [] for case in CASES}
    for i in range(rounds):
        for case in CASES[i % len(CASES) :] + CASES[: i % len(CASES)]:
            r = run(case)
            results[case].append(r)
            print(
                f"round {i} {case:10s} train {r[0]:.3f} s, first step {r[1]:.3f} s, "
                f"tail {r[2]:.3f} s, {r[3]:.0f} steps/s",
                flush=True,
            )
    print("case        median train  first step  tail (s)  steps/s   tails")
    for case, values in results.items():
        med = [statistics.median(v[k] for v in values) for k in range(4)]
        tails = " ".join(f"{v[2]:.2f}" for v in values)
        print(f"{case:10s}  {med[0]:12.3f}  {med[1]:10.3f}  {med[2]:8.3f}  {med[3]:7.0f}   {tails}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
