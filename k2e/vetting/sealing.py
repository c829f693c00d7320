"""The inspection child after its confinement: it reads the upload and nothing else.

Run as root, the child becomes ``nobody`` before it reads the upload (k2e.vetting.confinement).
Whatever it loads after that point must then be readable by ``nobody``, which k2e's own
files and the Python installation are not when they live under a private folder (a
checkout in ``mktemp -d``, a venv under ``/root``). So the child loads everything up
front (:func:`prepare`: its modules, the Keras built-in names) and :class:`Seal` then
refuses every later import and every open of a file but the upload, on every machine
alike, so that a module or data file loaded lazily is a failure the tests see here and
not only on a machine where the service's folders are private. A refusal the inspection
tripped over is the server's fault, not the file's (:meth:`Seal.fault`).
"""

import errno
import os
import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType
from typing import Any


def prepare() -> None:
    """Everything an inspection uses, loaded while the child can still read it."""
    # Codecs the readers look up lazily (zip member names are cp437).
    import encodings.ascii
    import encodings.cp437
    import encodings.idna
    import encodings.latin_1
    import encodings.utf_8_sig  # noqa: F401
    import socket  # noqa: F401  (the confinement probe's)

    import k2e.formats.csvdata
    import k2e.formats.examples
    import k2e.formats.npz
    import k2e.vetting.inspection
    import k2e.vetting.keras_archive  # noqa: F401
    from k2e.vetting.configs import keras_builtins

    keras_builtins()  # plugins/keras_builtins.json, cached for the whole child


class Seal:
    """After :meth:`close`: imports of modules not yet loaded and opens of files other
    than ``allowed`` fail (ModuleNotFoundError, PermissionError) and are recorded."""

    def __init__(self) -> None:
        self.allowed: frozenset[str] = frozenset()
        self.closed = False
        self.late: list[str] = []  # what the child needed after closing: k2e's defects

    def close(self, allowed: Sequence[str]) -> None:
        self.allowed = frozenset(os.path.abspath(p) for p in allowed)
        self.closed = True
        sys.meta_path.insert(0, _LateImports(self))  # type: ignore[arg-type]
        sys.addaudithook(self._audit)

    def fault(self) -> str | None:
        """What the child needed after its confinement, if anything: the inspection could
        not be judged on the file alone."""
        if not self.late:
            return None
        return "; ".join(dict.fromkeys(self.late))

    def _audit(self, event: str, args: tuple[Any, ...]) -> None:
        if event != "open" or not self.closed or isinstance(args[0], int):
            return
        path = os.fsdecode(args[0])
        if os.path.abspath(path) in self.allowed:
            return
        self.late.append(f"the file {path}")
        raise PermissionError(errno.EACCES, "opened after the inspection child's confinement", path)


class _LateImports:
    """A meta path finder that refuses every import: installed once all are done."""

    def __init__(self, seal: Seal) -> None:
        self.seal = seal

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        # A codec a file names and Python lacks is a LookupError: the file's business.
        if not fullname.startswith("encodings."):
            self.seal.late.append(f"the module {fullname}")
        raise ModuleNotFoundError(
            f"no module {fullname!r} after the inspection child's confinement", name=fullname
        )
