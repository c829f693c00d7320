"""The server's custom-object registry, read from JSON manifests without importing them.

Each manifest maps a registry name to ``{"kind", "target": "module:attribute",
"description"}``; ``kind`` says what the target is (``KINDS``), so that a spec mapping a
model's name to it is checked against how the model uses that name. k2e ships
``plugins/builtin.json``; operators add manifests of their own with ``K2E_PLUGINS``
(comma-separated paths). Only the worker imports the targets.
"""

import json
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ValidationError

from k2e.schemas import CustomObjectInfo

BUILTIN_MANIFEST = Path(__file__).parent / "plugins" / "builtin.json"


# What a registry entry is: a Keras layer class, an activation function (``f(x)``), a loss
# or metric (a function ``f(y_true, y_pred)`` or a class), an initializer, regularizer,
# constraint or optimizer.
Kind = Literal[
    "layer",
    "activation",
    "loss",
    "metric",
    "initializer",
    "regularizer",
    "constraint",
    "optimizer",
]
KINDS: tuple[str, ...] = Kind.__args__  # type: ignore[attr-defined]

# How a config uses a name (k2e.vetting.configs.use_kind) -> the kinds of entry that fit there.
# Keras takes a loss wherever it takes a metric; a wrapper's ``fn`` is a loss or a metric.
FITS: dict[str, frozenset[str]] = {
    **{kind: frozenset({kind}) for kind in KINDS},
    "metric": frozenset({"metric", "loss"}),
    "function": frozenset({"loss", "metric"}),
}
# How a message names a use.
USE_NAMES = {
    "layer": "class",
    "activation": "activation function",
    "loss": "loss",
    "metric": "metric",
    "function": "loss or metric function",
    "initializer": "initializer",
    "regularizer": "regularizer",
    "constraint": "constraint",
    "optimizer": "optimizer",
    "object": "object",
}


def misfits(kind: str, uses: set[str] | list[str]) -> list[str]:
    """The uses of a name that a registry entry of ``kind`` cannot serve."""
    return sorted(use for use in uses if use in FITS and kind not in FITS[use])


class CustomObjectEntry(BaseModel):
    kind: Kind
    target: str
    description: str = ""


def _load_manifest(path: Path) -> dict[str, CustomObjectEntry]:
    try:
        raw = json.loads(path.read_text())
        return {name: CustomObjectEntry.model_validate(entry) for name, entry in raw.items()}
    except (OSError, ValueError, AttributeError, ValidationError) as exc:
        raise RuntimeError(f"custom-object manifest {path} is unreadable: {exc}") from exc


@lru_cache
def registry(plugins: str = "") -> dict[str, CustomObjectEntry]:
    """Registry name -> entry, built-ins first, then each manifest named in ``plugins``."""
    entries = dict(_load_manifest(BUILTIN_MANIFEST))
    for item in filter(None, (p.strip() for p in plugins.split(","))):
        entries.update(_load_manifest(Path(item)))
    return entries


def listing(plugins: str = "") -> list[CustomObjectInfo]:
    return [
        CustomObjectInfo(name=name, kind=e.kind, description=e.description)
        for name, e in sorted(registry(plugins).items())
    ]
