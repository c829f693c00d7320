"""The store's tables (SQLAlchemy Core): jobs and their events, tenants, API keys, uploads,
the quota reservations of uploads in progress, sessions, the server's own secrets, the
scheduler's, and webhooks with the outbox of their deliveries."""

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

jobs = Table(
    "k2e_jobs",
    metadata,
    # `seq` orders the list (newest first) and backs the cursor without a scan.
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("id", String(64), nullable=False, unique=True),
    Column("status", String(16), nullable=False, index=True),
    Column("queue", String(32), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("started_at", DateTime(timezone=True)),
    Column("finished_at", DateTime(timezone=True)),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("spec", JSON, nullable=False),
    Column("progress", JSON, nullable=False),
    Column("metrics", JSON, nullable=False),
    Column("error", JSON),
    Column("attempts", Integer, nullable=False, default=0),
    # Relative to the tenant's storage folder (absolute in rows older than tenancy).
    Column("model_dir", String(1024), nullable=False),
    Column("warm_start_from", String(1024)),
    Column("timeout_s", Integer),
    # The lease: who runs the job, until when. Renewed by the worker's heartbeat.
    Column("lease_owner", String(128)),
    Column("lease_expires_at", DateTime(timezone=True), index=True),
    Column("export_path", String(1024)),
    # The export's verification (schemas.ExportCheck), written with export_path.
    Column("export_check", JSON),
    # "<tenant>:<Idempotency-Key>": keys are per tenant.
    Column("idempotency_key", String(320), unique=True),
    Column("request_hash", String(64)),
    # Rows older than tenancy have none; they belong to the default tenant.
    Column("tenant", String(64), index=True),
    # "<tenant>:<model_dir name>" while a queued or running job holds a named model_dir,
    # NULL otherwise: the unique index lets one job at a time hold it.
    Column("dir_lock", String(200), unique=True),
    # When the job was handed to the broker; NULL while it waits for its tenant's turn.
    Column("dispatched_at", DateTime(timezone=True)),
    # The ids of the uploads the job uses, space-separated (deletion checks it).
    Column("uploads", String(200)),
    # Bytes the job's model_dir holds, measured when the job ends (quota usage).
    Column("disk_bytes", BigInteger),
    # The number of the job's newest event (k2e_job_events.num): the row a writer updates
    # to number its events also orders them, one writer at a time per job.
    Column("events_num", Integer),
    # The job's priority class's value when it was submitted (higher runs first); NULL
    # in rows older than priorities: the "normal" class.
    Column("priority", Integer),
    # How often the scheduler made the job yield its worker to another (NULL = never),
    # and when it last did: a job is preempted at most once per cool-down.
    Column("preemptions", Integer),
    Column("preempted_at", DateTime(timezone=True)),
    # "suspend" or "preempt" while the job's worker is asked to checkpoint and yield.
    Column("yield_request", String(16)),
    # A cluster job (spec.distribution): how often its gang has been placed; its members'
    # rows (job_members) carry the placement they belong to.
    Column("gang", Integer),
    # How the job was made (schemas.Provenance): digests and seeds from its submission,
    # versions and worker from its start.
    Column("provenance", JSON),
    # The X-Request-ID of the submission, carried into every log line of the job's life,
    # and its trace's context (a W3C traceparent; NULL with tracing off): k2e.tracing.
    Column("request_id", String(128)),
    Column("trace_context", String(128)),
    # The scheduler's turns: when a tenant last had a job handed over in a queue.
    Index("ix_k2e_jobs_turns", "tenant", "queue", "dispatched_at"),
)

events = Table(
    "k2e_job_events",
    metadata,
    # Counts every job's events: never shown (it would count other tenants' activity).
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("job_id", String(64), nullable=False, index=True),
    # The event's number within its job, 1, 2, ...: its id on the stream, its `seq` in the
    # log. NULL only in rows older than it, until migration 0002 numbers them.
    Column("num", Integer),
    Column("at", DateTime(timezone=True), nullable=False),
    # A status name, "log", or what only GET /jobs/{id}/events shows: "progress", "loss",
    # "eval" and "end" (written with a job's terminal status; the stream closes after it).
    Column("kind", String(16), nullable=False),
    Column("message", Text, nullable=False),
    # The event's payload for "progress", "loss" and "eval"; NULL for the others.
    Column("data", JSON),
)

tenants = Table(
    "k2e_tenants",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    # Overrides of the settings' default quotas; absent keys take the default.
    Column("quotas", JSON, nullable=False),
)

api_keys = Table(
    "k2e_api_keys",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    # A prefix of the key's SHA-256: found by id, then compared in constant time.
    Column("id", String(32), nullable=False, unique=True),
    Column("key_hash", String(64), nullable=False),
    Column("tenant", String(64), nullable=False, index=True),
    Column("role", String(16), nullable=False),
    Column("name", String(128), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("last_used_at", DateTime(timezone=True)),
    Column("revoked_at", DateTime(timezone=True)),
)

uploads = Table(
    "k2e_uploads",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("id", String(32), nullable=False, unique=True),
    Column("kind", String(16), nullable=False),  # "model" or "dataset"
    Column("tenant", String(64), nullable=False, index=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("info", JSON, nullable=False),  # the ModelInfo or DatasetInfo
)

sessions = Table(
    "k2e_sessions",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    # SHA-256 of the cookie's secret: a leaked store does not sign anyone in.
    Column("token_hash", String(64), nullable=False, unique=True),
    # The API key the session was opened with: revoking the key ends the session.
    Column("key_id", String(32), nullable=False, index=True),
    # The double-submit token state-changing requests must echo in X-CSRF-Token.
    Column("csrf_token", String(64), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True)),
)

upload_reservations = Table(
    "k2e_upload_reservations",
    metadata,
    # Bytes an upload holds against its tenant's quota from the moment its size is known
    # until it is kept (its k2e_uploads row replaces this one) or refused (deleted).
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("tenant", String(64), nullable=False, index=True),
    Column("bytes", BigInteger, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

server_secrets = Table(
    "k2e_secrets",
    metadata,
    # Keys every API process shares: "cursor" signs and encrypts list cursors (k2e.cursors).
    Column("name", String(32), primary_key=True),
    Column("value", String(128), nullable=False),
)


workers = Table(
    "k2e_workers",
    metadata,
    # One row per worker process pool (a Celery worker), kept fresh by its heartbeat: the
    # scheduler counts the job slots of the live ones per queue.
    Column("name", String(200), primary_key=True),  # "<host>:<pid>"
    Column("node", String(128), nullable=False),
    Column("queues", String(200), nullable=False),  # space-separated
    Column("slots", Integer, nullable=False),
    Column("version", String(32), nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("seen_at", DateTime(timezone=True), nullable=False, index=True),
    # What GET /workers shows, refreshed by each heartbeat: "cpu" or "gpu", the jobs its
    # pool runs now (space-separated ids), and its processes' resident memory.
    Column("accelerator", String(16)),
    Column("current_jobs", String(400)),
    Column("rss_bytes", BigInteger),
)

scheduler = Table(
    "k2e_scheduler",
    metadata,
    # One row: a scheduling pass updates it first, so passes from any process take turns.
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("passed_at", DateTime(timezone=True)),
)


job_members = Table(
    "k2e_job_members",
    metadata,
    # One row per member of a cluster job's newest placement (k2e.jobs.gangs).
    Column("job_id", String(64), primary_key=True),
    Column("role", String(16), primary_key=True),  # chief, worker, ps, evaluator
    Column("index", Integer, primary_key=True, autoincrement=False),
    Column("gang", Integer, nullable=False),
    Column("state", String(16), nullable=False),
    Column("owner", String(128)),  # the worker process holding it
    Column("node", String(128)),
    Column("address", String(280)),  # host:port in TF_CONFIG
    Column("beat_at", DateTime(timezone=True)),
)


webhooks = Table(
    "k2e_webhooks",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("id", String(32), nullable=False, unique=True),
    Column("tenant", String(64), nullable=False, index=True),
    Column("url", String(2048), nullable=False),
    Column("events", JSON, nullable=False),  # the event types it is sent
    # The HMAC key of its signatures: kept as given, since signing needs it (shown once).
    Column("secret", String(128), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

webhook_deliveries = Table(
    "k2e_webhook_deliveries",
    metadata,
    # The outbox: one row per event and endpoint, written in the transaction that made the
    # event (k2e.webhooks.outbox); a worker's delivery loop sends it until it is answered.
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("id", String(32), nullable=False, unique=True),
    Column("webhook_id", String(32), nullable=False, index=True),
    Column("tenant", String(64), nullable=False),
    Column("event_id", String(40), nullable=False),  # K2E-Event-Id: the same on every try
    Column("type", String(32), nullable=False),
    Column("body", Text, nullable=False),  # the exact bytes signed and sent
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("state", String(16), nullable=False),  # pending, delivered, failed
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", DateTime(timezone=True), index=True),
    # A delivery loop's claim on it while it tries: another waits until it lapses.
    Column("claimed_by", String(128)),
    Column("claimed_until", DateTime(timezone=True)),
    Column("last_attempt_at", DateTime(timezone=True)),
    Column("response_status", Integer),
    Column("response_excerpt", Text),
    Column("error", Text),
    Column("delivered_at", DateTime(timezone=True)),
)

tallies = Table(
    "k2e_tallies",
    metadata,
    # The metrics' counters (GET /metrics): one row per thing counted (a job submitted,
    # started, ended or preempted, an upload kept, an export that failed its check),
    # written in the transaction that does it. Rows outlive the jobs they count, so the
    # counts only grow whichever process (API, worker, reconciler) wrote them.
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("event", String(16), nullable=False),
    # A job's queue, or an upload's kind ("model", "dataset").
    Column("queue", String(32), nullable=False),
    # An ended job's error reason ("" for none).
    Column("reason", String(32), nullable=False),
    # Seconds (a start: since submission; an end: since the start) or an upload's bytes.
    Column("value", Float),
    Index("ix_k2e_tallies_event", "event", "queue", "reason"),
)

tally_totals = Table(
    "k2e_tally_totals",
    metadata,
    # The tallies folded so far (k2e.jobs.tallies.fold): a scrape reads these few rows and
    # the ledger's newest, never every row since the store began.
    Column("event", String(16), primary_key=True),
    Column("queue", String(32), primary_key=True),
    Column("reason", String(32), primary_key=True),
    # The histogram bucket the values fell in: an index into tallies.BUCKETS (its length:
    # above the last bound; -1: rows without a value).
    Column("bucket", Integer, primary_key=True, autoincrement=False),
    Column("count", BigInteger, nullable=False),
    Column("total", Float, nullable=False),
)
