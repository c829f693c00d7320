"""Vets a Keras config before anything loads it: whatever could run code is refused.

Keras turns every ``class_name`` of a config into a class or function and calls it. A
name is trusted when it is a Keras built-in (``plugins/keras_builtins.json``, generated
from TF 2.15 by ``scripts/gen_keras_builtins.py``) or a name of the server's custom-object
registry. Refused besides unknown names: ``Lambda`` layers (marshalled Python bytecode,
run on load), ``module``/``registered_name`` references that make Keras import code
outside Keras/TensorFlow, and TF-op layers naming ops outside pure tensor math (a
``TFOpLambda`` calling ``io.read_file`` reads server files: measured on TF 2.15), and
file or URL references: a ``StringLookup`` whose ``vocabulary`` is a string is a path
Keras opens on the worker (and an export copies it into the SavedModel's downloadable
assets), so the keys that take a file (``_FILE_KEYS``) may hold no string at all, and no
string anywhere may be a URL. Inline vocabularies (lists) stay allowed.
"""

import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from k2e.errors import InvalidUpload

BUILTINS_FILE = Path(__file__).parents[1] / "plugins" / "keras_builtins.json"
ALLOW_LAMBDA_HINT = "an operator can allow them with K2E_ALLOW_LAMBDA=true"
MAX_DEPTH = 200

# Keys whose value is a layer: the path names the layer, not the key.
_LAYER_KEYS = frozenset({"layers", "layer", "forward_layer", "backward_layer", "cell", "cells"})
_DATA_MARKERS = frozenset({"__tensor__", "__numpy__", "__bytes__"})
_TF_OP_LAYERS = frozenset({"TFOpLambda", "SlicingOpLambda"})
_ACTIVATION_KEYS = frozenset({"activation", "recurrent_activation"})
# Config keys whose string value Keras or TensorFlow opens as a file: the lookup and text
# layers' vocabulary and IDF weights, feature columns' vocabulary files and checkpoints.
_FILE_KEYS = frozenset(
    {
        "vocabulary",
        "idf_weights",
        "vocabulary_file",
        "vocabulary_path",
        "ckpt_to_load_from",
        "filepath",
        "file_path",
        "filename",
        "path",
    }
)
# Feature columns a DenseFeatures layer may hold: their configs are data (keys, sizes,
# boundaries, inline vocabulary lists) that tf.feature_column deserializes by class name.
# Left out: VocabularyFileCategoricalColumn (it opens a file), SharedEmbeddingColumn and the
# sequence columns (not deserializable by a DenseFeatures layer).
_FEATURE_COLUMNS = frozenset(
    "NumericColumn BucketizedColumn CrossedColumn EmbeddingColumn HashedCategoricalColumn "
    "IdentityCategoricalColumn IndicatorColumn VocabularyListCategoricalColumn "
    "WeightedCategoricalColumn".split()
)
_URL = re.compile(r"^\s*(?:[A-Za-z][A-Za-z0-9+.-]*://|file:)")
# Keys whose value names a loss (compile arguments, training_config): a string, or strings in a
# list or in a dict keyed by output.
_LOSS_KEYS = frozenset({"loss"})


# A class name a spec may map with custom_objects: a plain (registered) name, nothing more.
_PLAIN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.>-]{0,199}")


@dataclass(frozen=True)
class VetPolicy:
    """What a config may name beyond the Keras built-ins.

    With ``defer_custom`` (an upload, before any spec names its ``custom_objects``), a class
    that is neither a built-in nor a registry name is not refused but listed
    (``vet_model_config`` returns it): a spec that uses the model must map it to a registry
    entry (k2e.spec.checks), the same rule as for a model given by path or inline.
    """

    custom_names: frozenset[str] = frozenset()
    allow_lambda: bool = False
    defer_custom: bool = False

    @classmethod
    def of(
        cls, custom_names: Iterable[str], allow_lambda: bool = False, defer_custom: bool = False
    ) -> "VetPolicy":
        return cls(frozenset(custom_names), allow_lambda, defer_custom)


