"""The documented rules of ``model_to_estimator`` and the ones the library only enforces late.

Messages for the documented rules are the library's own wording (measured on
tensorflow-estimator 2.15.0), so a user who knows the library recognises them.
"""

import re
from collections.abc import Iterable, Mapping, Sequence

from k2e.errors import FieldError

NEITHER_MODEL = "Either `keras_model` or `keras_model_path` needs to be provided."
# The library's spelling ("specity") is kept on purpose: clients match on it.
BOTH_MODELS = "Please specity either `keras_model` or `keras_model_path`, but not both."
GCS_PATH = (
    "`keras_model_path` is a GCS URI; model_to_estimator does not support loading models from GCS."
)
NOT_COMPILED = (
    "The given keras model has not been compiled yet. Please compile the model "
    "with `model.compile()` before calling `model_to_estimator()`."
)
CHECKPOINT_FORMATS = ("checkpoint", "saver")
CHECKPOINT_TRIGGER_BOTH = "`save_checkpoints_steps` and `save_checkpoints_secs` cannot be both set."
SUBCLASSED_CHECKPOINT = (
    "Object-based checkpoints are currently not supported with subclassed models."
)
# A path a spec names: what every file system takes (NAME_MAX is 255 bytes), with room
# for the storage root before it (PATH_MAX 4096).
MAX_PATH_CHARS = 1024
MAX_PATH_COMPONENT_BYTES = 255
MAX_PATH_COMPONENTS = 32

# A named model_dir: a plain folder name of at most this many characters.
MAX_MODEL_DIR_CHARS = 128

# Matched whole (fullmatch): `$` also matches before a final newline.
_SAFE_NAME = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._-]{{0,{MAX_MODEL_DIR_CHARS - 1}}}")
_URI_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def checkpoint_format_message(value: object) -> str:
    return f'Checkpoint format must be one of "checkpoint" or "saver". Got {value}'


def check_checkpoint_format(value: str) -> None:
    if value not in CHECKPOINT_FORMATS:
        raise ValueError(checkpoint_format_message(value))


def check_one_checkpoint_trigger(steps: int | None, secs: int | None) -> None:
    """At most one of ``save_checkpoints_steps`` and ``save_checkpoints_secs``."""
    if steps is not None and secs is not None:
        raise ValueError(CHECKPOINT_TRIGGER_BOTH)


def compiled_errors(loc: tuple[str, ...], compiled: bool) -> list[FieldError]:
    """The model must be compiled (``model.compile()``) before it is converted."""
    return [] if compiled else [FieldError(loc, NOT_COMPILED)]


def checkpoint_format_errors(checkpoint_format: str, is_graph_network: bool) -> list[FieldError]:
    """Object-based checkpoints (``checkpoint``) need a graph network, not a subclassed
    model."""
    if checkpoint_format == "checkpoint" and not is_graph_network:
        return [FieldError(("checkpoint_format",), SUBCLASSED_CHECKPOINT)]
    return []


def check_one_model(has_model: bool, has_path: bool) -> None:
    """Exactly one of ``keras_model`` and ``keras_model_path``."""
    if not has_model and not has_path:
        raise ValueError(NEITHER_MODEL)
    if has_model and has_path:
        raise ValueError(BOTH_MODELS)


def check_model_path_form(path: str) -> None:
    """Refuse GCS (the documented rule) and every other remote scheme."""
    if path.startswith("gs://") or "storage.googleapis.com" in path:
        raise ValueError(GCS_PATH)
    if _URI_SCHEME.match(path):
        raise ValueError(
            "`keras_model_path` must be a model id from POST /models or a path under "
            "the storage root; URI schemes are not supported"
        )
    if path.startswith("/") or ".." in path.split("/") or "\\" in path or "\x00" in path:
        raise ValueError("`keras_model_path` must be relative to the storage root, without `..`")
    check_path_size(path, "keras_model_path")


