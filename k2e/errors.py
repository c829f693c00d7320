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
    """No such resource, or another tenant's (the same answer: existence is not revealed)."""

    title = "Not found"


class InvalidSpec(K2EError):
    """A conversion spec breaks a documented (or late-failing) rule."""

    title = "Invalid conversion spec"


class InvalidUpload(K2EError):
    """An uploaded file cannot be used: wrong format, corrupt, or unsafe."""

    title = "Invalid upload"


class UploadTooLarge(K2EError):
    """An upload passes the size limit or the tenant's storage quota."""

    title = "Upload too large"


class Conflict(K2EError):
    """The resource is in a state that forbids this (in use, not ended, a key reused)."""

    title = "Conflict"


class QuotaExceeded(K2EError):
    """A tenant is at one of its quotas (jobs at once): try again later."""

    title = "Quota exceeded"

    def __init__(self, detail: str, retry_after_s: int) -> None:
        super().__init__(detail)
        self.retry_after_s = retry_after_s


class Unauthenticated(K2EError):
    """No API key, or one the store does not accept (unknown, wrong, revoked)."""

    title = "Unauthorized"


class Forbidden(K2EError):
    """The key is valid but its role may not do this."""

    title = "Forbidden"


class Unavailable(K2EError):
    """A dependency (broker, job store) does not answer."""

    title = "Service unavailable"


class InvalidInput(K2EError):
    """A request's input cannot be used (e.g. prediction instances the model does not take)."""

    title = "Invalid input"


class TimedOut(K2EError):
    """A dependency accepted the work but did not answer in time."""

    title = "Gateway timeout"
