"""Do JSON logs and traces slow training? steps/s with them on and off.

Trains one Estimator (the seed's multi-input/multi-output model) in alternating rounds,
each as a worker runs a job's training phase: the job's log capture
(worker/joblog.py) on the `k2e` and `tensorflow` loggers, flushed to a real SQLite job
store, and the process's own log handler writing to a file.

- off: today's defaults: text lines, tracing off.
- json: K2E_LOG_FORMAT=json alone (to tell the two costs apart).
- on: K2E_LOG_FORMAT=json (the worker's JSON handler and a JSON capture, with the job's
  fields bound) and tracing on (k2e.tracing with a trace file: each round is a `job`
  span with a `training` phase span, as worker/tasks.py and worker/phases.py record them).

Target: the median of the per-round ratios on/off is at least 0.98. Also measured: the
CPU cost of one log line through the process's handler and the job's capture, text and
JSON (``line_us``): what the logs can cost at most, given the lines a round writes.

    .venv/bin/python -m bench.observability [--rounds N]   # alone on the machine
"""

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from k2e import logs, tracing
from k2e.jobs.job_store import NewJob
from k2e.jobs.leases import JobLeases
from k2e.settings import Settings
from tests.support import keras_models
from worker.joblog import JobLogCapture
from worker.tfrt import tf

STEPS = 4000


class _NoStore:
    def log_many(self, job_id: str, lines: list[str]) -> None:
        return None


def line_us(log_format: Literal["text", "json"], lines: int = 20000) -> float:
    """Microseconds of CPU per TensorFlow-like log line, as a worker handles it."""
    logger = logging.getLogger("k2e.bench.lines")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    out = open(os.devnull, "w")  # noqa: SIM115 - closed below
    handler: logging.Handler = logs.JsonHandler(out)
    if log_format == "text":
        handler = logging.StreamHandler(out)
        handler.setFormatter(logs.formatter("text"))
    logger.addHandler(handler)
    capture = JobLogCapture(_NoStore(), "job", log_format)  # type: ignore[arg-type]
    logger.addHandler(capture)
    logs.bind_process(job_id="job", request_id="bench-request", tenant="bench")
    try:
        start = time.process_time()
        for step in range(lines):
            logger.info("loss = %s, step = %d (%.3f sec)", 0.4683213, step, 0.037)
        return (time.process_time() - start) / lines * 1e6
    finally:
        logs.bind_process(job_id=None, request_id=None, tenant=None)
        logger.removeHandler(handler)
        logger.removeHandler(capture)
        out.close()


def main(rounds: int) -> dict:
    root = Path(tempfile.mkdtemp(prefix="k2e-observability-"))
    store = JobLeases(f"sqlite:///{root / 'jobs.db'}")
    store.create_schema()
    store.create(NewJob("job", "bench", {}, "cpu", "m", STEPS))
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

    def input_fn():  # noqa: ANN202
        ds = tf.data.Dataset.from_tensor_slices((features, labels)).repeat().batch(32)
        return ds.prefetch(tf.data.AUTOTUNE)

    root_logger = logging.getLogger()
    root_logger.setLevel(logging.INFO)
    text_out = (root / "text.log").open("a")
    json_out = (root / "json.log").open("a")

    def timed(handler: logging.Handler, capture: JobLogCapture) -> float:
        root_logger.addHandler(handler)
        try:
            with capture:
                start = time.perf_counter()
                estimator.train(input_fn, steps=STEPS)
                return STEPS / (time.perf_counter() - start)
        finally:
            root_logger.removeHandler(handler)

    def off() -> float:
        handler = logging.StreamHandler(text_out)
        handler.setFormatter(logs.formatter("text"))
        return timed(handler, JobLogCapture(store, "job", "text"))

    def json_only() -> float:
        logs.bind_process(job_id="job", request_id="bench-request", tenant="bench")
        try:
            return timed(logs.JsonHandler(json_out), JobLogCapture(store, "job", "json"))
        finally:
            logs.bind_process(job_id=None, request_id=None, tenant=None)

    def on() -> float:
        tracing.setup(Settings(trace_file=root / "spans.jsonl"), "worker")
        logs.bind_process(job_id="job", request_id="bench-request", tenant="bench")
        try:
            with tracing.span("job", job_id="job"):
                phase = tracing.start("training", job_id="job")
                try:
                    return timed(logs.JsonHandler(json_out), JobLogCapture(store, "job", "json"))
                finally:
                    if phase is not None:
                        phase.end()
        finally:
            logs.bind_process(job_id=None, request_id=None, tenant=None)
            tracing.shutdown()

    estimator.train(input_fn, steps=500)  # warm-up: graph building, first checkpoint
    modes: dict[str, Callable[[], float]] = {"off": off, "json": json_only, "on": on}
    rates: dict[str, list[float]] = {name: [] for name in modes}
    ratios: dict[str, list[float]] = {"on": [], "json": []}
    names = list(modes)
    for round_ in range(rounds):
        # Rotate the order (a b c, b c a, c a b), and compare within a round: the
        # machine's load drifts.
        order = names[round_ % 3 :] + names[: round_ % 3]
        measured = {name: modes[name]() for name in order}
        for name, rate in measured.items():
            rates[name].append(rate)
        for name in ratios:
            ratios[name].append(measured[name] / measured["off"])
    spans = (root / "spans.jsonl").read_text().splitlines()
    json_lines = (root / "json.log").read_text().splitlines()
    return {
        "off_steps_per_sec": statistics.median(rates["off"]),
        "json_steps_per_sec": statistics.median(rates["json"]),
        "on_steps_per_sec": statistics.median(rates["on"]),
        "ratio": statistics.median(ratios["on"]),
        "ratio_json_logs_only": statistics.median(ratios["json"]),
        "rounds": rounds,
        "steps_per_round": STEPS,
        "json_lines_written": len(json_lines),
        "spans_written": len(spans),
        "line_us": {"text": line_us("text"), "json": line_us("json")},
        "raw": {**rates, "ratios": ratios["on"], "ratios_json_logs_only": ratios["json"]},
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    out = main(parser.parse_args().rounds)
    json.dump(out, sys.stdout, indent=1)
    print()
