"""One reading of the Authorization header (service/auth.bearer_key), for the routes and the
GET /jobs/{id} fast path alike: the key the framework's HTTPBearer would have read, or none."""

import asyncio

import pytest
from fastapi.security import HTTPBearer
from starlette.requests import Request

from service.auth import bearer_key
from service.fastpath import authorization_header

VALUES = [
    None,
    "",
    "Bearer k2e_abc",
    "bearer k2e_abc",
    "BEARER k2e_abc",
    "Bearer  k2e_abc ",
    "Bearer",
    "Bearer ",
    "Bearer    ",
    "Basic k2e_abc",
    " Bearer k2e_abc",
    "Bearer k2e abc",
    "Bearerk2e_abc",
]


def _scope(value: str | None) -> dict:
    headers = [] if value is None else [(b"authorization", value.encode("latin-1"))]
    return {"type": "http", "method": "GET", "path": "/", "headers": headers}


def _framework_key(value: str | None) -> str | None:
    credentials = asyncio.run(HTTPBearer(auto_error=False)(Request(_scope(value))))
    return None if credentials is None else credentials.credentials


@pytest.mark.parametrize("value", VALUES)
def test_the_key_is_the_one_the_framework_reads(value: str | None) -> None:
    assert bearer_key(value) == _framework_key(value)
    assert bearer_key(authorization_header(_scope(value))) == _framework_key(value)


def test_the_first_authorization_header_counts() -> None:
    scope = _scope("Bearer first")
    scope["headers"].append((b"authorization", b"Bearer second"))
    assert bearer_key(authorization_header(scope)) == "first"
    assert bearer_key(Request(scope).headers.get("Authorization")) == "first"
