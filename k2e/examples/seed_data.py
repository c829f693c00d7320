"""Data for the seed document's two examples (numpy only) and the example's settings."""

import numpy as np

# The documented metric_names_map example: the two heads' accuracies renamed.
SEED_METRIC_NAMES_MAP = {
    "dense_2_categorical_accuracy": "acc_1",
    "dense_3_categorical_accuracy": "acc_2",
}
SEED_INPUTS = ("input_a", "input_b")
SEED_OUTPUTS = ("dense_2", "dense_3")


def seed_multi_io_data(n: int = 256, seed: int = 0) -> dict[str, np.ndarray]:
    """Arrays for the multi-input/multi-output model, with labels the model can learn."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, 16)).astype("float32")
    b = rng.normal(size=(n, 16)).astype("float32")
    # Learnable labels: the class is a function of the inputs.
    y2 = np.eye(3, dtype="float32")[(a[:, 0] > 0).astype(int) + (b[:, 0] > 0).astype(int)]
    y3 = np.eye(2, dtype="float32")[(a[:, 1] > 0).astype(int)]
    return {"input_a": a, "input_b": b, "dense_2": y2, "dense_3": y3}


def seed_dict_io_data(n: int = 200, seed: int = 1) -> dict[str, np.ndarray]:
    """Arrays for the dict model (inputs a, b; heads c, d) with per-output sample weights."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, 8)).astype("float32")
    b = rng.normal(size=(n, 8)).astype("float32")
    return {
        "a": a,
        "b": b,
        "c": a.sum(axis=1, keepdims=True),
        "d": np.eye(3, dtype="float32")[rng.integers(0, 3, n)],
        "sample_weights.c": np.ones(n, "float32"),
        "sample_weights.d": rng.uniform(0.5, 1.5, n).astype("float32"),
    }
