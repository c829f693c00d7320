"""The FastAPI application."""

import logging
import os
import threading

from fastapi import FastAPI

from k2e import logs, tracing
from k2e.schemas import ConvertRequest, PredictRequest
from k2e.settings import Settings, get_settings
from k2e.tenancy.bodies import DEFAULT_TENANT
from k2e.version import __version__
from k2e.vetting.sandbox import SandboxLimits
from k2e.vetting.selfcheck import sandbox_check
from service.apidocs.pages import add_docs
from service.auth import KeyCache, SessionCache
from service.backend import Backend
from service.event_feeds import EventBroker
from service.fastpath import JobReadFastPath
from service.job_files import member_view
from service.jobcache import JobCache
from service.metrics.http import RequestMetrics
from service.openapi import add_request_schemas
from service.problems import add_exception_handlers
from service.request_context import RequestContext
from service.routes import (
    convert,
    events,
    health,
    jobs,
    metrics,
    predict,
    queues,
    reruns,
    tenants,
    uploads,
    webhooks,
)
from service.ui import dashboard as ui

log = logging.getLogger("k2e.api")


def create_app(settings: Settings | None = None) -> FastAPI:
    """The API; ``settings`` default to the process's (read from the environment)."""
    settings = settings if settings is not None else get_settings()
    if settings.log_format == "json":
        # uvicorn's own loggers too: every line the API process writes is JSON.
        logs.use_json_logs(loggers=("uvicorn", "uvicorn.error", "uvicorn.access"))
    tracing.setup(settings, "api")
    app = FastAPI(
        title="k2e",
        version=__version__,
        summary="Keras models in, TensorFlow Estimator training jobs out.",
        # Served by service.apidocs from k2e's own files (FastAPI's load a CDN's); no ReDoc.
        docs_url=None,
        redoc_url=None,
    )
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    backend = Backend.from_settings(settings)
    backend.store.create_schema()
    backend.storage.ensure()
    stale = backend.storage.remove_stale_tmp()
    if stale:
        log.info("removed %d upload files left by an earlier crash", stale)
    # In the background: a bucket that does not answer must not hold up the start.
    threading.Thread(target=abort_stale_uploads, args=(backend,), daemon=True).start()
    bootstrap_admin_key(backend)
    backend.storage.for_tenant(DEFAULT_TENANT)
    # In the background: /readyz and uploads wait for it, the rest of the API does not.
    sandbox_check(backend.storage.base / "tmp", SandboxLimits.from_settings(settings))
    app.state.backend = backend
    app.state.key_cache = KeyCache(settings.key_cache_s)
    app.state.session_cache = SessionCache(settings.key_cache_s)
    app.state.job_cache = JobCache(
        settings.job_cache_s,
        settings.live_job_cache_s,
        member_view=member_view(backend),
        place=backend.placement.place,
        cluster=backend.clusters.of,
    )
    app.state.event_broker = EventBroker(
        backend.store,
        settings.redis_url,
        settings.events_poll_s,
        settings.events_keepalive_s,
        cluster=backend.clusters.of,
    )
    add_exception_handlers(app)
    # The fast path outermost (added last): it answers and counts its reads before
    # anything else runs; every other request is counted by RequestMetrics.
    app.add_middleware(RequestMetrics)
    app.add_middleware(JobReadFastPath)
    app.add_middleware(RequestContext)  # added last: the outermost
    for module in (
        health,
        uploads,
        convert,
        jobs,
        reruns,
        predict,
        events,
        tenants,
        queues,
        webhooks,
        metrics,
        ui,
    ):
        app.include_router(module.router)
    add_docs(app)
    add_request_schemas(app, {"ConvertRequest": ConvertRequest, "PredictRequest": PredictRequest})
    log.info(
        "k2e API: storage at %s, job store %s",
        backend.storage.blobs.url,
        settings.sqlalchemy_url.split("@")[-1],
    )
    return app


def bootstrap_admin_key(backend: Backend) -> None:
    """With no key in the store, create an admin key, print it once, and write it to
    ``<data_dir>/admin.key`` (mode 0600); K2E_ADMIN_KEY provisions that key instead."""
    settings = backend.settings
    key = backend.tenants.bootstrap(settings.admin_key)
    if key is None:
        return
    path = settings.admin_key_file
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    os.chmod(path, 0o600)
    # Printed once, on the first start: later starts find a key in the store.
    print(f"k2e: created the first admin API key, also written to {path}:\n  {key}", flush=True)


def abort_stale_uploads(backend: Backend) -> None:
    """On bucket storage, abort the multipart uploads an earlier process left unfinished
    (k2e.blob_upload.abort_stale); a bucket that does not answer now is only logged."""
    from k2e.blobstore_s3 import S3BlobStore

    blobs = backend.storage.blobs
    if not isinstance(blobs, S3BlobStore):
        return
    from k2e.blob_upload import abort_stale

    try:
        aborted = abort_stale(blobs)
    except Exception:
        log.warning("could not look for unfinished uploads in the bucket", exc_info=True)
        return
    if aborted:
        log.info("aborted %d unfinished uploads in the bucket", aborted)
