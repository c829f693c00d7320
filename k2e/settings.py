"""Runtime settings, read once from the environment (prefix ``K2E_``)."""

from functools import lru_cache
from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Everything k2e reads from its environment."""

    model_config = SettingsConfigDict(env_prefix="K2E_", extra="ignore")

    data_dir: Path = Path("data")
    # Conventional names first; K2E_-prefixed forms also work.
    redis_url: str | None = Field(
        default=None, validation_alias=AliasChoices("REDIS_URL", "K2E_REDIS_URL")
    )
    database_url: str | None = Field(
        default=None, validation_alias=AliasChoices("DATABASE_URL", "K2E_DATABASE_URL")
    )
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    max_upload_bytes: int = 2 * 1024**3
    # A dashboard session (service/ui) lasts this long after sign-in; sign-out ends it sooner.
    session_ttl_s: int = Field(default=12 * 3600, ge=60, le=30 * 86400)
    # Seconds Redis waits for an acknowledgement before delivering a task again.
    visibility_timeout_s: int = 3600
    max_attempts: int = 3
    # A running job's lease: renewed every heartbeat_s; a worker silent for lease_s is
    # presumed dead and the reconciler (every reconcile_interval_s) requeues its job.
    lease_s: float = 30.0
    heartbeat_s: float = 5.0
    reconcile_interval_s: float = 10.0
    # Celery's hard time limit backstops `timeout_s` by this much.
    timeout_grace_s: int = 60
    # Queues this worker consumes; the launcher adds "gpu" when a GPU is visible.
    worker_queues: str = "cpu"
    # Comma-separated paths of JSON plugin manifests that add custom objects to the registry
    # (see k2e.custom_objects); the manifests name their targets, only workers import them.
    plugins: str = ""
    # Lambda layers run the uploader's Python bytecode when a model loads (k2e.vetting.configs).
    allow_lambda: bool = False
    # Limits of the child process that inspects each model file (k2e.vetting.sandbox).
    inspect_cpu_s: int = Field(default=20, ge=1)
    inspect_memory_bytes: int = Field(default=1024**3, ge=1)
    inspect_timeout_s: float = Field(default=30.0, gt=0)

    # Dataset reading limits (k2e/formats): what every dataset reader (the API's inspection
    # sandbox and the worker's loaders) refuses, whatever a file declares, before allocating.
    # A TFRecord record's declared length (a longer one is refused before it is read).
    max_record_bytes: int = Field(default=64 * 1024**2, ge=1024)
    # The most bytes a compressed dataset (a .tfrecord.gz, an .npz's members together) may
    # inflate to.
    max_inflated_bytes: int = Field(default=16 * 1024**3, ge=1024**2)
    # The most a compressed dataset (or an .npz member) may inflate relative to its
    # compressed size; inflation under 1 MiB is never refused for its ratio.
    max_inflation_ratio: float = Field(default=200.0, ge=1)
    # A CSV's columns, and the bytes of one CSV field.
    max_csv_columns: int = Field(default=10_000, ge=1)
    max_csv_field_bytes: int = Field(default=1024**2, ge=64)

    # Worker limits (worker/). A job whose worker process's resident memory grows past
    # job_memory_bytes is stopped and ends failed (reason out_of_memory), never retried; a
    # job that does not stop within job_stop_grace_s of a cancel or of that bound is
    # interrupted (and, over the memory bound, its worker process replaced).
    job_memory_bytes: int = Field(default=8 * 1024**3, ge=64 * 1024**2)
    # Training data (npz, CSV) whose decoded arrays take at most this many bytes is kept in
    # the worker's memory after its first pass, so later epochs do not read the file again;
    # larger data streams from the file every epoch (worker/inputs.py). 0 turns this off.
    dataset_cache_bytes: int = Field(default=256 * 1024**2, ge=0)
    job_memory_sample_s: float = Field(default=0.25, gt=0)
    job_stop_grace_s: float = Field(default=5.0, gt=0)

    # Identity. K2E_ADMIN_KEY provisions the first admin key (else one is generated and
    # written to <data_dir>/admin.key); an API process trusts a key lookup this long, so a
    # revoked key stops working within key_cache_s in every process (at once in the one
    # that revoked it).
    admin_key: str | None = Field(default=None, min_length=20, max_length=512)
    key_cache_s: float = Field(default=5.0, ge=0, le=60)

    # Default quotas of a tenant (each tenant may override them).
    quota_max_active_jobs: int = Field(default=100, ge=1)
    quota_max_bytes: int = Field(default=100 * 1024**3, ge=0)
    quota_max_steps: int = Field(default=10_000_000, ge=1)
    quota_max_run_s: int = Field(default=24 * 3600, ge=1)
    # Seconds a client is told to wait (Retry-After) when its tenant is at max_active_jobs.
    quota_retry_after_s: int = Field(default=30, ge=1)
    # Fairness: a tenant has at most this many jobs handed to the broker at once; the rest
    # wait in the job store and are handed over as its earlier jobs end.
    tenant_inflight_jobs: int = Field(default=2, ge=1)
    # Finished jobs' files (model_dirs, exports) are removed this many days after the job
    # ended; unset keeps them until DELETE /jobs/{id}.
    retention_days: float | None = Field(default=None, gt=0)

    # Spec limits (k2e/spec): what one request to POST /convert may ask for. Beyond them
    # the answer is a 4xx naming the field and the limit, before anything is kept.
    # A JSON body (or a multipart `spec` part) holds at most this many bytes (413), and
    # nests objects and arrays at most this deep (422).
    max_json_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    max_json_depth: int = Field(default=64, ge=8, le=150)
    # A multipart body has at most this many parts, its text parts this many bytes each.
    max_multipart_parts: int = Field(default=8, ge=1)
    max_field_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    # train.batch_size and eval.batch_size, train.shuffle_buffer (examples).
    max_batch_size: int = Field(default=65_536, ge=1)
    max_shuffle_buffer: int = Field(default=1_000_000, ge=1)
    # The parameters of a model, counted from its config before anything is built (a
    # lower bound: the layers whose sizes the config tells).
    max_model_params: int = Field(default=100_000_000, ge=1)
    # train.max_steps and eval.steps, whatever a tenant's max_steps quota says.
    max_steps: int = Field(default=1_000_000_000, ge=1)
    # Checkpoints: at most this many kept (keep_checkpoint_max; 0, "keep all", is refused),
    # at most this many written by one job (max_steps / save_checkpoints_steps), and
    # keep_checkpoint_every_n_hours at least this (each such checkpoint is kept for good).
    max_keep_checkpoints: int = Field(default=100, ge=1)
    max_checkpoints_per_job: int = Field(default=100_000, ge=1)
    min_keep_checkpoint_every_n_hours: float = Field(default=1.0, gt=0)
    # A running job writes its progress to the job store at most once per this many
    # seconds, whatever log_step_count_steps says (worker/hooks.py).
    progress_min_interval_s: float = Field(default=0.25, ge=0)

    # Exports are verified (worker/verify.py): every signature's outputs may differ from
    # the model's own predictions by at most this much, else the job fails export_mismatch.
    export_tolerance: float = Field(default=1e-4, ge=0)

    # POST /jobs/{id}/predict: instances per request, bytes of its JSON body (413 beyond),
    # and how long the API waits for a worker's answer (504 beyond).
    predict_max_instances: int = Field(default=256, ge=1)
    predict_max_bytes: int = Field(default=1024**2, ge=1024)
    predict_timeout_s: float = Field(default=30.0, gt=0, le=600)

    # Seconds an API process serves a job's JSON from memory (GET /jobs/{id}): an ended
    # job's, and a queued or running one's (service/jobcache.py). The live one bounds how
    # late a polling client sees a job end; at 0.05 s a job read by any number of clients
    # costs the store at most 20 reads a second.
    job_cache_s: float = Field(default=5.0, ge=0, le=3600)
    live_job_cache_s: float = Field(default=0.05, ge=0, le=5)
    # GET /jobs/{id}/events: how often a stream reads the store when Redis pub/sub is
    # unavailable, and the idle time after which it sends a keep-alive comment.
    events_poll_s: float = Field(default=0.5, gt=0, le=10)
    events_keepalive_s: float = Field(default=15.0, gt=0, le=300)

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
