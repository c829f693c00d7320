"""Training steps/s of the seed workload in one process, with k2e's pieces added one at
a time, alternating: (direct) bench/direct.py's model and input; (h5) the model as the
worker builds it, loaded from HDF5 and compiled by worker/model_building.py; (input) the
worker's input pipeline (worker/inputs.py) on the uploaded npz; (hook) k2e's ProgressHook;
(log) TensorFlow's logger at INFO into a buffering handler, as the worker's job-log
capture sets it. Each run is timed from its 300th step to its last (session start and
checkpoint set-up left out), in wall time and in the training thread's CPU time.
Cited in RESULTS.md's throughput analysis; not part of `make bench`.

    python -m bench.training_gap [ROUNDS]
"""

import logging
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
from bench.direct import k2e_hooks  # noqa: E402
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
from k2e.schemas import ConvertRequest, DatasetInfo, TensorInfo  # noqa: E402
from k2e.settings import get_settings  # noqa: E402
from k2e.vetting.inspection import inspect_h5  # noqa: E402
from worker.inputs import Batching, input_fn_for  # noqa: E402
from worker.model_building import build_keras_model  # noqa: E402

INPUTS, OUTPUTS = ("input_a", "input_b"), ("dense_2", "dense_3")
SKIP = 300  # steps before the timer starts
CASES = ("direct", "h5", "input", "hook", "log")


class Timer(tf.compat.v1.train.SessionRunHook):
    """Wall and thread CPU seconds from step SKIP to the last step."""

    def begin(self) -> None:
        self.steps = 0
        self.start: tuple[float, float] | None = None

    def after_run(self, run_context: Any, run_values: Any) -> None:
        self.steps += 1
        now = (time.perf_counter(), time.thread_time())
        if self.steps == SKIP:
            self.start = now
        self.last = now

    def rates(self) -> tuple[float, float]:
        assert self.start is not None
        steps = self.steps - SKIP
        return steps / (self.last[0] - self.start[0]), (self.last[1] - self.start[1]) / steps


class Buffer(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


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
    h5 = scratch / "seed.h5"
    seed_multi_io_model().save(str(h5), save_format="h5")
    compile_args = inspect_h5(h5).compile_args
    spec = ConvertRequest.model_validate({"keras_model_path": "seed.h5"})

    def tensor(name: str) -> TensorInfo:
        return TensorInfo(name=name, shape=[None, *arrays[name].shape[1:]])

    settings = get_settings()

    def worker_input() -> Any:
        batching = Batching(BATCH_SIZE, training=True, shuffle=True, cache_bytes=256 * 1024**2)
        ins, outs = [tensor(n) for n in INPUTS], [tensor(n) for n in OUTPUTS]
        return input_fn_for(info, npz, ins, outs, batching, ReadLimits.from_settings(settings))

    def run(case: str) -> tuple[float, float]:
        k = CASES.index(case)
        tf.keras.backend.clear_session()
        model = build_keras_model(spec, h5, compile_args) if k >= 1 else seed_multi_io_model()
        config = tf.estimator.RunConfig(model_dir=tempfile.mkdtemp(dir=scratch), **RUN_CONFIG)
        estimator = tf.keras.estimator.model_to_estimator(
            keras_model=model, config=config, metric_names_map=METRIC_NAMES_MAP
        )
        input_fn = worker_input() if k >= 2 else direct_input(arrays, training=True)
        timer = Timer()
        hooks = (k2e_hooks() if k >= 3 else []) + [timer]
        logger, handler = logging.getLogger("tensorflow"), Buffer()
        if k >= 4:
            logger.setLevel(logging.INFO)
            logger.addHandler(handler)
        try:
            estimator.train(input_fn, max_steps=STEPS, hooks=hooks)
        finally:
            logger.removeHandler(handler)
            logger.setLevel(logging.ERROR)
        return timer.rates()

    run("direct")  # warm-up
    results: dict[str, list[tuple[float, float]]] = {case: [] for case in CASES}
    for i in range(rounds):
        order = CASES[i % len(CASES) :] + CASES[: i % len(CASES)]
        for case in order:
            rate, cpu = run(case)
            results[case].append((rate, cpu))
            print(f"round {i} {case:7s} {rate:6.0f} steps/s {cpu * 1e3:.3f} ms CPU", flush=True)
    print("case     median steps/s  / direct  median thread CPU per step")
    base = statistics.median(r for r, _ in results["direct"])
    for case, values in results.items():
        rate = statistics.median(r for r, _ in values)
        cpu = statistics.median(c for _, c in values)
        print(f"{case:7s}  {rate:14.0f}  {rate / base:8.3f}  {cpu * 1e3:.3f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
