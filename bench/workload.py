"""The benchmark's workload: the seed's multi-input/multi-output example, as data (numpy
only, no TensorFlow here) and as the ConvertRequest k2e receives. bench/direct.py trains
the same model with the same settings without k2e."""

from pathlib import Path
from typing import Any

import numpy as np

from k2e.examples.seed_data import SEED_METRIC_NAMES_MAP
from k2e.examples.seed_data import seed_multi_io_data as examples_data

STEPS = 2000
EXAMPLES = 1024
BATCH_SIZE = 32
RUN_CONFIG = {
    "tf_random_seed": 1,
    "save_checkpoints_steps": 500,
    "save_summary_steps": 100,
    "log_step_count_steps": 100,
}
METRIC_NAMES_MAP = SEED_METRIC_NAMES_MAP


def seed_multi_io_data(n: int = EXAMPLES, seed: int = 0) -> dict[str, np.ndarray]:
    """The seed example's arrays, as many as the workload trains on."""
    return examples_data(n, seed)


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    np.savez(path, **arrays)
    return path


def convert_spec(
    model_id: str,
    dataset_id: str,
    steps: int = STEPS,
    evaluate: bool = True,
    export: bool = True,
) -> dict[str, Any]:
    """The ConvertRequest for the workload (the same settings as bench/direct.py)."""
    spec: dict[str, Any] = {
        "keras_model_path": model_id,
        "metric_names_map": METRIC_NAMES_MAP,
        "config": RUN_CONFIG,
        "train": {"dataset": dataset_id, "max_steps": steps, "batch_size": BATCH_SIZE},
        "export": export,
    }
    if evaluate:
        spec["eval"] = {"dataset": dataset_id, "batch_size": BATCH_SIZE}
    return spec