@dataclass(frozen=True)
class KerasBuiltins:
    classes: frozenset[str]  # anything Keras resolves a class_name to
    functions: frozenset[str]  # functions a `{"class_name": "function"}` or `fn` may name
    activations: frozenset[str]
    type_specs: frozenset[str]
    tf_ops: frozenset[str]
    ragged_class_methods: frozenset[str]
    tensor_attributes: frozenset[str]


@lru_cache
def keras_builtins() -> KerasBuiltins:
    data = json.loads(BUILTINS_FILE.read_text())
    functions = frozenset(n for names in data["functions"].values() for n in names)
    classes = frozenset(n for names in data["classes"].values() for n in names)
    return KerasBuiltins(
        classes=classes | functions,
        functions=functions,
        activations=frozenset(data["functions"]["activations"]),
        type_specs=frozenset(data["type_specs"]),
        tf_ops=frozenset(data["tf_ops"]),
        ragged_class_methods=frozenset(data["ragged_class_methods"]),
        tensor_attributes=frozenset(data["tensor_attributes"]),
    )


def vet_model_config(
    config: Any,
    policy: VetPolicy,
    what: str = "model_config",
    uses: dict[str, set[str]] | None = None,
) -> list[str]:
    """Raise InvalidUpload naming the first object of ``config`` that could run untrusted code.

    Also vets compile configs (``training_config``, ``compile_config``): the worker
    deserializes their optimizer, losses and metrics the same way. Returns the class and
    function names left for a spec's ``custom_objects`` to map (``policy.defer_custom``),
    sorted. ``uses``, when given, gets each name Keras would resolve through
    ``custom_objects`` with how the config uses it (``use_kind``): a mapping must be of that
    kind (k2e.spec.checks).
    """
    vetter = _Vetter(policy, what)
    vetter.walk(config, (), 0)
    if uses is not None:
        for name, kinds in vetter.uses.items():
            uses.setdefault(name, set()).update(kinds)
    return sorted(vetter.deferred)


def use_kind(key: str | None) -> str:
    """How a config uses the object found under ``key``: the kind of registry entry
    (k2e.custom_registry.KINDS) a name there must be mapped to."""
    if key is None or key in _LAYER_KEYS:
        return "layer"
    if key in _ACTIVATION_KEYS:
        return "activation"
    if key in _LOSS_KEYS:
        return "loss"
    if key in ("metrics", "weighted_metrics"):
        return "metric"
    if key == "fn":  # a loss or metric wrapper's function: fn(y_true, y_pred)
        return "function"
    if key in ("optimizer", "optimizer_config"):
        return "optimizer"
    for suffix in ("initializer", "regularizer", "constraint"):
        if key == suffix or key.endswith("_" + suffix):
            return suffix
    return "object"


def _label(node: dict[str, Any], key: str | None) -> str:
    cls = node.get("class_name")
    cfg = node.get("config")
    name = cfg.get("name") if isinstance(cfg, dict) else None
    if cls == "function":
        label = f"function {cfg!r}"
        return f"{key}: {label}" if key is not None else label
    if key in _LAYER_KEYS:
        return f"layer {name!r} ({cls})" if isinstance(name, str) else f"layer {cls}"
    label = f"{cls} {name!r}" if isinstance(name, str) else str(cls)
    return f"{key}: {label}" if key is not None else label


