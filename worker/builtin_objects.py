"""Custom objects k2e ships, named by ``k2e/plugins/builtin.json``."""

import functools
import importlib
import inspect
from collections.abc import Iterable
from typing import Any

from k2e.custom_registry import registry
from worker.tfrt import tf


class ReLU6(tf.keras.layers.Layer):
    """``min(max(x, 0), 6)``: the custom layer of model_to_estimator's documentation."""

    def call(self, inputs: Any) -> Any:
        return tf.minimum(tf.maximum(inputs, 0.0), 6.0)


def relu6_activation(x: Any) -> Any:
    """``min(max(x, 0), 6)`` as an activation function."""
    return tf.minimum(tf.maximum(x, 0.0), 6.0)


def resolve(
    mapping: dict[str, str] | None, plugins: str = "", used: Iterable[str] = ()
) -> dict[str, Any]:
    """Model-config name -> object, importing each registry entry's target: the spec's
    mapping, and the registry names the model uses as they are (``used``: a layer saved
    under its registry name, ``relu6``), which Keras finds only in the scope too."""
    known = registry(plugins)
    objects = {}
    implicit = {name: name for name in used if name in known}
    for config_name, registry_name in {**implicit, **(mapping or {})}.items():
        module_name, _, attribute = known[registry_name].target.partition(":")
        target = getattr(importlib.import_module(module_name), attribute)
        objects[config_name] = _named(target, config_name)
    return objects


def _named(target: Any, name: str) -> Any:
    """A function under the model's own name for it. Keras serializes a function by its
    ``__name__`` when the Estimator clones the model, then looks that name up in the
    custom objects: a registry function mapped from another name must carry that name."""
    if not inspect.isfunction(target) or target.__name__ == name:
        return target

    @functools.wraps(target)
    def renamed(*args: Any, **kwargs: Any) -> Any:
        return target(*args, **kwargs)

    renamed.__name__ = renamed.__qualname__ = name
    return renamed
