"""Path and query parameters several routes share, with the checks that keep odd values
away from the store's drivers."""

from typing import Annotated

from fastapi import Depends, Query

from k2e.errors import NotFound

# Job ids are the UUIDs k2e issues (the store's column is String(64)); upload ids are
# 32 hex digits. An id no resource can have is simply unknown (404) and never reaches the
# store's driver, which refuses some strings outright (PostgreSQL: a NUL byte).
_MAX_JOB_ID = 64
_UPLOAD_ID = frozenset("0123456789abcdef")


async def _job_id(job_id: str) -> str:
    if len(job_id) > _MAX_JOB_ID or "\x00" in job_id:
        raise NotFound(f"no job with id {job_id[:_MAX_JOB_ID]!r}")
    return job_id


def _check_upload_id(kind: str, upload_id: str) -> str:
    if len(upload_id) != 32 or not set(upload_id) <= _UPLOAD_ID:
        raise NotFound(f"no {kind} with id {upload_id[:64]!r}")
    return upload_id


async def model_id(model_id: str) -> str:
    """The ``{model_id}`` path parameter, checked."""
    return _check_upload_id("model", model_id)


async def dataset_id(dataset_id: str) -> str:
    """The ``{dataset_id}`` path parameter, checked."""
    return _check_upload_id("dataset", dataset_id)


JobId = Annotated[str, Depends(_job_id)]

# A cursor is opaque (k2e.cursors): URL-safe base64, valid for the list it came from only.
Cursor = Annotated[
    str | None,
    Query(
        pattern=r"^[A-Za-z0-9_-]{1,200}$",
        description="`next_cursor` of the previous page of the same list (opaque)",
    ),
]
Limit = Annotated[int, Query(ge=1, le=200)]
TenantFilter = Annotated[
    str | None,
    Query(
        max_length=64,
        description="Admins only: another tenant's name, or `*` for every tenant",
    ),
]
