"""The bodies of a dry run (``Plan``: POST /convert?dry_run=true) and of a job's record of
how it was made (``Provenance``: Job.provenance, POST /jobs/{id}/rerun)."""

from typing import Any

from pydantic import BaseModel, Field

from k2e.queue_schemas import QueuePlace


class SignatureTensor(BaseModel):
    name: str
    dtype: str
    shape: list[int | None] | None = Field(
        description="Dimensions, null for one of any size (the batch); null: unknown rank."
    )


class SignaturePlan(BaseModel):
    """One signature the export will carry (TF Serving's signature_def)."""

    name: str = Field(description="`serving_default`, an export_outputs key, or `raw:<name>`.")
    method: str = Field(description="`predict`, `classify` or `regress`.")
    inputs: list[SignatureTensor]
    outputs: list[SignatureTensor]


class MemoryPlan(BaseModel):
    """How ``Plan.memory_bytes`` was estimated: the parts add up to it."""

    tensorflow_bytes: int = Field(description="A worker process with TensorFlow loaded.")
    variables_bytes: int = Field(
        description="Weights, their gradients and optimizer slots, in the Keras model and "
        "the Estimator's graph."
    )
    batches_bytes: int = Field(description="Batches in flight: features, labels, activations.")
    data_bytes: int = Field(description="Training data kept in memory, and the shuffle buffer.")
    explanation: str
    limit_bytes: int = Field(description="K2E_JOB_MEMORY_BYTES: a job that grows past it fails.")

    @property
    def total(self) -> int:
        return self.tensorflow_bytes + self.variables_bytes + self.batches_bytes + self.data_bytes


class QueuePlan(BaseModel):
    """Where the job would wait if it were submitted now."""

    name: str
    priority: str
    place: QueuePlace


class Plan(BaseModel):
    """What a submission would do, from every check it runs; nothing is stored."""

    spec: dict[str, Any] = Field(
        description="The spec as the job would run it, every default filled in (seeds the "
        "user gave none of are chosen at submission: null here)."
    )
    eval_metric_keys: list[str] = Field(
        description="The keys `metrics.eval` will have (after `metric_names_map`); empty "
        "without `eval`."
    )
    signatures: list[SignaturePlan] = Field(description="Empty with `export: false`.")
    parameters: int = Field(description="The model's parameter count.")
    memory_bytes: int = Field(description="The estimated peak memory of the job's worker.")
    memory: MemoryPlan
    queue: QueuePlan


class Seeds(BaseModel):
    tf_random_seed: int | None = None
    shuffle_seed: int | None = None


class WorkerInfo(BaseModel):
    node: str
    process: int


class Provenance(BaseModel):
    """How a job was made: its inputs' digests and seeds (recorded at submission), the
    versions and worker that ran it (recorded when it starts)."""

    versions: dict[str, str] = Field(
        default_factory=dict,
        description="`k2e`, `tensorflow`, `tensorflow_estimator`, `python` of the worker "
        "that ran it; empty until it starts.",
    )
    model_sha256: str = Field(
        description="The model file's digest, or the inline model's (canonical JSON)."
    )
    datasets: dict[str, str] = Field(default_factory=dict, description="Dataset id: sha256.")
    seeds: Seeds = Field(default_factory=Seeds)
    deterministic: bool = Field(
        default=False,
        description="True only once a worker ran the job with op determinism enabled.",
    )
    worker: WorkerInfo | None = None
