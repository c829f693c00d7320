"""Verified exports: the SavedModel a job hands out must compute what the job's model does.

After exporting, the worker loads the SavedModel in a fresh graph, runs every signature on
up to ``MAX_EXAMPLES`` examples of the job's data (or, for a convert-only job without
data, examples generated from the inputs' shapes and dtypes) and compares each output
with the Estimator's own predictions from the same checkpoint.
"""

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np

from k2e.schemas import ExportCheck, JobError, TensorInfo
from worker.signatures import expected_outputs, loaded, run_signature, signature_inputs
from worker.tfrt import tf

MAX_EXAMPLES = 256
GENERATED_EXAMPLES = 32
ExamplesFrom = Literal["eval", "train", "generated"]


class ExportMismatch(Exception):
    """The exported SavedModel's outputs differ from the model's beyond the tolerance."""

    def __init__(self, check: ExportCheck, tolerance: float) -> None:
        super().__init__(mismatch_message(check, tolerance))
        self.check = check
        self.tolerance = tolerance


def mismatch_message(check: ExportCheck, tolerance: float) -> str:
    return (
        f"the exported SavedModel's outputs differ from the model's by up to "
        f"{check.max_abs_diff:.6g} on {check.examples} {check.examples_from} examples, above "
        f"the tolerance {tolerance:g} (K2E_EXPORT_TOLERANCE); the export was not kept"
    )


def mismatch_error(check: ExportCheck, tolerance: float) -> JobError | None:
    """The job's error for a failed verification (reason ``export_mismatch``), else None."""
    if check.verified:
        return None
    return JobError(
        type="ExportMismatch", message=mismatch_message(check, tolerance), reason="export_mismatch"
    )


def first_examples(input_fn: Callable[[], Any], inputs: list[TensorInfo]) -> dict[str, np.ndarray]:
    """The model inputs of ``input_fn``'s first batch (worker/inputs.py's input_fns, built
    with the batch size wanted), read in a graph of their own."""
    graph = tf.Graph()
    with graph.as_default(), tf.compat.v1.Session(graph=graph) as session:
        dataset = input_fn().take(1)
        features, _labels = tf.compat.v1.data.make_one_shot_iterator(dataset).get_next()
        values = session.run(features)
    names = {t.name for t in inputs}
    if set(values) == {"features", "sample_weights"} and not names <= set(values):
        values = values["features"]  # the sample-weight form of worker/inputs.py
    return {t.name: np.asarray(values[t.name]) for t in inputs}


def generated_examples(inputs: list[TensorInfo], n: int = GENERATED_EXAMPLES) -> dict[str, Any]:
    """Examples made from the inputs' shapes and dtypes (unknown dimensions: 1): standard
    normal floats, zero integers, empty strings; a fixed seed."""
    rng = np.random.default_rng(0)
    examples: dict[str, Any] = {}
    for t in inputs:
        shape = [n, *(1 if d is None else d for d in t.shape[1:])]
        dtype = t.dtype or "float32"
        if dtype == "string":
            examples[t.name] = np.full(shape, b"", dtype=object)
        elif dtype.startswith(("int", "uint", "bool")):
            examples[t.name] = np.zeros(shape, dtype=dtype)
        else:
            examples[t.name] = rng.standard_normal(shape).astype(dtype)
    return examples


def estimator_predictions(
    estimator: Any, features: Mapping[str, np.ndarray], checkpoint: str
) -> dict[str, np.ndarray]:
    """The Estimator's own predictions for ``features`` from ``checkpoint``."""
    arrays = dict(features)

    def input_fn() -> Any:
        return tf.data.Dataset.from_tensor_slices(arrays).batch(MAX_EXAMPLES)

    batches = list(
        estimator.predict(input_fn, checkpoint_path=checkpoint, yield_single_examples=False)
    )
    return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}


def verify_export(
    path: Path,
    features: Mapping[str, np.ndarray],
    predictions: Mapping[str, np.ndarray],
    tolerance: float,
    examples_from: ExamplesFrom,
) -> ExportCheck:
    """Run every signature of the SavedModel at ``path`` on ``features`` and compare each
    output that has a counterpart in ``predictions``. A signature that cannot run, or an
    output of another shape, fails the check (difference ``inf``)."""
    with loaded(path) as (session, signatures):
        return check_signatures(
            session, signatures, features, predictions, tolerance, examples_from
        )


def check_signatures(
    session: Any,
    signatures: Mapping[str, Any],
    features: Mapping[str, np.ndarray],
    predictions: Mapping[str, np.ndarray],
    tolerance: float,
    examples_from: ExamplesFrom,
) -> ExportCheck:
    """:func:`verify_export` on a SavedModel already loaded (``signatures.loaded``)."""
    worst = 0.0
    compared = []
    for name, signature in sorted(signatures.items()):
        expected = expected_outputs(name, signature, predictions)
        try:
            got = run_signature(session, signature, signature_inputs(signature, features))
        except (KeyError, ValueError, tf.errors.OpError):
            worst = float("inf")
            continue
        for key, want in expected.items():
            have = np.asarray(got[key])
            want = np.asarray(want)
            if have.size != want.size:
                worst = float("inf")
                continue
            diff = np.abs(have.reshape(want.shape).astype("float64") - want.astype("float64"))
            worst = max(worst, float(diff.max(initial=0.0)))
        if expected:
            compared.append(name)
    if not compared:
        worst = float("inf")  # nothing was checked: not verified
    n = len(next(iter(features.values()))) if features else 0
    return ExportCheck(
        verified=worst <= tolerance,
        examples=n,
        max_abs_diff=worst,
        examples_from=examples_from,
        signatures=compared,
    )
