"""Domain errors. The API maps each to an HTTP problem in one place (service/problems.py)."""

from dataclasses import dataclass
from typing import Any


@dataclass
class FieldError:
    """One violated rule: where (``loc``) and what (``msg``)."""

    loc: tuple[str | int, ...]
    msg: str

    def as_dict(self) -> dict[str, Any]:
        return {"loc": list(self.loc), "msg": self.msg}


class K2EError(Exception):
    """Base class for errors k2e reports to its users."""

    title = "k2e error"

    def __init__(self, detail: str, errors: list[FieldError] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors: list[FieldError] = errors or []


class NotFound(K2EError):
    title = "Not found"


class InvalidSpec(K2EError):
    """A conversion spec breaks a documented (or late-failing) rule."""

    title = "Invalid conversion spec"


class InvalidUpload(K2EError):
    """An uploaded file cannot be used: wrong format, corrupt, or unsafe."""

    title = "Invalid upload"


class UploadTooLarge(K2EError):
    title = "Upload too large"


class Conflict(K2EError):
    title = "Conflict"


class Unavailable(K2EError):
    """A dependency (broker, job store) does not answer."""

    title = "Service unavailable"