def check_path_size(path: str, field: str) -> None:
    """A path's length, its components' lengths and their count: within what a file
    system takes (longer ones fail in the OS with ENAMETOOLONG)."""
    if len(path) > MAX_PATH_CHARS:
        raise ValueError(f"`{field}` is {len(path)} characters long; at most {MAX_PATH_CHARS}")
    components = path.split("/")
    if len(components) > MAX_PATH_COMPONENTS:
        raise ValueError(
            f"`{field}` has {len(components)} components; at most {MAX_PATH_COMPONENTS}"
        )
    for component in components:
        size = len(component.encode("utf-8", "surrogatepass"))
        if size > MAX_PATH_COMPONENT_BYTES:
            raise ValueError(
                f"`{field}` has a component of {size} bytes ({component[:40]!r}...); at most "
                f"{MAX_PATH_COMPONENT_BYTES} bytes (UTF-8) each"
            )


def check_model_dir_name(name: str) -> None:
    if not _SAFE_NAME.fullmatch(name) or name in {".", ".."}:
        raise ValueError(
            "`model_dir` must be a plain folder name: letters, digits, '.', '_' or '-', "
            f"at most {MAX_MODEL_DIR_CHARS} characters"
        )


def check_metric_names_map(
    mapping: Mapping[str, str] | None, metric_names: Sequence[str]
) -> list[FieldError]:
    """``metric_names_map`` must map every compiled metric name, and nothing else.

    The library checks this only once training has started; the wording is its own.
    """
    if mapping is None:
        return []
    errors = []
    missing = [name for name in metric_names if name not in mapping]
    unknown = [name for name in mapping if name not in metric_names]
    if missing:
        errors.append(
            FieldError(
                ("metric_names_map",),
                "Invalid `metric_names_map`. The following keras model metric names:"
                f'"{missing}" do not exist in the `metric_names_map` dictionary',
            )
        )
    if unknown:
        errors.append(
            FieldError(
                ("metric_names_map", unknown[0]),
                "Invalid `metric_names_map`. There are unexpected keys in the "
                f"`metric_names_map` dictionary. Expected keys: {list(metric_names)}, "
                f"Received: {unknown}",
            )
        )
    targets = list(mapping.values())
    for target in sorted({t for t in targets if targets.count(t) > 1}):
        errors.append(
            FieldError(("metric_names_map",), f"{target!r} is the target of more than one metric")
        )
    return errors


def check_export_outputs(
    export_outputs: Mapping[str, str] | None,
    outputs: Iterable[tuple[str, Sequence[int | None]]],
) -> list[FieldError]:
    """Keys must be output names; a regression head is ``[batch]``/``[batch, 1]``,
    a classification head rank 2."""
    if not export_outputs:
        return []
    shapes = dict(outputs)
    errors = []
    for key, kind in export_outputs.items():
        loc = ("export_outputs", key)
        if key not in shapes:
            errors.append(
                FieldError(
                    loc,
                    f"{key!r} is not an output of the model: keys of `export_outputs` must "
                    f"be a subset of model.output_names {sorted(shapes)}",
                )
            )
            continue
        shape = list(shapes[key])
        if kind == "regression" and not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)):
            errors.append(
                FieldError(
                    loc, f"a regression head must be [batch] or [batch, 1]; {key!r} is {shape}"
                )
            )
        if kind == "classification" and len(shape) != 2:
            errors.append(
                FieldError(loc, f"a classification head must be rank 2; {key!r} is {shape}")
            )
    return errors


def deterministic_errors(deterministic: bool, distributed: bool) -> list[FieldError]:
    """A cluster's members update the variables asynchronously, in no fixed order: no run
    of one is repeatable, so ``deterministic`` needs a job of one worker."""
    if not (deterministic and distributed):
        return []
    msg = (
        "`deterministic` needs a job on one worker: a cluster's asynchronous updates "
        "(`distribution`) make no run repeatable"
    )
    return [FieldError(("deterministic",), msg)]
