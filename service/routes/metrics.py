"""GET /metrics: Prometheus's text format, for an admin API key or K2E_METRICS_TOKEN."""

import hmac

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from prometheus_client import CONTENT_TYPE_LATEST

from k2e.errors import Unauthenticated
from service.auth import BearerKeyDep, current_caller
from service.deps import BackendDep
from service.metrics.http import http_exposition
from service.metrics.store_collector import store_exposition
from service.problems import problems

router = APIRouter(tags=["metrics"])


async def _may_read(request: Request, key: str | None) -> bool:
    if key is None:
        return False
    token = request.app.state.backend.settings.metrics_token
    if token and hmac.compare_digest(key.encode(), token.encode()):
        return True
    try:
        caller = await current_caller(request, key)
    except Unauthenticated:
        return False
    return caller.is_admin


@router.get(
    "/metrics",
    summary="The service's metrics in Prometheus's text format (an admin key, or the "
    "K2E_METRICS_TOKEN bearer token): requests, jobs, queues, slots, tenants, workers, "
    "uploads and the health of the store, the broker and the file store",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}, **problems(401)},
    operation_id="metrics",
)
async def metrics(request: Request, backend: BackendDep, key: BearerKeyDep) -> Response:
    if not await _may_read(request, key):
        raise Unauthenticated(
            "GET /metrics needs an admin API key or the metrics token (K2E_METRICS_TOKEN): "
            "`Authorization: Bearer <key>`"
        )
    body = http_exposition() + await run_in_threadpool(store_exposition, backend)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
