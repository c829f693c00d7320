"""Runtime settings, read once from the environment (prefix ``K2E_``)."""

from functools import lru_cache
from pathlib import Path

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import SettingsConfigDict

from k2e.limit_settings import LimitSettings
from k2e.metrics_settings import MetricsSettings
from k2e.observability_settings import ObservabilitySettings
from k2e.scheduling_settings import SchedulingSettings
from k2e.webhook_settings import WebhookSettings


class Settings(
    LimitSettings, SchedulingSettings, WebhookSettings, ObservabilitySettings, MetricsSettings
):
    """Everything k2e reads from its environment: the limits on what a request and a
    dataset may ask for (k2e.limit_settings), the scheduler's (k2e.scheduling_settings),
    webhook deliveries' (k2e.webhook_settings), logs' and traces'
    (k2e.observability_settings), GET /metrics' (k2e.metrics_settings), and the rest here."""

    model_config = SettingsConfigDict(env_prefix="K2E_", extra="ignore")

    # Storage, stores and serving.
    data_dir: Path = Field(
        default=Path("data"),
        description="The data folder: uploads, model_dirs and exports live in its `storage/` "
        "folder, and beside it the SQLite job store (`k2e.db`, when there is no database URL) "
        "and a generated first admin key (`admin.key`).",
    )
    storage_url: str | None = Field(
        default=None,
        description="Where uploads, model_dirs and exports are kept. Unset: the local folder "
        "`storage/` in the data folder (API and workers on one machine or a shared volume). "
        "`s3://bucket/prefix`: an S3-compatible bucket that every node shares, credentials "
        "from `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and `AWS_REGION`.",
    )
    s3_endpoint_url: str | None = Field(
        default=None,
        description="The S3 endpoint for servers other than AWS (SeaweedFS, MinIO), e.g. "
        "`http://127.0.0.1:8333`. Unset: AWS.",
    )
    s3_part_bytes: int = Field(
        default=16 * 1024 * 1024,
        ge=5 * 1024 * 1024,
        description="Bytes of each part of a multipart upload to the bucket (files larger "
        "than this go up in parts, several at once); S3's minimum is 5 MiB.",
    )
    s3_presign_s: int = Field(
        default=300,
        ge=1,
        le=7 * 24 * 3600,
        description="Seconds a presigned download URL (`?redirect=true` on bucket storage) "
        "stays valid.",
    )
    # Conventional names first; K2E_-prefixed forms also work.
    redis_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("REDIS_URL", "K2E_REDIS_URL"),
        description="The Redis broker (also the live event stream's pub/sub). Unset: `make run` "
        "starts an embedded Redis and sets it; the API and workers need it.",
    )
    database_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("DATABASE_URL", "K2E_DATABASE_URL"),
        description="The job store, e.g. `postgresql://user@host/db` (`postgres://` and "
        "`postgresql://` use the psycopg 3 driver). Unset: an SQLite file, `k2e.db` in the "
        "data folder.",
    )
    api_host: str = Field(
        default="127.0.0.1", description="The address `make run` serves the API on."
    )
    api_port: int = Field(default=8000, description="The port `make run` serves the API on.")
    max_upload_bytes: int = Field(
        default=2 * 1024**3,
        description="Bytes of one upload request (413 beyond); less when the tenant's "
        "`max_bytes` quota leaves less.",
    )
    session_ttl_s: int = Field(
        default=12 * 3600,
        ge=60,
        le=30 * 86400,
        description="Seconds a dashboard session lasts after sign-in; sign-out ends it sooner.",
    )
    visibility_timeout_s: int = Field(
        default=3600,
        description="Seconds Redis waits for a task's acknowledgement before delivering it "
        "again; the reconciler also sends again a job handed to the broker this long ago "
        "that no worker has started.",
    )
    max_attempts: int = Field(
        default=3,
        description="Starts of one job; a job delivered again after this many ends failed "
        "(reason `max_attempts`).",
    )
    lease_s: float = Field(
        default=30.0,
        description="A running job's lease: a worker silent this long is presumed dead and "
        "its job is requeued by a reconciler.",
    )
    heartbeat_s: float = Field(
        default=5.0,
        description="Seconds between a worker's renewals of its job's lease; it notices a "
        "cancel at each.",
    )
    reconcile_interval_s: float = Field(
        default=10.0,
        description="Seconds between rounds of every worker's reconciler (requeue dead "
        "workers' jobs, hand waiting jobs to the broker, apply retention). A dead worker's "
        "job is requeued at most `lease_s + reconcile_interval_s` after its last heartbeat.",
    )
    gang_form_timeout_s: float = Field(
        default=60.0,
        description="Seconds a cluster job's chief waits for every member of its gang to "
        "join; past it the job goes back to the queue and is placed again.",
    )
    worker_address: str | None = Field(
        default=None,
        description="The host a cluster member puts in its `host:port` (TF_CONFIG) for the "
        "others to reach it; set it for nodes behind NAT. Unset: the address this node "
        "reaches the broker from (127.0.0.1 with a broker on loopback).",
    )
    member_ports: str = Field(
        default="20000-29999",
        pattern=r"^\d{4,5}-\d{4,5}$",
        description="The TCP ports (`first-last`) a cluster member's TensorFlow server may "
        "listen on, for the firewall between nodes. Kept below the kernel's ephemeral "
        "range (32768 and up on Linux), where outgoing connections take their ports: a "
        "member's port is chosen at random in it, free when chosen, and bound by its "
        "TensorFlow process seconds later.",
    )
    timeout_grace_s: int = Field(
        default=60,
        description="Celery's soft time limit is a job's `timeout_s` plus this, its hard "
        "limit `timeout_s` plus twice this: the backstop of the job's own deadline.",
    )
    worker_queues: str = Field(
        default="cpu",
        description="Comma-separated queues `make run`'s worker consumes; `gpu` is added "
        "when an NVIDIA GPU is visible.",
    )
    local_workers: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Worker processes `make run` starts, one job slot each (Celery node "
        "`k2e-<i>@<host>`), so that a cluster job's members or several jobs run on one "
        "machine. Each loads TensorFlow (about 0.5 GB).",
    )
    plugins: str = Field(
        default="",
        description="Comma-separated paths of JSON plugin manifests that add custom objects "
        'to the registry (name → `{"kind", "target": "module:attr"}`); only workers import '
        "their targets.",
    )
    allow_lambda: bool = Field(
        default=False,
        description="Accept `Lambda` layers, which run the uploader's Python bytecode when "
        "a model loads.",
    )
    inspect_cpu_s: int = Field(
        default=20,
        ge=1,
        description="CPU seconds of the child process that inspects each uploaded model or "
        "dataset.",
    )
    inspect_memory_bytes: int = Field(
        default=1024**3, ge=1, description="Address space of the inspection child."
    )
    inspect_timeout_s: float = Field(
        default=30.0, gt=0, description="Wall-clock seconds of the inspection child."
    )

    # Worker limits (worker/).
    job_memory_bytes: int = Field(
        default=8 * 1024**3,
        ge=64 * 1024**2,
        description="A job whose worker process's resident memory (with the processes it "
        "started: a cluster member's TensorFlow) grows past this is stopped and ends failed "
        "(reason `out_of_memory`), never retried; on a cluster the bound holds for each "
        "member's worker.",
    )
    dataset_cache_bytes: int = Field(
        default=256 * 1024**2,
        ge=0,
        description="Training data (npz, CSV) whose decoded arrays take at most this many "
        "bytes is kept in the worker's memory after its first pass, so later epochs do not "
        "read the file again; larger data streams from its file every epoch. 0 turns this "
        "off.",
    )
    worker_cache_bytes: int = Field(
        default=10 * 1024**3,
        ge=0,
        description="With bucket storage (`K2E_STORAGE_URL=s3://...`): the most bytes of "
        "uploaded models and datasets a worker keeps in `cache/` in its data folder, so a "
        "job whose inputs an earlier job fetched downloads nothing; the least recently used "
        "go first past this (never those a running job reads). Unused with the local folder.",
    )
    job_memory_sample_s: float = Field(
        default=0.25, gt=0, description="Seconds between samples of a job's resident memory."
    )
    job_stop_grace_s: float = Field(
        default=5.0,
        gt=0,
        description="A job that does not stop within this of a cancel or of the memory "
        "bound is interrupted wherever it is (and, over the memory bound, its worker "
        "process replaced).",
    )

    # Identity.
    admin_key: str | None = Field(
        default=None,
        min_length=20,
        max_length=512,
        description="An admin key of the `default` tenant the API provisions on start. "
        "Unset: the first start on a store with no key generates one, prints it once and "
        "writes it to `admin.key` in the data folder (mode 0600). Required by "
        "`docker compose`.",
    )
    key_cache_s: float = Field(
        default=5.0,
        ge=0,
        le=60,
        description="Seconds an API process trusts a key lookup (and a dashboard session): "
        "a revoked key stops working within this in every process, at once in the one that "
        "revoked it; an open event stream checks its key this often (at least every 1 s).",
    )

    # Default quotas of a tenant (each tenant may override them).
    quota_max_active_jobs: int = Field(
        default=100,
        ge=1,
        description="Default `max_active_jobs`: a tenant's jobs queued, running or "
        "cancelling at once (429 beyond).",
    )
    quota_max_bytes: int = Field(
        default=100 * 1024**3,
        ge=0,
        description="Default `max_bytes`: bytes of a tenant's uploads plus its ended jobs' "
        "model_dirs (413 for an upload beyond).",
    )
    quota_max_steps: int = Field(
        default=10_000_000,
        ge=1,
        description="Default `max_steps`: the largest `train.max_steps` a job may ask for.",
    )
    quota_max_run_s: int = Field(
        default=24 * 3600,
        ge=1,
        description="Default `max_run_s`: a job's run time from its first start; caps its "
        "`timeout_s`.",
    )
    quota_retry_after_s: int = Field(
        default=30,
        ge=1,
        description="Seconds a client is told to wait (`Retry-After`) when its tenant is at "
        "`max_active_jobs`.",
    )
    tenant_inflight_jobs: int = Field(
        default=2,
        ge=1,
        description="Fairness: a tenant has at most this many jobs handed to the broker at "
        "once; the rest wait in the job store and are handed over as its earlier jobs end.",
    )
    retention_days: float | None = Field(
        default=None,
        gt=0,
        description="Finished jobs' own model_dirs (checkpoints, exports) are removed this "
        "many days after the job ended; named model_dirs are kept. Unset: files are kept "
        "until `DELETE /jobs/{id}`.",
    )

    progress_min_interval_s: float = Field(
        default=0.25,
        ge=0,
        description="A running job writes its progress to the job store at most once per "
        "this many seconds, whatever `log_step_count_steps` says.",
    )

    # Exports (worker/verify.py).
    export_tolerance: float = Field(
        default=1e-4,
        ge=0,
        description="The most an export's signature outputs may differ from the model's own "
        "predictions; beyond it the job fails (reason `export_mismatch`).",
    )

    # POST /jobs/{id}/predict.
    predict_max_instances: int = Field(
        default=256, ge=1, description="Instances of one predict request (422 beyond)."
    )
    predict_max_bytes: int = Field(
        default=1024**2,
        ge=1024,
        description="Bytes of a predict request's JSON body (413 beyond).",
    )
    predict_timeout_s: float = Field(
        default=30.0,
        gt=0,
        le=600,
        description="Seconds the API waits for a worker's prediction (504 beyond; the task "
        "then expires unrun).",
    )

    # Reading jobs (service/jobcache.py, GET /jobs/{id}/events).
    job_cache_s: float = Field(
        default=5.0,
        ge=0,
        le=3600,
        description="Seconds an API process serves an ended job's JSON (`GET /jobs/{id}`) "
        "from memory.",
    )
    live_job_cache_s: float = Field(
        default=0.05,
        ge=0,
        le=5,
        description="The same for a queued or running job: it bounds how late a polling "
        "client sees a job end; at 0.05 s a job read by any number of clients costs the "
        "store at most 20 reads a second.",
    )
    events_poll_s: float = Field(
        default=0.5,
        gt=0,
        le=10,
        description="How often an event stream (`GET /jobs/{id}/events`) reads the store "
        "when Redis pub/sub is unavailable.",
    )
    events_keepalive_s: float = Field(
        default=15.0,
        gt=0,
        le=300,
        description="The idle time after which an event stream sends a keep-alive comment.",
    )

    @field_validator("member_ports")
    @classmethod
    def _port_range(cls, value: str) -> str:
        first, last = (int(part) for part in value.split("-"))
        if not 1024 <= first <= last <= 65535:
            raise ValueError("needs 1024 <= first <= last <= 65535")
        return value

    @property
    def member_port_range(self) -> tuple[int, int]:
        first, last = self.member_ports.split("-")
        return int(first), int(last)

    @property
    def admin_key_file(self) -> Path:
        return self.data_dir.resolve() / "admin.key"

    @property
    def storage_root(self) -> Path:
        return self.data_dir.resolve() / "storage"

    @property
    def sqlalchemy_url(self) -> str:
        """The job store URL: ``DATABASE_URL`` or an SQLite file under the data folder."""
        if self.database_url:
            url = self.database_url
            # Plain postgres:// URLs name the psycopg 3 driver that k2e installs.
            for prefix in ("postgres://", "postgresql://"):
                if url.startswith(prefix):
                    return "postgresql+psycopg://" + url[len(prefix) :]
            return url
        return f"sqlite:///{self.data_dir.resolve() / 'k2e.db'}"

    @property
    def broker_url(self) -> str:
        if not self.redis_url:
            raise RuntimeError(
                "REDIS_URL is not set; `make run` starts an embedded Redis and sets it"
            )
        return self.redis_url


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read from the environment on first use."""
    return Settings()
