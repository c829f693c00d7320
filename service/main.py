"""The FastAPI application."""

import logging

from fastapi import FastAPI

from k2e.jobs.queueing import TaskSender
from k2e.jobs.store import JobStore
from k2e.schemas import ConvertRequest
from k2e.settings import Settings, get_settings
from k2e.storage import Storage
from service.jobcache import JobCache
from service.openapi import add_request_schemas
from service.problems import add_exception_handlers
from service.routes import convert, health, jobs, uploads
from service.submission import Backend

log = logging.getLogger("k2e.api")


def create_app(settings: Settings | None = None) -> FastAPI:
    """The API; ``settings`` default to the process's (read from the environment)."""
    settings = settings if settings is not None else get_settings()
    app = FastAPI(
        title="k2e",
        version="1.0.0",
        summary="Keras models in, TensorFlow Estimator training jobs out.",
    )
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = JobStore(settings.sqlalchemy_url)
    store.create_schema()
    storage = Storage(settings.storage_root)
    storage.ensure()
    app.state.backend = Backend(store, storage, TaskSender(settings), settings)
    app.state.job_cache = JobCache(settings.job_cache_s, settings.live_job_cache_s)
    add_exception_handlers(app)
    for module in (health, uploads, convert, jobs):
        app.include_router(module.router)
    add_request_schemas(app, {"ConvertRequest": ConvertRequest})
    log.info(
        "k2e API: storage at %s, job store %s",
        settings.storage_root,
        settings.sqlalchemy_url.split("@")[-1],
    )
    return app
