"""k2e's version, stated in one place (pyproject.toml's ``[project] version``): the API's
OpenAPI ``info.version``, ``k2e --version`` and the client's User-Agent all read it here."""

import re
from importlib import metadata
from pathlib import Path

_PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def _from_source_checkout() -> str | None:
    """The version in the checkout's pyproject.toml when this package runs from one: an
    editable install's metadata is only as new as its last ``pip install``."""
    try:
        text = _PYPROJECT.read_text()
    except OSError:
        return None
    if not re.search(r'^name = "k2e"$', text, re.MULTILINE):
        return None
    found = re.search(r'^version = "([^"]+)"$', text, re.MULTILINE)
    return found.group(1) if found else None


def _version() -> str:
    from_source = _from_source_checkout()
    if from_source is not None:
        return from_source
    try:
        return metadata.version("k2e")
    except metadata.PackageNotFoundError:
        return "0+unknown"


__version__ = _version()
