"""The REST contract's bodies (docs/api.md): conversion specs, jobs, models, datasets."""

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from k2e.cluster_schemas import Cluster, Distribution
from k2e.compat import StrEnum
from k2e.plan_schemas import Provenance
from k2e.queue_schemas import QueuePlace
from k2e.spec import rules
from k2e.spec.numbers import INT32_MAX, INT64_MAX, INT64_MIN


class _Request(BaseModel):
    """Request bodies refuse unknown fields: a typo must not be silently ignored. A float
    field takes finite numbers only (JSON's 1e400 reads as infinity)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


# What the job store's columns and TensorFlow hold (the published bounds): timeout_s is an
# INTEGER column (int32), steps, sizes and seeds are int64 in TensorFlow. The server's spec
# limits and the tenant's quotas are tighter still for the sizes and steps: k2e.spec.limits
# checks them.
PositiveInt = Annotated[int, Field(ge=1, le=INT64_MAX)]
PositiveInt32 = Annotated[int, Field(ge=1, le=INT32_MAX)]
Seed = Annotated[int, Field(ge=INT64_MIN, le=INT64_MAX)]


def _model_dir_name(value: str) -> str:
    rules.check_model_dir_name(value)
    return value


# A named model_dir: a plain folder name (rules.check_model_dir_name).
ModelDirName = Annotated[str, AfterValidator(_model_dir_name)]


Metric = str | dict[str, Any]


class CompileSpec(_Request):
    """The arguments of ``model.compile`` that an inline model is compiled with."""

    optimizer: str | dict[str, Any] = "rmsprop"
    loss: str | list[str] | dict[str, str]
    # A metric is a name ("mae") or a serialized metric object
    # ({"class_name": "AUC", "config": {"name": "auc"}}); per output in a dict.
    metrics: list[Metric] | dict[str, Metric | list[Metric]] | None = None
    weighted_metrics: list[Metric] | dict[str, Metric | list[Metric]] | None = None
    loss_weights: list[float] | dict[str, float] | None = None


class InlineModel(_Request):
    """A model described in JSON: ``model.to_json()`` parsed, plus how to compile it."""

    config: dict[str, Any]
    compile: CompileSpec | None = None


# Thread pools a job may ask TensorFlow for (0: TensorFlow chooses).
MAX_SESSION_THREADS = 256


class GPUOptionsSpec(_Request):
    """The ``tf.compat.v1.GPUOptions`` fields a user sets."""

    allow_growth: bool | None = None
    per_process_gpu_memory_fraction: Annotated[float, Field(gt=0, le=1)] | None = None


class SessionConfigSpec(_Request):
    """The ``tf.compat.v1.ConfigProto`` fields a user sets (``RunConfig.session_config``);
    any other field is refused, naming it."""

    allow_soft_placement: bool | None = None
    log_device_placement: bool | None = None
    inter_op_parallelism_threads: Annotated[int, Field(ge=0, le=MAX_SESSION_THREADS)] | None = None
    intra_op_parallelism_threads: Annotated[int, Field(ge=0, le=MAX_SESSION_THREADS)] | None = None
    gpu_options: GPUOptionsSpec | None = None


class RunConfigSpec(_Request):
    """The ``tf.estimator.RunConfig`` fields a user sets."""

    tf_random_seed: Seed | None = None
    save_summary_steps: PositiveInt = 100
    save_checkpoints_steps: PositiveInt | None = None
    save_checkpoints_secs: PositiveInt32 | None = None
    keep_checkpoint_max: Annotated[int, Field(ge=0, le=INT32_MAX)] = 5
    keep_checkpoint_every_n_hours: Annotated[float, Field(gt=0, le=1e9)] = 10000
    log_step_count_steps: PositiveInt = 100
    model_dir: ModelDirName | None = None
    train_distribute: Literal["mirrored"] | None = None
    session_config: SessionConfigSpec | None = None

    @model_validator(mode="after")
    def _one_checkpoint_trigger(self) -> "RunConfigSpec":
        rules.check_one_checkpoint_trigger(self.save_checkpoints_steps, self.save_checkpoints_secs)
        return self


class TrainSpec(_Request):
    dataset: str
    max_steps: PositiveInt
    batch_size: PositiveInt = 32
    shuffle: bool = True
    shuffle_buffer: PositiveInt = 10_000
    shuffle_seed: Seed | None = None
    drop_remainder: bool = False


class EvalSpec(_Request):
    dataset: str
    steps: PositiveInt | None = None
    batch_size: PositiveInt = 32


class WarmStartFrom(_Request):
    """Fine-tuning: start from another job's newest checkpoint (the same tenant's)."""

    job: str = Field(min_length=1, max_length=64)


ExportKind = Literal["classification", "regression", "predict"]


class ConvertRequest(_Request):
    """``model_to_estimator``'s parameters, plus what to run with the Estimator."""

    keras_model: InlineModel | None = None
    keras_model_path: str | None = None
    custom_objects: dict[str, str] | None = None
    model_dir: ModelDirName | None = None
    # Reusing a named model_dir warm-starts from it; k2e makes that an explicit choice.
    warm_start: bool = False
    # Start from this job's newest checkpoint (WarmStartSettings) in a fresh model_dir.
    warm_start_from: WarmStartFrom | None = None
    config: RunConfigSpec | None = None
    checkpoint_format: str = "checkpoint"
    metric_names_map: dict[str, str] | None = None
    export_outputs: dict[str, ExportKind] | None = None
    # Optional: without `train` the job converts the uploaded weights as they are, then
    # evaluates them (`eval`) and exports them.
    train: TrainSpec | None = None
    eval: EvalSpec | None = None
    export: bool = True
    accelerator: Literal["cpu", "gpu"] = "cpu"
    # Training stops at this many seconds after the job first starts: failed, timed_out.
    timeout_s: PositiveInt32 | None = None
    priority: str = Field(
        default="normal",
        min_length=1,
        max_length=32,
        description="The job's priority class (K2E_PRIORITY_CLASSES; by default `low`, "
        "`normal`, `high`): waiting jobs start highest class first, and a job may preempt "
        "a running job of a lower class at its next checkpoint. At most the tenant's "
        "`max_priority`.",
    )
    distribution: Distribution | None = Field(
        default=None, description="Train on a TF_CONFIG cluster placed as a gang."
    )
    deterministic: bool = Field(
        default=False, description="Op determinism and fixed seeds: a rerun is bit-identical."
    )

    @field_validator("checkpoint_format")
    @classmethod
    def _checkpoint_format(cls, value: str) -> str:
        rules.check_checkpoint_format(value)
        return value

    @field_validator("keras_model_path")
    @classmethod
    def _not_gcs(cls, value: str | None) -> str | None:
        if value is not None:
            rules.check_model_path_form(value)
        return value

    @model_validator(mode="after")
    def _exactly_one_model(self) -> "ConvertRequest":
        rules.check_one_model(self.keras_model is not None, self.keras_model_path is not None)
        return self

    def effective_model_dir(self) -> str | None:
        """The documented precedence: the ``model_dir`` argument wins over ``config.model_dir``."""
        if self.model_dir is not None:
            return self.model_dir
        return self.config.model_dir if self.config else None


