"""Writes the seed document's multi-input/multi-output example as upload files: the model
(``seed.h5``), training and evaluation data (``train.npz``, ``eval.npz``) and a spec
(``spec.json``, the documented ``metric_names_map``). ``k2e demo`` runs it.

    python -m k2e.examples.seed_files OUT_DIR

Imports TensorFlow.
"""

import json
import sys
from pathlib import Path

import numpy as np

from k2e.examples.seed_data import SEED_METRIC_NAMES_MAP, seed_multi_io_data
from k2e.examples.seed_models import seed_multi_io_model


def write_seed_files(out: Path, max_steps: int = 500) -> None:
    out.mkdir(parents=True, exist_ok=True)
    seed_multi_io_model().save(out / "seed.h5", save_format="h5")
    np.savez(out / "train.npz", **seed_multi_io_data(512, seed=0))
    np.savez(out / "eval.npz", **seed_multi_io_data(128, seed=1))
    spec = {
        "metric_names_map": SEED_METRIC_NAMES_MAP,
        "config": {"tf_random_seed": 1, "save_checkpoints_steps": 100},
        "train": {"max_steps": max_steps, "batch_size": 32},
        "eval": {},
    }
    (out / "spec.json").write_text(json.dumps(spec, indent=2) + "\n")


if __name__ == "__main__":
    write_seed_files(Path(sys.argv[1]), *(int(a) for a in sys.argv[2:3]))
