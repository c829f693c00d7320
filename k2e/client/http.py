"""The k2e API client (sync): uploads, jobs, events, downloads, tenants and keys (webhooks:
k2e.client.webhooks)."""

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, TypeVar

import httpx

from k2e.client.downloads import save_archive, unpack_archive
from k2e.client.endpoint import resolve_config
from k2e.client.exceptions import ClientError
from k2e.client.following import FollowOptions, JobStreamEvent, follow
from k2e.client.transport import DEFAULT_TIMEOUT, Session
from k2e.client.webhooks import WebhookCalls
from k2e.cluster_schemas import Distribution
from k2e.compat import Self
from k2e.plan_schemas import Plan
from k2e.queue_schemas import WorkerSummary
from k2e.schemas import (
    CheckpointInfo,
    ConvertRequest,
    CustomObjectInfo,
    DatasetInfo,
    DatasetPage,
    Job,
    JobLog,
    JobPage,
    JobScalars,
    JobStatus,
    ModelInfo,
    ModelPage,
)
from k2e.tenancy.bodies import ApiKey, ApiKeyCreated, Quotas, Tenant

M = TypeVar("M", Job, Plan)

# A file to upload: a path, or its bytes (then name it: the API reads the format from the
# file name's suffix).
Source = str | Path | bytes
Spec = ConvertRequest | dict[str, Any]
# A cluster's shape: ``Distribution(workers=2, parameter_servers=1)`` or its JSON.
Shape = Distribution | dict[str, Any]


class WaitTimeout(ClientError):
    """``wait`` gave up before the job ended; the job goes on."""


def _file(source: Source, filename: str | None, default: str) -> tuple[str, IO[bytes] | bytes]:
    if isinstance(source, bytes):
        return filename or default, source
    path = Path(source)
    return filename or path.name, path.open("rb")


def _spec_body(
    spec: Spec, priority: str | None = None, distribution: Shape | None = None
) -> dict[str, Any]:
    """The JSON body of a spec; ``priority`` (a class name) and ``distribution`` (a
    cluster's shape) over the spec's own."""
    body = (
        spec.model_dump(mode="json", exclude_unset=True)
        if isinstance(spec, ConvertRequest)
        else spec
    )
    if priority is not None:
        body = {**body, "priority": priority}
    if isinstance(distribution, Distribution):
        distribution = distribution.model_dump(mode="json")
    return body if distribution is None else {**body, "distribution": distribution}


