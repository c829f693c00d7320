"""SavedModel export in the TF Serving layout, written atomically (the signatures it
writes: k2e.spec.export_plan)."""

import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from k2e.schemas import TensorInfo
from k2e.spec.export_plan import EXAMPLES
from k2e.spec.export_plan import RAW_ALTERNATIVE as RAW
from k2e.storage import EXPORT_DIR, EXPORT_STAGING_DIR
from worker.inputs import example_dtype
from worker.tfrt import tf

EXPORT_CLASSES = {
    "regression": tf.estimator.export.RegressionOutput,
    "classification": tf.estimator.export.ClassificationOutput,
    "predict": tf.estimator.export.PredictOutput,
}


def export_output_classes(export_outputs: Mapping[str, str] | None) -> dict[str, Any] | None:
    if not export_outputs:
        return None
    return {key: EXPORT_CLASSES[kind] for key, kind in export_outputs.items()}


def serving_input_fn(inputs: list[TensorInfo], parse_examples: bool) -> Any:
    """Raw tensors keyed by input name; or, for classify/regress heads, serialized
    tf.Examples by default with the raw tensors as the ``raw`` alternative (the
    classify and regress signatures only exist with a single string input)."""

    def raw() -> Any:
        placeholders = {
            t.name: tf.compat.v1.placeholder(_dtype(t), [None, *t.shape[1:]], name=t.name)
            for t in inputs
        }
        return tf.estimator.export.ServingInputReceiver(placeholders, placeholders)

    def parsing() -> Any:
        serialized = tf.compat.v1.placeholder(tf.string, [None], name="input_example_tensor")
        spec = {t.name: tf.io.FixedLenFeature(t.shape[1:], example_dtype(t)) for t in inputs}
        parsed = tf.io.parse_example(serialized, spec)
        features = {t.name: tf.cast(parsed[t.name], _dtype(t)) for t in inputs}
        return tf.estimator.export.ServingInputReceiver(
            features, {EXAMPLES: serialized}, receiver_tensors_alternatives={RAW: features}
        )

    return parsing if parse_examples else raw


def export_to_staging(estimator: Any, model_dir: Path, receiver_fn: Any, checkpoint: str) -> Path:
    """Export ``checkpoint``'s weights into a staging folder (not yet visible to clients)."""
    staging = model_dir / EXPORT_STAGING_DIR
    shutil.rmtree(staging, ignore_errors=True)
    written = estimator.export_saved_model(str(staging), receiver_fn, checkpoint_path=checkpoint)
    return Path(os.fsdecode(written))


def publish(written: Path, model_dir: Path) -> Path:
    """Rename a staged export into ``export/<version>``: a reader never sees a partial
    SavedModel."""
    final_root = model_dir / EXPORT_DIR
    final_root.mkdir(exist_ok=True)
    target = final_root / written.name
    os.replace(written, target)
    discard_staging(model_dir)
    return target


def discard_staging(model_dir: Path) -> None:
    shutil.rmtree(model_dir / EXPORT_STAGING_DIR, ignore_errors=True)


def _dtype(tensor: TensorInfo) -> Any:
    return tf.as_dtype(tensor.dtype or "float32")
