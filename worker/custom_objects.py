"""Custom objects k2e ships, named by ``k2e/plugins/builtin.json``."""

import importlib
from typing import Any

from k2e.custom_objects import registry
from worker.tfrt import tf


class ReLU6(tf.keras.layers.Layer):
    """``min(max(x, 0), 6)``: the custom layer of model_to_estimator's documentation."""

    def call(self, inputs: Any) -> Any:
        return tf.minimum(tf.maximum(inputs, 0.0), 6.0)


def resolve(mapping: dict[str, str] | None, plugins: str = "") -> dict[str, Any]:
    """Model-config name -> object, importing each registry entry's target."""
    known = registry(plugins)
    objects = {}
    for config_name, registry_name in (mapping or {}).items():
        module_name, _, attribute = known[registry_name].target.partition(":")
        objects[config_name] = getattr(importlib.import_module(module_name), attribute)
    return objects