class Client(WebhookCalls):
    """One API and key. Use as a context manager, or call ``close()``."""

    def __init__(
        self,
        url: str,
        api_key: str | None = None,
        *,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
        http: httpx.Client | None = None,
    ) -> None:
        self.session = Session(url, api_key, timeout=timeout, transport=transport, http=http)

    @classmethod
    def from_env(cls, url: str | None = None, api_key: str | None = None, **kwargs: Any) -> Self:
        """The URL and key from the environment, the config file, or ``make run``'s key file
        (k2e.client.endpoint)."""
        config = resolve_config(url, api_key)
        return cls(config.url, config.api_key, **kwargs)

    @property
    def url(self) -> str:
        return self.session.url

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # --- uploads ---------------------------------------------------------------------------

    def _upload(self, noun: str, source: Source, filename: str | None) -> dict[str, Any]:
        name, content = _file(source, filename, f"upload.{'h5' if noun == 'models' else 'npz'}")
        try:
            return self.session.request("POST", f"/{noun}", files={"file": (name, content)}).json()
        finally:
            if not isinstance(content, bytes):
                content.close()

    def upload_model(self, source: Source, filename: str | None = None) -> ModelInfo:
        """Upload a Keras model (``.h5``/``.hdf5`` or ``.keras``)."""
        return ModelInfo.model_validate(self._upload("models", source, filename))

    def upload_dataset(self, source: Source, filename: str | None = None) -> DatasetInfo:
        """Upload a dataset (``.npz``, ``.csv``, ``.tfrecord``, ``.tfrecord.gz``)."""
        return DatasetInfo.model_validate(self._upload("datasets", source, filename))

    def list_models(self, limit: int = 50, cursor: str | None = None) -> ModelPage:
        params = {"limit": limit, **({"cursor": cursor} if cursor else {})}
        return self.session.get_as(ModelPage, "/models", params=params)

    def list_datasets(self, limit: int = 50, cursor: str | None = None) -> DatasetPage:
        params = {"limit": limit, **({"cursor": cursor} if cursor else {})}
        return self.session.get_as(DatasetPage, "/datasets", params=params)

    def get_model(self, model_id: str) -> ModelInfo:
        return self.session.get_as(ModelInfo, f"/models/{model_id}")

    def get_dataset(self, dataset_id: str) -> DatasetInfo:
        return self.session.get_as(DatasetInfo, f"/datasets/{dataset_id}")

    def delete_model(self, model_id: str) -> None:
        self.session.request("DELETE", f"/models/{model_id}")

    def delete_dataset(self, dataset_id: str) -> None:
        self.session.request("DELETE", f"/datasets/{dataset_id}")

    def custom_objects(self) -> list[CustomObjectInfo]:
        return self.session.get_list(CustomObjectInfo, "/custom-objects")

    # --- jobs ------------------------------------------------------------------------------

    def submit(
        self,
        spec: Spec,
        idempotency_key: str | None = None,
        priority: str | None = None,
        distribution: Shape | None = None,
    ) -> Job:
        """Submit a spec naming uploaded ids; 202 gives the queued job. ``priority``: its
        priority class (e.g. "high"), over the spec's; ``distribution``: train on a cluster
        of that shape (``Job.cluster`` then shows its members)."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        body = _spec_body(spec, priority, distribution)
        return self.session.call_as(Job, "POST", "/convert", json=body, headers=headers)

    def submit_files(
        self,
        spec: Spec,
        model: Source | None = None,
        train_data: Source | None = None,
        eval_data: Source | None = None,
        idempotency_key: str | None = None,
        priority: str | None = None,
        distribution: Shape | None = None,
    ) -> Job:
        """Submit a spec and its files in one multipart request (the spec names no ids for
        the files it carries); ``priority`` and ``distribution`` as for ``submit``."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        files = (model, train_data, eval_data)
        return self._convert(Job, spec, files, priority, headers, distribution=distribution)

    def plan(
        self,
        spec: Spec,
        model: Source | None = None,
        train_data: Source | None = None,
        eval_data: Source | None = None,
        priority: str | None = None,
    ) -> Plan:
        """A dry run (POST /convert?dry_run=true): what the job would be, from every check
        a submission runs; nothing is kept, the files given included."""
        files = (model, train_data, eval_data)
        return self._convert(Plan, spec, files, priority, {}, {"dry_run": "true"})

    def _convert(
        self,
        answer: type[M],
        spec: Spec,
        sources: tuple[Source | None, Source | None, Source | None],
        priority: str | None,
        headers: dict[str, str],
        params: dict[str, str] | None = None,
        distribution: Shape | None = None,
    ) -> M:
        if all(source is None for source in sources):
            body = _spec_body(spec, priority, distribution)
            return self.session.call_as(
                answer, "POST", "/convert", json=body, headers=headers, params=params
            )
        files: dict[str, tuple[str, IO[bytes] | bytes]] = {}
        for field, source, default in zip(
            ("model", "train_data", "eval_data"),
            sources,
            ("model.h5", "train.npz", "eval.npz"),
            strict=True,
        ):
            if source is not None:
                files[field] = _file(source, None, default)
        try:
            return self.session.call_as(
                answer,
                "POST",
                "/convert",
                data={"spec": json.dumps(_spec_body(spec, priority, distribution))},
                files=files,
                headers=headers,
                params=params,
            )
        finally:
            for _, content in files.values():
                if not isinstance(content, bytes):
                    content.close()

    def rerun(self, job_id: str) -> Job:
        """A new job with the job's inputs (its spec, recorded seeds, model and datasets)."""
        return self.session.call_as(Job, "POST", f"/jobs/{job_id}/rerun")

    def get_job(self, job_id: str) -> Job:
        return self.session.get_as(Job, f"/jobs/{job_id}")

    def list_jobs(
        self,
        status: JobStatus | str | None = None,
        limit: int = 50,
        cursor: str | None = None,
        tenant: str | None = None,
    ) -> JobPage:
        """One page of jobs, newest first; pass ``next_cursor`` back for the next."""
        params: dict[str, Any] = {"limit": limit}
        for name, value in (("status", status), ("cursor", cursor), ("tenant", tenant)):
            if value:
                params[name] = str(value)
        return self.session.get_as(JobPage, "/jobs", params=params)

    def iter_jobs(
        self, status: JobStatus | str | None = None, page_size: int = 100
    ) -> Iterator[Job]:
        """Every job, newest first, page after page."""
        cursor: str | None = None
        while True:
            page = self.list_jobs(status, page_size, cursor)
            yield from page.items
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    def cancel(self, job_id: str) -> Job:
        return self.session.call_as(Job, "POST", f"/jobs/{job_id}/cancel")

    def suspend(self, job_id: str) -> Job:
        """Suspend a job: at once while it waits, at its next step (a checkpoint saved
        there) while it runs; ``resume`` goes on from there."""
        return self.session.call_as(Job, "POST", f"/jobs/{job_id}/suspend")

    def resume(self, job_id: str) -> Job:
        """Queue a suspended job again (or withdraw a suspend still pending)."""
        return self.session.call_as(Job, "POST", f"/jobs/{job_id}/resume")

    def delete_job(self, job_id: str) -> None:
        self.session.request("DELETE", f"/jobs/{job_id}")

    def logs(self, job_id: str, since: int = 0, limit: int = 1000) -> JobLog:
        return self.session.get_as(
            JobLog, f"/jobs/{job_id}/logs", params={"since": since, "limit": limit}
        )

    def scalars(self, job_id: str) -> JobScalars:
        return self.session.get_as(JobScalars, f"/jobs/{job_id}/metrics")

    def checkpoints(self, job_id: str) -> list[CheckpointInfo]:
        return self.session.get_list(CheckpointInfo, f"/jobs/{job_id}/checkpoints")

    def events(
        self,
        job_id: str,
        last_event_id: int | None = None,
        options: FollowOptions | None = None,
    ) -> Iterator[JobStreamEvent]:
        """The job's events from the start (or after ``last_event_id``) until ``end``,
        reconnecting with ``Last-Event-ID`` when the connection drops."""
        return follow(self.session, job_id, last_event_id, options)

    def wait(self, job_id: str, timeout_s: float | None = None) -> Job:
        """Follow the job until it ends, or is suspended, and return it; ``WaitTimeout``
        after ``timeout_s`` (checked at each event: the server sends one at least every
        ~15 s)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        for event in self.events(job_id):
            if event.event == "end":
                return event.job()
            if deadline is not None and time.monotonic() > deadline:
                break
        raise WaitTimeout(f"job {job_id} did not end within {timeout_s} s")

    # --- downloads -------------------------------------------------------------------------

    def download_savedmodel(self, job_id: str, dest: str | Path, archive: bool = False) -> Path:
        """The newest export: unpacked into ``dest`` (returns its version folder), or with
        ``archive`` the tar.gz saved in ``dest`` (returns the file)."""
        return self._download(f"/jobs/{job_id}/savedmodel", Path(dest), archive, f"{job_id}.tar.gz")

    def download_checkpoint(
        self, job_id: str, step: int, dest: str | Path, archive: bool = False
    ) -> Path:
        """One checkpoint's files, unpacked into ``dest`` (returns ``dest``) or as tar.gz."""
        path = f"/jobs/{job_id}/checkpoints/{step}"
        return self._download(path, Path(dest), archive, f"{job_id}-ckpt-{step}.tar.gz")

    def _download(self, path: str, dest: Path, archive: bool, fallback: str) -> Path:
        with self.session.stream("GET", path) as response:
            if archive:
                return save_archive(response, dest, fallback)
            tops = unpack_archive(response, dest)
        return tops[0] if len(tops) == 1 and tops[0].is_dir() else dest

    # --- tenants and keys ------------------------------------------------------------------

    def my_tenant(self) -> Tenant:
        return self.session.get_as(Tenant, "/tenants/me")

    def list_tenants(self) -> list[Tenant]:
        return self.session.get_list(Tenant, "/tenants")

    def create_tenant(self, name: str, quotas: Quotas | dict[str, Any] | None = None) -> Tenant:
        body: dict[str, Any] = {"name": name}
        if quotas is not None:
            body["quotas"] = (
                quotas.model_dump(exclude_none=True) if isinstance(quotas, Quotas) else quotas
            )
        return self.session.call_as(Tenant, "POST", "/tenants", json=body)

    def create_key(self, tenant: str, name: str, role: str = "member") -> ApiKeyCreated:
        """A new key of ``tenant``; its secret (``.key``) is in this answer only."""
        return self.session.call_as(
            ApiKeyCreated, "POST", f"/tenants/{tenant}/keys", json={"name": name, "role": role}
        )

    def delete_tenant(self, name: str) -> None:
        """Delete a tenant with its keys, uploads, jobs and files (none may be queued or
        running; the calling key's own tenant cannot be deleted)."""
        self.session.request("DELETE", f"/tenants/{name}")

    def list_keys(self) -> list[ApiKey]:
        return self.session.get_list(ApiKey, "/keys")

    def revoke_key(self, key_id: str) -> None:
        self.session.request("DELETE", f"/keys/{key_id}")

    def list_workers(self) -> list[WorkerSummary]:
        """The workers in the registry, live or lost (admin keys only)."""
        return self.session.get_list(WorkerSummary, "/workers")

    def ready(self) -> bool:
        """Whether the API answers ``/readyz`` (broker and job store up)."""
        try:
            self.session.request("GET", "/readyz")
        except ClientError:
            return False
        return True