class JobStatus(StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelling = "cancelling"
    cancelled = "cancelled"
    # Checkpointed and off its worker until resumed (POST /jobs/{id}/resume); not an end.
    suspended = "suspended"


TERMINAL_STATUSES = frozenset({JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled})


class Progress(BaseModel):
    global_step: int = 0
    max_steps: int | None = None
    steps_per_sec: float | None = None
    eta_s: float | None = None


class LossPoint(BaseModel):
    step: int
    loss: float


class JobMetrics(BaseModel):
    train: list[LossPoint] = []
    eval: dict[str, float] = {}


JobErrorReason = Literal[
    "error", "timed_out", "worker_lost", "max_attempts", "out_of_memory", "export_mismatch"
]


class JobError(BaseModel):
    """Why a job failed: the one shape of a job error, from the worker to the API."""

    type: str
    message: str
    reason: JobErrorReason = "error"


class ExportCheck(BaseModel):
    """What the worker saw when it ran the exported SavedModel against the model it came
    from: every signature on the same examples, the largest absolute difference."""

    verified: bool
    examples: int
    max_abs_diff: float
    # "eval" or "train" (the job's data), or "generated" (a convert-only job without data:
    # examples made from the inputs' shapes and dtypes).
    examples_from: Literal["eval", "train", "generated"] = "eval"
    signatures: list[str] = []
    # The PredictionLogs in the export's assets.extra/tf_serving_warmup_requests.
    warmup_requests: int = 0


# A job as the API answers it: the server makes it from its stored record only
# (k2e.jobs.records: ``JobRecord.public``), which shows no server path.
class Job(BaseModel):
    id: str
    status: JobStatus
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    spec: dict[str, Any]
    progress: Progress
    metrics: JobMetrics
    error: JobError | None = None
    attempts: int = 0
    queue: str
    # Relative to the tenant's storage folder: "jobs/<id>" or "model_dirs/<name>".
    model_dir: str
    # Where the job's weights started from, relative to the tenant's folder: a reused
    # model_dir ("model_dirs/<name>") or another job's checkpoint
    # ("jobs/<id>/model.ckpt-<step>").
    warm_start_from: str | None = None
    tenant: str | None = None
    # The run-time limit the worker enforces, in seconds from the first start.
    timeout_s: int | None = None
    export: ExportCheck | None = None
    # Named `scheduling`: `queue` is the queue's name (v1).
    scheduling: QueuePlace | None = Field(
        default=None, description="While the job is queued: its place in its queue."
    )
    preemptions: int = Field(
        default=0, description="How often it yielded its worker to a job ranked above it."
    )
    cluster: Cluster | None = Field(
        default=None, description="A cluster job's newest placement and its members."
    )
    provenance: Provenance | None = Field(default=None, description="How the job was made.")


class JobPage(BaseModel):
    items: list[Job]
    next_cursor: str | None = None


class PredictRequest(_Request):
    """Examples for a job's exported SavedModel, in TF Serving's row format: each instance
    an object keyed by input name, or a bare value for a single-input model."""

    instances: list[Any] = Field(min_length=1)
    # Default: the signature that takes raw tensors (serving_default, or raw:serving_default
    # when serving_default parses tf.Examples).
    signature_name: str | None = Field(default=None, max_length=256)


class PredictResponse(BaseModel):
    signature_name: str
    # One per instance: an object keyed by output name (a bare value for one output).
    predictions: list[Any]


class TensorInfo(BaseModel):
    name: str
    shape: list[int | None]
    dtype: str = "float32"


class ModelInfo(BaseModel):
    id: str
    format: Literal["h5", "keras"]
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    compiled: bool
    metric_names: list[str]
    sha256: str
    size: int = 0
    model_class: str = "Functional"
    # Classes of the model that are neither Keras's nor the registry's: a spec using the
    # model maps each with custom_objects to a name of GET /custom-objects.
    custom_names: list[str] = []


class DatasetInfo(BaseModel):
    id: str
    format: Literal["npz", "tfrecord", "csv"]
    num_examples: int
    arrays: dict[str, list[int]]
    dtypes: dict[str, str] = {}
    sha256: str = ""
    size: int = 0


class ModelPage(BaseModel):
    items: list[ModelInfo]
    next_cursor: str | None = None


class DatasetPage(BaseModel):
    items: list[DatasetInfo]
    next_cursor: str | None = None


class CheckpointInfo(BaseModel):
    step: int
    name: str


class CustomObjectInfo(BaseModel):
    name: str
    kind: str
    description: str = ""


class JobEvent(BaseModel):
    """A state transition (``kind`` is the new status) or a log line (``kind`` "log")."""

    seq: int
    at: datetime
    kind: str
    message: str


class JobLog(BaseModel):
    items: list[JobEvent]
    # Pass as `since` to get only what came after.
    next_since: int


class ScalarPoint(BaseModel):
    step: int
    wall_time: float
    value: float


class JobScalars(BaseModel):
    """TensorBoard scalar series by run ("train", "eval") and tag."""

    runs: dict[str, dict[str, list[ScalarPoint]]]