class _Vetter:
    def __init__(self, policy: VetPolicy, what: str) -> None:
        self.policy = policy
        self.what = what
        self.builtins = keras_builtins()
        self.custom_names = policy.custom_names
        self.functions = self.builtins.functions | self.builtins.activations
        self.deferred: set[str] = set()
        # Every name Keras resolves (custom_objects first), with how it is used.
        self.uses: dict[str, set[str]] = {}

    def use(self, name: Any, key: str | None) -> None:
        if isinstance(name, str):
            self.uses.setdefault(name, set()).add(use_kind(key))

    def custom(self, name: Any) -> bool:
        """A registry (or mapped) name; or, deferring, a plain name a spec must map."""
        if name in self.custom_names:
            return True
        if self.policy.defer_custom and isinstance(name, str) and _PLAIN_NAME.fullmatch(name):
            self.deferred.add(name)
            return True
        return False

    def refuse(self, path: tuple[str, ...], why: str) -> InvalidUpload:
        where = " › ".join(path) if path else "top level"
        return InvalidUpload(f"{self.what}: {where}: {why}")

    def walk(self, node: Any, path: tuple[str, ...], depth: int, key: str | None = None) -> None:
        if depth > MAX_DEPTH:
            raise self.refuse(path, f"nested deeper than {MAX_DEPTH} levels")
        if isinstance(node, list):
            for item in node:
                self.walk(item, path, depth + 1, key)
            return
        if isinstance(node, float) and not math.isfinite(node):
            # Keras writes float("inf") as `Infinity`, and JSON's 1e400 reads as one; neither
            # is a value k2e passes on (a spec's, or a file's config, alike).
            where = (*path, key) if key is not None else path
            raise self.refuse(where, f"{key or 'a value'} is {node}; only finite numbers are taken")
        if not isinstance(node, dict):
            return
        if "class_name" in node:
            path = (*path, _label(node, key))
            self.check_object(node, path, key)
        elif node.get("function_type") == "lambda" and not self.policy.allow_lambda:
            raise self.refuse(path, f"a Python lambda (marshalled bytecode); {ALLOW_LAMBDA_HINT}")
        for child_key, value in node.items():
            if child_key in _LOSS_KEYS and "class_name" not in node:
                self.check_losses(value, path)
            if isinstance(value, str):
                self.check_string(child_key, value, path)
            elif child_key == "config":
                # A bare list is an old Sequential config: its items are layers.
                self.walk(value, path, depth + 1, "layers" if isinstance(value, list) else key)
            else:
                self.walk(value, path, depth + 1, child_key)

    def check_string(self, key: str, value: str, path: tuple[str, ...]) -> None:
        """Strings Keras resolves by name: activations, and the ``fn`` of metric wrappers;
        and no file or URL references."""
        if key in _FILE_KEYS:
            raise self.refuse(
                path,
                f"{key} {value[:200]!r} names a file (Keras would open it on the server); "
                f"give {key} inline, as a list",
            )
        if _URL.match(value):
            raise self.refuse(
                path, f"{key} {value[:200]!r} is a URL; a model config may not reference one"
            )
        if key == "normalizer_fn" and value not in self.custom_names:
            # tf.feature_column looks the name up among its own module's globals.
            raise self.refuse(
                path,
                f"normalizer_fn {value[:200]!r} is code a feature column would call; only "
                "names of the server's custom-object registry are allowed",
            )
        if key in _ACTIVATION_KEYS:
            self.use(value, key)
            if value not in self.builtins.activations and not self.custom(value):
                raise self.refuse(
                    path,
                    f"{key} {value!r} is neither a Keras activation nor in the server's "
                    "custom-object registry",
                )
        elif key == "fn":
            self.use(value, key)
            if value not in self.functions and not self.custom(value):
                raise self.refuse(
                    path, f"fn {value!r} is neither a Keras loss or metric function nor registered"
                )

    def check_losses(self, value: Any, path: tuple[str, ...]) -> None:
        """Loss names (``"mse"``, ``["mse", "mae"]``, ``{"out": "mse"}``): Keras resolves
        each as a loss function or class, through ``custom_objects`` first."""
        if isinstance(value, str):
            names = [value]
        elif isinstance(value, dict) and "class_name" not in value:
            names = [v for v in value.values() if isinstance(v, str)]
        elif isinstance(value, list):
            names = [v for v in value if isinstance(v, str)]
        else:
            return
        for name in names:
            self.use(name, "loss")
            if name not in self.builtins.classes and not self.custom(name):
                raise self.refuse(
                    path,
                    f"loss {name[:200]!r} is neither a Keras loss nor in the server's "
                    "custom-object registry",
                )

    def check_object(self, node: dict[str, Any], path: tuple[str, ...], key: str | None) -> None:
        cls, cfg = node["class_name"], node.get("config")
        cfg = cfg if isinstance(cfg, dict) else {}
        known = self.builtins
        if not isinstance(cls, str):
            raise self.refuse(path, f"class_name {cls!r} is not a string")
        is_lambda = cls in ("Lambda", "__lambda__") or cfg.get("function_type") == "lambda"
        if is_lambda and not self.policy.allow_lambda:
            raise self.refuse(
                path,
                "Lambda layers hold marshalled Python bytecode that runs when the model "
                f"is loaded; refused ({ALLOW_LAMBDA_HINT})",
            )
        self.check_reference(node, cls, path)
        if is_lambda:
            return
        if cls == "function":
            fn = node.get("config")
            self.use(fn, key)
            if not isinstance(fn, str) or (fn not in self.functions and not self.custom(fn)):
                raise self.refuse(
                    path,
                    f"function {fn!r} (module {node.get('module')!r}) is neither a Keras "
                    "built-in nor in the server's custom-object registry",
                )
        elif cls == "__typespec__":
            if node.get("spec_name") not in known.type_specs:
                raise self.refuse(path, f"type spec {node.get('spec_name')!r} is not TensorFlow's")
        elif cls in _TF_OP_LAYERS:
            if cfg.get("function") not in known.tf_ops:
                raise self.refuse(
                    path,
                    f"calls TensorFlow op {cfg.get('function')!r}, which is not one of the pure "
                    "tensor ops k2e allows (file, Python and system ops are refused)",
                )
        elif cls == "TensorFlowOpLayer":
            raise self.refuse(
                path, "TensorFlowOpLayer embeds a raw graph node, which may name any op"
            )
        elif cls == "ClassMethod":
            if cfg.get("cls_symbol") != "RaggedTensor" or (
                cfg.get("method_name") not in known.ragged_class_methods
            ):
                raise self.refuse(path, "calls a class method outside tf.RaggedTensor's from_*")
        elif cls in ("InstanceMethod", "InstanceProperty"):
            if cfg.get("attr_name") not in known.tensor_attributes:
                raise self.refuse(path, f"uses tensor attribute {cfg.get('attr_name')!r}")
        elif cls == "VocabularyFileCategoricalColumn":
            raise self.refuse(
                path,
                "a vocabulary-file column opens a file on the server; use "
                "categorical_column_with_vocabulary_list (an inline vocabulary)",
            )
        elif cls in _FEATURE_COLUMNS:
            return
        elif cls.startswith("__") and cls not in _DATA_MARKERS:
            raise self.refuse(path, f"unknown serialization marker {cls!r}")
        elif cls not in _DATA_MARKERS:
            self.check_class(cls, key, path)

    def check_class(self, cls: str, key: str | None, path: tuple[str, ...]) -> None:
        self.use(cls, key)
        if cls not in self.builtins.classes and not self.custom(cls):
            raise self.refuse(
                path,
                f"class {cls!r} is neither a Keras built-in nor in the server's custom-object "
                "registry (GET /custom-objects)",
            )

    def check_reference(self, node: dict[str, Any], cls: str, path: tuple[str, ...]) -> None:
        """``module``/``registered_name``: Keras imports ``module`` to find a class it has
        not registered, so a module outside Keras/TensorFlow must never be reached."""
        registered = node.get("registered_name", cls)
        if registered is not None and not isinstance(registered, str):
            raise self.refuse(path, f"registered_name {registered!r} is not a string")
        if (
            registered is not None
            and registered != cls
            and registered not in self.builtins.classes
            and not self.custom(registered)
        ):
            raise self.refuse(
                path,
                f"registered_name {registered!r} is neither a Keras built-in nor in the "
                "server's custom-object registry",
            )
        module = node.get("module")
        if module is None:
            return
        if not isinstance(module, str):
            raise self.refuse(path, f"module {module!r} is not a string")
        if module == "keras" or module.startswith("keras."):
            return  # and the name itself is checked against Keras's built-ins
        if cls == "__typespec__" and module.startswith("tensorflow."):
            return  # a tf.TypeSpec subclass, checked by its spec_name
        if module == "builtins" and cls == "function":
            return  # Keras searches its own built-in functions by this name
        # Keras looks custom names up before importing `module`.
        lookup = node.get("config") if cls == "function" else registered
        allowed = lookup in self.custom_names if cls == "function" else self.custom(lookup)
        if not allowed:
            raise self.refuse(
                path,
                f"refers to module {module!r}, outside Keras and TensorFlow: loading it "
                "would import that module",
            )
