"""Measurement (a)/(b): the seed's multi-input/multi-output model trained with plain
TensorFlow, the way a user would write it without k2e.

Plain TensorFlow (it never imports k2e's service or worker, except the hook probe) so that
``python bench/direct.py`` is the cold "python script.py" case (b). The same code runs
warm in a long-lived helper process (``--serve``) for case (a). The model and the settings
are the ones k2e receives: ``k2e.examples.seed_models.seed_multi_io_model`` (the seed
document's metric_names_map example) and ``bench.workload``'s run config.

Modes:
  python bench/direct.py --once MODEL_DIR --data NPZ --steps N   one run, JSON on stdout
  python bench/direct.py --serve                                  JSON lines on stdin/stdout
  python bench/direct.py --save-h5 PATH                           the model as HDF5
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

# Run as a script, this file's folder is on sys.path, not the repository's.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from bench.workload import BATCH_SIZE, METRIC_NAMES_MAP, RUN_CONFIG  # noqa: E402
from k2e.examples.seed_data import SEED_INPUTS, SEED_OUTPUTS  # noqa: E402
from k2e.examples.seed_models import seed_multi_io_model  # noqa: E402

SHUFFLE_BUFFER = 10_000

INPUTS, OUTPUTS = SEED_INPUTS, SEED_OUTPUTS


def input_fn_for(arrays: dict, training: bool):
    features = {name: arrays[name] for name in INPUTS}
    labels = {name: arrays[name] for name in OUTPUTS}

    def input_fn():
        ds = tf.data.Dataset.from_tensor_slices((features, labels))
        if training:
            ds = ds.shuffle(SHUFFLE_BUFFER).repeat()
        return ds.batch(BATCH_SIZE).prefetch(tf.data.AUTOTUNE)

    return input_fn


def serving_input_fn():
    placeholders = {
        name: tf.compat.v1.placeholder(tf.float32, [None, 16], name=name) for name in INPUTS
    }
    return tf.estimator.export.ServingInputReceiver(placeholders, placeholders)


def k2e_hooks() -> list:
    """k2e's training hooks as the worker attaches them (reporting nowhere). Only the
    warm helper's hook probe asks for them; the script itself never imports k2e."""
    from k2e.settings import get_settings
    from worker.heartbeat import RunControl
    from worker.hooks import ProgressHook

    every = RUN_CONFIG["log_step_count_steps"]
    min_interval_s = get_settings().progress_min_interval_s
    return [
        ProgressHook(
            lambda step, loss, rate: None,
            RunControl(),
            every_steps=every,
            min_interval_s=min_interval_s,
        )
    ]


def run(model_dir: str, data_path: str, steps: int, hooks: list | None = None) -> dict:
    """model_to_estimator + train + evaluate + export; returns timings in seconds.
    With ``steps`` below 0, trains ``-steps`` steps and stops there (the hook probe)."""
    train_only = steps < 0
    steps = abs(steps)
    started = time.perf_counter()
    with np.load(data_path) as npz:
        arrays = {name: npz[name] for name in npz.files}
    tf.keras.backend.clear_session()  # a fresh model per run (conversion spoils older ones)
    model = seed_multi_io_model()
    modelled = time.perf_counter()
    estimator = tf.keras.estimator.model_to_estimator(
        keras_model=model,
        config=tf.estimator.RunConfig(model_dir=model_dir, **RUN_CONFIG),
        metric_names_map=METRIC_NAMES_MAP,
    )
    built = time.perf_counter()
    estimator.train(input_fn_for(arrays, training=True), max_steps=steps, hooks=hooks)
    trained = time.perf_counter()
    if train_only:
        return {"seconds": trained - started, "train_s": trained - built}
    metrics = estimator.evaluate(input_fn_for(arrays, training=False))
    evaluated = time.perf_counter()
    estimator.export_saved_model(os.path.join(model_dir, "export"), serving_input_fn)
    done = time.perf_counter()
    return {
        "seconds": done - started,
        "model_s": modelled - started,  # data loaded, Keras model built and compiled
        "build_s": built - started,  # ... and model_to_estimator done
        "train_s": trained - built,
        "eval_s": evaluated - trained,
        "export_s": done - evaluated,
        "eval": {k: float(np.asarray(v).item()) for k, v in metrics.items()},
    }


def serve() -> int:
    """One JSON request per stdin line: {"model_dir", "data", "steps"[, "k2e_hooks"]};
    one answer each."""
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        hooks = k2e_hooks() if request.get("k2e_hooks") else None
        result = run(request["model_dir"], request["data"], int(request["steps"]), hooks)
        print(json.dumps(result), flush=True)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--once", metavar="MODEL_DIR")
    parser.add_argument("--data")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--serve", action="store_true")
    parser.add_argument("--save-h5", metavar="PATH")
    args = parser.parse_args()
    tf.get_logger().setLevel("ERROR")
    if args.save_h5:
        seed_multi_io_model().save(args.save_h5, save_format="h5")
        return 0
    if args.serve:
        return serve()
    if args.once:
        print(json.dumps(run(args.once, args.data, args.steps)), flush=True)
        return 0
    parser.error("one of --once, --serve, --save-h5")
    return 2


if __name__ == "__main__":
    sys.exit(main())
