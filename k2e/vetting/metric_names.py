"""The metric names ``model_to_estimator``'s Estimator reports for a compiled model (and so
what ``metric_names_map`` must map), and the plain compile arguments that give them.

They follow ``model.metrics_names`` minus the losses, except where the two differ (see
``compiled_metric_names``).
"""

import re
from typing import Any

from k2e.vetting.model_config import spec_error

# Strings model.compile re-resolves from the output's shape; the stored fn is the resolution.
_SPECIAL = {
    "accuracy": "_accuracy",
    "acc": "_accuracy",
    "crossentropy": "_crossentropy",
    "ce": "_crossentropy",
}
# keras.metrics.get aliases whose function has another name (Keras 2.15).
_ALIASES = {
    "mae": "mean_absolute_error",
    "mse": "mean_squared_error",
    "logcosh": "log_cosh",
    "mape": "mean_absolute_percentage_error",
    "msle": "mean_squared_logarithmic_error",
    "kullback_leibler_divergence": "kl_divergence",
    "cosine_proximity": "cosine_similarity",
}
# Parameterless metric classes that equal the function named like their default name.
_FUNCTION_CLASSES = frozenset(
    "CategoricalAccuracy SparseCategoricalAccuracy MeanSquaredError MeanAbsoluteError Poisson "
    "MeanAbsolutePercentageError MeanSquaredLogarithmicError Hinge SquaredHinge CategoricalHinge "
    "KLDivergence".split()
)


def _snake(name: str) -> str:
    """keras.utils.generic_utils.to_snake_case: a metric class's default name."""
    name = re.sub("([a-z])([A-Z])", r"\1_\2", re.sub("(.)([A-Z][a-z0-9]+)", r"\1_\2", name))
    return name.lower() if not name.startswith("_") else "private" + name.lower()


def _metric_name(metric: Any) -> str:
    if isinstance(metric, str):
        return metric
    if isinstance(metric, dict) and isinstance(metric.get("class_name"), str):
        name = (metric.get("config") or {}).get("name")
        return name if isinstance(name, str) and name else _snake(metric["class_name"])
    raise spec_error(f"metric {metric!r} is neither a name nor a serialized metric")


def _as_list(metric: Any) -> list[Any]:
    return metric if isinstance(metric, list) else ([] if metric is None else [metric])


def _per_output(metrics: Any, output_names: list[str]) -> list[list[Any]]:
    """training_utils_v1.collect_per_output_metric_info: the Estimator's metrics per output."""
    if not metrics:
        return [[] for _ in output_names]
    if isinstance(metrics, dict) and "class_name" not in metrics:
        unknown = sorted(set(metrics) - set(output_names))
        if unknown:
            raise spec_error(f"metrics name unknown outputs {unknown}; outputs: {output_names}")
        return [_as_list(metrics.get(name)) for name in output_names]
    if not isinstance(metrics, list):
        raise spec_error(f"metrics must be a list or a dict by output name, not {metrics!r}")
    if any(isinstance(m, list) for m in metrics):
        if len(metrics) != len(output_names):
            raise spec_error(
                f"a list of lists of metrics needs one list per output "
                f"({len(output_names)}), got {len(metrics)}"
            )
        return [_as_list(m) for m in metrics]
    return [list(metrics) for _ in output_names]  # every metric applies to every output


def compiled_metric_names(
    compile_args: dict[str, Any] | None, output_names: list[str]
) -> list[str]:
    """The metric names the Estimator reports, i.e. the keys ``metric_names_map`` must map.

    Equal to ``model.metrics_names`` minus the losses, except that the Estimator keeps a
    string metric's spelling ('CategoricalAccuracy', where Keras says 'categorical_accuracy')
    and names a weighted metric that repeats a metric ``<name>_1`` (Keras: ``weighted_<name>``).
    """
    if not compile_args:
        return []
    metrics = _per_output(compile_args.get("metrics"), output_names)
    weighted = _per_output(compile_args.get("weighted_metrics"), output_names)
    names: list[str] = []
    for i, output in enumerate(output_names):
        for group in (metrics[i], weighted[i]):
            # One dict per output and group: a repeated name is one metric.
            for metric_name in dict.fromkeys(_metric_name(m) for m in group if m is not None):
                base = f"{output}_{metric_name}" if len(output_names) > 1 else metric_name
                name, j = base, 1
                while name in names:
                    name, j = f"{base}_{j}", j + 1
                names.append(name)
    return names


