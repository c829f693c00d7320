"""Every error leaves the API as RFC 9457 ``application/problem+json``."""

import sys
from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException

from k2e.errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    InvalidSpec,
    InvalidUpload,
    K2EError,
    NotFound,
    QuotaExceeded,
    TimedOut,
    Unauthenticated,
    Unavailable,
    UploadTooLarge,
)

PROBLEM_JSON = "application/problem+json"

_STATUS: dict[type[K2EError], int] = {
    NotFound: 404,
    InvalidSpec: 422,
    InvalidUpload: 422,
    InvalidInput: 422,
    TimedOut: 504,
    UploadTooLarge: 413,
    Conflict: 409,
    Unavailable: 503,
    QuotaExceeded: 429,
    Unauthenticated: 401,
    Forbidden: 403,
}

# Documented in each route's `responses=` so the OpenAPI spec names the error body.
PROBLEM_RESPONSE: dict[str, Any] = {
    "description": "A problem (RFC 9457)",
    "content": {
        PROBLEM_JSON: {
            "schema": {
                "type": "object",
                "properties": {
                    "type": {"type": "string"},
                    "title": {"type": "string"},
                    "status": {"type": "integer"},
                    "detail": {"type": "string"},
                    "errors": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "loc": {"type": "array", "items": {}},
                                "msg": {"type": "string"},
                            },
                        },
                    },
                },
                "required": ["type", "title", "status", "detail"],
            }
        }
    },
}


def problems(*codes: int) -> dict[int | str, dict[str, Any]]:
    return dict.fromkeys(codes, PROBLEM_RESPONSE)


def problem(
    status: int,
    title: str,
    detail: str,
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = {
        "type": "about:blank",
        "title": title,
        "status": status,
        "detail": detail,
        "errors": errors or [],
    }
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _validation_message(msg: str) -> str:
    # pydantic prefixes messages raised by our own validators; the rule's text is what matters.
    return msg.removeprefix("Value error, ")


def _clean_loc(loc: tuple[Any, ...] | list[Any]) -> list[Any]:
    # "body" is transport detail, and model validators add their class name to loc.
    return [part for part in loc if part != "body"]


def api_routes(routes: list[Any]) -> Iterator[APIRoute]:
    """The API routes under ``routes``, through included routers (FastAPI >= 0.165 keeps
    an included router as one route; k2e's routers have no prefix)."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        elif hasattr(route, "original_router"):
            yield from api_routes(route.original_router.routes)


def allowed_methods(app: FastAPI, path: str) -> set[str]:
    return {
        method
        for route in api_routes(app.routes)
        if route.path_regex.match(path)
        for method in route.methods or ()
    }


def add_exception_handlers(app: FastAPI) -> None:
    @app.exception_handler(K2EError)
    async def _domain(_: Request, exc: K2EError) -> JSONResponse:
        status = next((code for cls, code in _STATUS.items() if isinstance(exc, cls)), 400)
        headers = None
        if isinstance(exc, Unauthenticated):
            headers = {"WWW-Authenticate": 'Bearer realm="k2e"'}
        elif isinstance(exc, QuotaExceeded):
            headers = {"Retry-After": str(exc.retry_after_s)}
        errors = [e.as_dict() for e in exc.errors]
        return problem(status, exc.title, exc.detail, errors, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors: list[dict[str, Any]] = [
            {"loc": _clean_loc(e.get("loc", ())), "msg": _validation_message(str(e.get("msg")))}
            for e in exc.errors()
        ]
        detail = (
            errors[0]["msg"]
            if len(errors) == 1
            else "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in errors)
        )
        return problem(422, "Invalid request", detail, errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = str(exc.detail)
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 405:
            # Starlette names the methods of the first route that matched the path only;
            # a path served by several routes (GET and POST /models) allows them all.
            headers["Allow"] = ", ".join(sorted(allowed_methods(app, request.url.path)))
        return problem(exc.status_code, detail, detail, headers=headers or None)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        if storage_outage(exc):
            return problem(
                503,
                "Storage unavailable",
                "the storage bucket did not answer; try again",
                headers={"Retry-After": str(STORAGE_RETRY_AFTER_S)},
            )
        return problem(500, "Internal error", f"{type(exc).__name__}: the error was logged")


# How long a client is asked to wait after the bucket did not answer.
STORAGE_RETRY_AFTER_S = 5


def storage_outage(exc: BaseException) -> bool:
    """Whether ``exc`` says the S3 bucket did not answer (no connection, a timeout, a 5xx
    after the client's retries). Only a server on bucket storage has loaded the bucket
    store, so the local folder's errors never match."""
    module = sys.modules.get("k2e.blobstore_s3")
    return module is not None and bool(module.unavailable(exc))
