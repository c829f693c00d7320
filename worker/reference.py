"""The export's reference predictions, taken from the job's evaluation.

Verifying an export compares its signatures with the Estimator's own predictions from
the same checkpoint (worker/verify.py). A job that evaluates has already run the model
on its evaluation data from that checkpoint: the Estimator's model_fn is wrapped so that
its evaluation graph records its features and predictions, and :class:`ReferenceHook`
fetches them for the first examples, alongside the evaluation's own step. The export is
then checked without a separate ``Estimator.predict`` (a model_fn call, a session and a
restore: about 0.2 s on the seed example) and without reading the data again.

Evaluation and prediction build the same Keras model in inference mode (learning phase
0: dropout off, batch normalization on its moving statistics), so the predictions are the
ones ``Estimator.predict`` gives.
"""

import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from k2e.schemas import TensorInfo
from worker.tfrt import tf

# Evaluation graph -> (features, predictions) tensors its model_fn built.
_RECORDED: "weakref.WeakKeyDictionary[Any, tuple[Any, Any]]" = weakref.WeakKeyDictionary()


def with_evaluation_reference(model_fn: Callable[..., Any]) -> Callable[..., Any]:
    """``model_fn``, recording the features and predictions of the evaluation graphs it
    builds (training and prediction graphs are left as they are)."""

    def wrapped(features: Any, labels: Any, mode: str, config: Any) -> Any:
        spec = model_fn(features, labels, mode, config)
        if mode == tf.estimator.ModeKeys.EVAL and isinstance(spec.predictions, dict):
            _RECORDED[tf.compat.v1.get_default_graph()] = (features, spec.predictions)
        return spec

    return wrapped


@dataclass
class Reference:
    """Examples and the Estimator's predictions for them, keyed by input and output."""

    features: dict[str, np.ndarray]
    predictions: dict[str, np.ndarray]

    @property
    def examples(self) -> int:
        return len(next(iter(self.predictions.values()))) if self.predictions else 0


class ReferenceHook(tf.compat.v1.train.SessionRunHook):
    """Fetches the recorded features and predictions of an evaluation's first steps
    until ``limit`` examples are in; :attr:`reference` holds them afterwards (None when
    the graph recorded nothing, or a batch lacked one of ``inputs``)."""

    def __init__(self, inputs: list[TensorInfo], limit: int) -> None:
        self._inputs = [t.name for t in inputs]
        self._limit = limit
        self.reference: Reference | None = None

    def begin(self) -> None:
        recorded = _RECORDED.pop(tf.compat.v1.get_default_graph(), None)
        self._fetch: Any = None
        self._features: dict[str, list[np.ndarray]] = {}
        self._predictions: dict[str, list[np.ndarray]] = {}
        self._count = 0
        if recorded is None:
            return
        features, predictions = recorded
        if isinstance(features, Mapping) and "sample_weights" in features:
            features = features.get("features", features)  # worker/inputs.py's weighted form
        if not isinstance(features, Mapping) or not set(self._inputs) <= set(features):
            return
        self._fetch = ({k: features[k] for k in self._inputs}, dict(predictions))

    def before_run(self, run_context: Any) -> Any:
        if self._fetch is None or self._count >= self._limit:
            return None
        return tf.compat.v1.train.SessionRunArgs(self._fetch)

    def after_run(self, run_context: Any, run_values: Any) -> None:
        if run_values.results is None:
            return
        features, predictions = run_values.results
        for key, value in features.items():
            self._features.setdefault(key, []).append(np.asarray(value))
        for key, value in predictions.items():
            self._predictions.setdefault(key, []).append(np.asarray(value))
        self._count += len(next(iter(predictions.values())))

    def end(self, session: Any) -> None:
        if not self._count:
            return
        n = self._limit

        def joined(parts: dict[str, list[np.ndarray]]) -> dict[str, np.ndarray]:
            return {k: np.concatenate(v)[:n] for k, v in parts.items()}

        self.reference = Reference(joined(self._features), joined(self._predictions))
