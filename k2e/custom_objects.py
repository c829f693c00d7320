"""The server's custom-object registry, read from JSON manifests without importing them.

Each manifest maps a registry name to ``{"kind", "target": "module:attribute",
"description"}``. k2e ships ``plugins/builtin.json``; operators add manifests of
their own with ``K2E_PLUGINS`` (comma-separated paths). Only the worker imports
the targets.
"""

import json
from functools import lru_cache
from pathlib import Path

from pydantic import BaseModel, ValidationError

from k2e.schemas import CustomObjectInfo

BUILTIN_MANIFEST = Path(__file__).parent / "plugins" / "builtin.json"


class CustomObjectEntry(BaseModel):
    kind: str
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
