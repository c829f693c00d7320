"""Liveness and readiness."""

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from k2e.errors import Unavailable
from service.deps import BackendDep
from service.problems import problem, problems
from service.upload_intake import require_sandbox

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="200 while the API runs", operation_id="healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="200 when the broker, the job store and the file store answer and uploads "
    "can be inspected",
    responses=problems(503),
    operation_id="readyz",
)
async def readyz(backend: BackendDep) -> JSONResponse:
    checks = {}
    for name, check in (
        ("job_store", backend.store.ping),
        ("broker", backend.sender.ping),
        ("storage", backend.storage.blobs.ping),
        ("inspection_sandbox", lambda: require_sandbox(backend)),
    ):
        try:
            await run_in_threadpool(check)
            checks[name] = "ok"
        except Unavailable as exc:
            checks[name] = exc.detail
        except Exception as exc:  # any driver error means "not ready", never a 500
            checks[name] = f"{type(exc).__name__}: {exc}"
    failing = {k: v for k, v in checks.items() if v != "ok"}
    if failing:
        return problem(503, "Not ready", "; ".join(f"{k}: {v}" for k, v in failing.items()))
    return JSONResponse({"status": "ready", "checks": checks})