def _plain_metric(metric: Any, name: str) -> Any:
    """The string compile turns back into ``metric`` named ``name``, else its config so named."""
    if not isinstance(metric, dict):
        return metric
    cls, cfg = metric.get("class_name"), dict(metric.get("config") or {})
    fn = cfg.get("fn") if cls == "MeanMetricWrapper" else None
    if cls in _FUNCTION_CLASSES and set(cfg) <= {"name", "dtype"}:
        fn = _snake(cls)
    if isinstance(fn, str) and cfg.get("dtype", "float32") == "float32":
        if cls == "MeanMetricWrapper" and name in _SPECIAL and fn.endswith(_SPECIAL[name]):
            return name
        if name == fn or _ALIASES.get(name) == fn:
            return name
    return {"class_name": cls, "config": {**cfg, "name": name}}


def _stored_groups(stored: Any, output_names: list[str]) -> list[list[Any]] | None:
    """Keras 2.15's stored form of metrics: one list of named metric configs per output."""
    if (
        isinstance(stored, list)
        and len(stored) == len(output_names) > 0
        and all(isinstance(group, list) for group in stored)
    ):
        return [[m for m in group if m is not None] for group in stored]
    return None


def _given_name(metric: Any, output: str, multi: bool) -> str:
    """The name the user gave: without the ``<output>_`` prefix compile added."""
    name = _metric_name(metric)
    return name[len(output) + 1 :] if multi and name.startswith(output + "_") else name


def _plain_metrics(stored: Any, output_names: list[str], repeated: list[set[str]]) -> Any:
    groups = _stored_groups(stored, output_names)
    if groups is None:  # Not the stored form: already what the user compiled with.
        return stored
    multi, plain = len(output_names) > 1, []
    for output, group, names in zip(output_names, groups, repeated, strict=True):
        items = []
        for metric in group:
            name = _given_name(metric, output, multi)
            # compile names a weighted metric that repeats a metric weighted_<name>.
            if name.startswith("weighted_") and name[len("weighted_") :] in names:
                name = name[len("weighted_") :]
            items.append(_plain_metric(metric, name))
        plain.append(items)
    if not multi:
        return plain[0] or None
    return {o: items for o, items in zip(output_names, plain, strict=True) if items} or None


def plain_compile_args(training_config: dict[str, Any], output_names: list[str]) -> dict[str, Any]:
    """``model.compile`` arguments from an HDF5 ``training_config``, metrics as plain names.

    HDF5 stores each metric as a config already named ``<output>_<metric>``: compiling with
    those would prefix them again (the Estimator reports ``dense_2_dense_2_...``), so each
    becomes the identifier the user gave ("categorical_accuracy", "mae"), or, when no string
    compiles back to it (an ``AUC(name="auc_roc")``), its config named as the user named it.
    """
    multi = len(output_names) > 1
    groups = _stored_groups(training_config.get("metrics"), output_names)
    groups = groups or [[] for _ in output_names]
    repeated = [
        {_given_name(m, o, multi) for m in g} for o, g in zip(output_names, groups, strict=True)
    ]
    args = {
        "loss": training_config.get("loss"),
        "metrics": _plain_metrics(training_config.get("metrics"), output_names, repeated),
        "loss_weights": training_config.get("loss_weights"),
        "optimizer": training_config.get("optimizer_config"),
    }
    weighted = _plain_metrics(training_config.get("weighted_metrics"), output_names, repeated)
    if weighted:
        args["weighted_metrics"] = weighted
    return args
