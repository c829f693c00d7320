"""Write k2e/plugins/keras_builtins.json: the names a Keras 2.15 config may use safely.

Run with the worker's TensorFlow (``.venv/bin/python scripts/gen_keras_builtins.py``) and
commit the result. k2e reads the JSON at runtime without importing TensorFlow
(see k2e/vetting/configs.py). Every list comes from the lookup tables Keras itself deserializes
from, so a name in the file is one Keras resolves without importing anything new.
"""

import inspect
import json
import sys
from pathlib import Path
from typing import Any

import keras
import keras.src.layers.activation as activation_layers
import tensorflow as tf
from keras.src import activations as keras_activations
from keras.src import initializers as keras_initializers
from keras.src.layers import serialization as layer_serialization
from keras.src.saving import object_registration
from keras.src.utils import generic_utils
from tensorflow.python.util import tf_export

OUT = Path(__file__).resolve().parents[1] / "k2e" / "plugins" / "keras_builtins.json"
NOT_OBJECTS = {"deserialize", "serialize", "get", "global_policy", "set_global_policy"}

# TF API namespaces whose functions a TFOpLambda layer may name. raw_ops and
# compat.v1.raw_ops are left out: they hold ops such as ImmutableConst (reads a file).
OP_NAMESPACES = {
    "",
    "math",
    "nn",
    "linalg",
    "signal",
    "image",
    "random",
    "sparse",
    "ragged",
    "bitwise",
    "strings",
    "sets",
    "dtypes",
    "__operators__",
}
# Modules of pure tensor computations: no file, network or Python-callback ops
# (io_ops reads files, logging_ops.print writes them, script_ops runs Python).
PURE_OP_MODULES = {
    "tensorflow.python.framework.constant_op",
    "tensorflow.python.framework.dtypes",
    "tensorflow.python.framework.tensor_conversion",
    *(
        "tensorflow.python.ops." + m
        for m in (
            "array_ops array_ops_stack bincount_ops candidate_sampling_ops clip_ops "
            "confusion_matrix ctc_ops embedding_ops gen_array_ops gen_bitwise_ops "
            "gen_data_flow_ops gen_image_ops gen_linalg_ops gen_math_ops gen_nn_ops "
            "gen_spectral_ops gen_string_ops histogram_ops image_ops_impl linalg_ops "
            "linalg.linalg_impl manip_ops math_ops nn_impl nn_ops random_crop_ops random_ops "
            "ragged.ragged_array_ops ragged.ragged_concat_ops ragged.ragged_getitem "
            "ragged.ragged_math_ops ragged.ragged_string_ops ragged.segment_id_ops sets_impl "
            "signal.dct_ops signal.fft_ops signal.mel_ops signal.mfcc_ops "
            "signal.reconstruction_ops signal.shape_ops signal.spectral_ops signal.window_ops "
            "sort_ops sparse_ops special_math_ops stateless_random_ops string_ops"
        ).split()
    ),
}


def public_names(module: Any) -> tuple[list[str], list[str]]:
    """(classes, functions) a public tf.keras namespace exports."""
    classes, functions = [], []
    for name in dir(module):
        obj = getattr(module, name)
        if name.startswith("_") or name in NOT_OBJECTS or inspect.ismodule(obj):
            continue
        (classes if inspect.isclass(obj) else functions).append(name)
    return classes, functions


def activation_names() -> list[str]:
    """Strings ``activations.get`` resolves, limited to real activations (its lookup table
    also holds every other callable the module imports)."""
    table: dict[str, Any] = {}
    generic_utils.populate_dict_with_module_objects(
        table, (activation_layers, keras_activations), obj_filter=callable
    )
    names = []
    for name, obj in table.items():
        own_function = inspect.isfunction(obj) and obj.__module__ == keras_activations.__name__
        layer = inspect.isclass(obj) and issubclass(obj, tf.keras.layers.Layer)
        if (own_function or layer) and name not in NOT_OBJECTS:
            names.append(name)
    return names


def pure_tf_ops() -> list[str]:
    names = []
    for name, symbol in tf_export._NAME_TO_SYMBOL_MAPPING.items():
        parts = name.split(".")
        if parts[:2] == ["compat", "v1"]:
            parts = parts[2:]
        namespace = ".".join(parts[:-1])
        if namespace not in OP_NAMESPACES or inspect.isclass(symbol) or not callable(symbol):
            continue
        module = getattr(inspect.unwrap(symbol), "__module__", "")
        if module in PURE_OP_MODULES:
            names.append(name)
    return names


def main() -> None:
    layer_serialization.populate_deserializable_objects()
    keras_initializers.populate_deserializable_objects()
    k = tf.keras
    classes: dict[str, set[str]] = {}
    functions: dict[str, set[str]] = {}
    for kind, modules in {
        "initializers": [k.initializers],
        "regularizers": [k.regularizers],
        "constraints": [k.constraints],
        "losses": [k.losses],
        "metrics": [k.metrics],
        "optimizers": [
            k.optimizers,
            k.optimizers.legacy,
            k.optimizers.experimental,
            k.optimizers.schedules,
        ],
        "mixed_precision": [k.mixed_precision],
    }.items():
        classes[kind], functions[kind] = set(), set()
        for module in modules:
            found_classes, found_functions = public_names(module)
            classes[kind] |= set(found_classes)
            functions[kind] |= set(found_functions)
    # Keras's own lookup tables: layers (and models), initializers with their aliases.
    for kind, table in (
        ("layers", layer_serialization.LOCAL.ALL_OBJECTS),
        ("initializers", keras_initializers.LOCAL.ALL_OBJECTS),
    ):
        for name, obj in table.items():
            (classes if inspect.isclass(obj) else functions).setdefault(kind, set()).add(name)
    # Registered names, e.g. "Custom>Adam" (the optimizer config an HDF5 file stores).
    classes["registered"] = set(object_registration._GLOBAL_CUSTOM_OBJECTS)
    functions["activations"] = set(activation_names())
    type_specs = sorted(
        name for name in dir(tf) if name.endswith("Spec") and inspect.isclass(getattr(tf, name))
    )
    data = {
        "_generated_by": "scripts/gen_keras_builtins.py; do not edit by hand",
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "classes": {kind: sorted(names) for kind, names in sorted(classes.items())},
        "functions": {kind: sorted(names) for kind, names in sorted(functions.items()) if names},
        "type_specs": type_specs,
        "tf_ops": sorted(pure_tf_ops()),
        "ragged_class_methods": sorted(n for n in dir(tf.RaggedTensor) if n.startswith("from_")),
        "tensor_attributes": sorted(
            n for cls in (tf.RaggedTensor, tf.SparseTensor) for n in dir(cls) if n[0] != "_"
        ),
    }
    OUT.write_text(json.dumps(data, indent=1) + "\n")
    count = sum(len(v) for v in data["classes"].values())
    print(f"wrote {OUT}: {count} class names, {len(data['tf_ops'])} TF ops", file=sys.stderr)


if __name__ == "__main__":
    main()
