"""The worker's input pipeline read alone against bench/direct.py's: 2000 batches of the
seed data (batch 32, shuffled, repeated) pulled through a session, alternating, 2 rounds.
Cited in RESULTS.md's throughput analysis; not part of `make bench`.

    python -m bench.input_pipeline
"""

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import tensorflow as tf

from bench.workload import seed_multi_io_data, write_npz
from k2e.formats.npz import inspect_npz
from k2e.formats.read_limits import ReadLimits
from k2e.schemas import DatasetInfo, TensorInfo
from k2e.settings import get_settings
from worker.inputs import Batching, input_fn_for

INPUTS, OUTPUTS = ("input_a", "input_b"), ("dense_2", "dense_3")


def _rate(input_fn: Any, steps: int = 2000) -> tuple[float, float]:
    graph = tf.Graph()
    with graph.as_default(), tf.compat.v1.Session(graph=graph) as session:
        batch = tf.compat.v1.data.make_one_shot_iterator(input_fn()).get_next()
        session.run(batch)
        started, cpu = time.perf_counter(), time.process_time()
        for _ in range(steps):
            session.run(batch)
        return steps / (time.perf_counter() - started), time.process_time() - cpu


def main() -> int:
    arrays = seed_multi_io_data()
    with tempfile.TemporaryDirectory() as scratch:
        path = write_npz(Path(scratch) / "seed.npz", arrays)
        s = inspect_npz(path)
        info = DatasetInfo(
            id="seed", format="npz", num_examples=s.num_examples, arrays=s.arrays, dtypes=s.dtypes
        )

        def tensor(name: str) -> TensorInfo:
            return TensorInfo(name=name, shape=[None, *arrays[name].shape[1:]])

        limits = ReadLimits.from_settings(get_settings())

        def worker(cache_bytes: int) -> Any:
            batching = Batching(32, training=True, shuffle=True, cache_bytes=cache_bytes)
            ins, outs = [tensor(n) for n in INPUTS], [tensor(n) for n in OUTPUTS]
            return input_fn_for(info, path, ins, outs, batching, limits)

        def direct() -> Any:
            features = {n: arrays[n] for n in INPUTS}
            labels = {n: arrays[n] for n in OUTPUTS}
            ds = tf.data.Dataset.from_tensor_slices((features, labels))
            return ds.shuffle(10_000).repeat().batch(32).prefetch(tf.data.AUTOTUNE)

        cases = {"direct": direct, "worker": worker(256 * 1024**2), "worker, no cache": worker(0)}
        for _ in range(2):
            for name, input_fn in cases.items():
                rate, cpu = _rate(input_fn)
                print(f"{name}: {rate:.0f} batches/s, {cpu:.2f} s CPU", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
