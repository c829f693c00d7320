"""Reads a Keras v3 ``.keras`` archive without TensorFlow.

A ``.keras`` file is a zip of ``config.json`` (the model config, with its
``compile_config``), ``metadata.json`` and ``model.weights.h5``. Anything else in it
(an ``assets/`` folder Keras would extract, a stray file) is refused, the config is
vetted like an HDF5 ``model_config`` and the weights file like any HDF5 file.
"""

import json
import os
import zipfile
from typing import Any

import h5py

from k2e.custom_registry import registry
from k2e.errors import InvalidSpec, InvalidUpload
from k2e.vetting.configs import VetPolicy, vet_model_config
from k2e.vetting.h5structure import vet_h5_structure
from k2e.vetting.inspection import H5Summary, sorted_uses
from k2e.vetting.metric_names import compiled_metric_names
from k2e.vetting.model_config import parse_model_config

CONFIG = "config.json"
METADATA = "metadata.json"
WEIGHTS = "model.weights.h5"
MEMBERS = (CONFIG, METADATA, WEIGHTS)
REQUIRED = (CONFIG, WEIGHTS)
MAX_JSON_BYTES = 64 * 1024**2
# A member may inflate this much (deflate peaks near 1032:1; Keras stores members as-is).
MAX_INFLATION = 100
_COMPILE_KEYS = ("optimizer", "loss", "metrics", "loss_weights", "weighted_metrics")


def _members(archive: zipfile.ZipFile) -> dict[str, zipfile.ZipInfo]:
    found: dict[str, zipfile.ZipInfo] = {}
    for info in archive.infolist():
        name = info.filename
        if name not in MEMBERS:
            raise InvalidUpload(
                f".keras archive member {name!r} is refused: an archive may hold only "
                f"{', '.join(MEMBERS)}"
            )
        if name in found:
            raise InvalidUpload(f".keras archive holds {name!r} twice")
        if info.flag_bits & 0x1:
            raise InvalidUpload(f".keras archive member {name!r} is encrypted")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise InvalidUpload(
                f".keras archive member {name!r} uses compression method {info.compress_type}; "
                "only stored and deflated members are read"
            )
        if info.file_size > MAX_INFLATION * info.compress_size + 1024**2:
            raise InvalidUpload(
                f".keras archive member {name!r} inflates from {info.compress_size} to "
                f"{info.file_size} bytes (a zip bomb?)"
            )
        found[name] = info
    missing = [name for name in REQUIRED if name not in found]
    if missing:
        raise InvalidUpload(f".keras archive lacks {', '.join(missing)}")
    return found


def _read_json(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> dict[str, Any]:
    if info.file_size > MAX_JSON_BYTES:
        raise InvalidUpload(f"{info.filename} is {info.file_size} bytes; at most {MAX_JSON_BYTES}")
    with archive.open(info) as member:
        raw = member.read(MAX_JSON_BYTES + 1)
    try:
        parsed = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise InvalidUpload(f"{info.filename} is not UTF-8 JSON: {exc}") from exc
    if not isinstance(parsed, dict):
        raise InvalidUpload(f"{info.filename} is not a JSON object")
    return parsed


def _plain(value: Any) -> Any:
    """Keras built-in functions (``{"class_name": "function", "config": "mae"}``) by name:
    the worker compiles with the name, so the metric is named as the user named it."""
    if isinstance(value, dict) and value.get("class_name") == "function":
        return value.get("config")
    if isinstance(value, dict) and "class_name" not in value:
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def compile_args_of(compile_config: Any) -> dict[str, Any] | None:
    """``model.compile`` arguments from a ``.keras`` ``compile_config`` (None: not compiled).

    Unlike HDF5's training_config, it holds what the user compiled with, not the metric
    objects compile built, so only function references need turning into names.
    """
    if not isinstance(compile_config, dict) or compile_config.get("optimizer") is None:
        return None
    return {key: _plain(compile_config.get(key)) for key in _COMPILE_KEYS}


def inspect_keras(path: str | os.PathLike[str], policy: VetPolicy | None = None) -> H5Summary:
    """Inspect a ``.keras`` archive; raises InvalidUpload if it is unusable or unsafe."""
    policy = policy if policy is not None else VetPolicy.of(registry())
    try:
        if not zipfile.is_zipfile(path):
            raise InvalidUpload("not a .keras (zip) archive")
        with zipfile.ZipFile(path) as archive:
            members = _members(archive)
            config = _read_json(archive, members[CONFIG])
            metadata = _read_json(archive, members[METADATA]) if METADATA in members else {}
            # The config and its compile_config are vetted before anything else is read.
            uses: dict[str, set[str]] = {}
            custom_names = vet_model_config(config, policy, CONFIG, uses)
            with archive.open(members[WEIGHTS]) as member, h5py.File(member, "r") as h5:
                vet_h5_structure(h5, members[WEIGHTS].file_size, WEIGHTS)
    except InvalidUpload:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as exc:
        raise InvalidUpload(f"corrupt or truncated .keras archive: {exc}") from exc
    except (KeyError, TypeError, RuntimeError) as exc:
        raise InvalidUpload(f"corrupt or truncated .keras archive: {exc}") from exc
    compile_config = config.get("compile_config")
    try:
        summary = parse_model_config(config)
        args = compile_args_of(compile_config)
        metric_names = compiled_metric_names(args, [o.name for o in summary.outputs])
    except InvalidSpec as exc:
        raise InvalidUpload(f".keras model: {exc.detail}") from exc
    version = metadata.get("keras_version")
    return H5Summary(
        summary=summary,
        compiled=args is not None,
        training_config=compile_config if isinstance(compile_config, dict) else None,
        metric_names=metric_names,
        keras_version=version if isinstance(version, str) else None,
        compile_args=args,
        format="keras",
        custom_names=custom_names,
        custom_uses=sorted_uses(uses),
    )
