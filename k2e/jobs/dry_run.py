"""A dry run (POST /convert?dry_run=true): every check a submission runs, then what the job
would be (``Plan``), with nothing stored, no job slot held and no quota used.

The metric keys and signatures come from k2e.spec.export_plan; the parameter count from
the model file's weights (h5py) or, for an inline model or a ``.keras`` archive, from its
config; the memory estimate from the parts below, each named in the plan.
"""

import math
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from k2e.jobs.gang_capacity import check_gang_fits
from k2e.jobs.job_store import JobStore
from k2e.jobs.placement import Placement
from k2e.jobs.planning import plan_model_dir, plan_warm_start
from k2e.jobs.queueing import queue_for
from k2e.plan_schemas import MemoryPlan, Plan, QueuePlan
from k2e.schemas import ConvertRequest, DatasetInfo, RunConfigSpec
from k2e.settings import Settings
from k2e.spec.checks import ResolvedModel, check_spec
from k2e.spec.export_plan import eval_metric_keys, planned_signatures
from k2e.storage import Storage
from k2e.tenancy.bodies import EffectiveQuotas
from k2e.vetting.feature_columns import fed_inputs

# A worker process running a small job: TensorFlow imported (~470 MB RSS for
# `import tensorflow` alone, measured), the Estimator's graphs and sessions, the input
# pipeline's threads. Measured:
# 535-550 MB peak RSS for jobs of a few thousand parameters (the workers' "peak worker
# memory" log lines, tests/integration/test_determinism.py, 2026-12-07).
TENSORFLOW_BYTES = 512 * 1024**2
# Copies of each weight: the Keras model, the Estimator graph's variable, its gradient.
WEIGHT_COPIES = 3
# Batches alive at once: the one a step runs on and the pipeline's prefetched ones.
BATCHES_IN_FLIGHT = 3
# Slot variables per weight of each optimizer (Keras's legacy optimizers).
OPTIMIZER_SLOTS = {"adam": 2, "adamax": 2, "nadam": 2, "adadelta": 2, "ftrl": 2}
OPTIMIZER_SLOTS |= {"rmsprop": 1, "adagrad": 1}
# TensorFlow's own default when a RunConfig sets no checkpoint trigger.
DEFAULT_CHECKPOINT_SECS = 600


def dry_run(
    spec: ConvertRequest,
    store: JobStore,
    storage: Storage,
    settings: Settings,
    tenant: str,
    quotas: EffectiveQuotas,
    placement: Placement,
) -> Plan:
    """The plan of the job ``spec`` would make now (``storage``: the tenant's view);
    raises what the submission would raise."""
    model = check_spec(spec, storage, settings, reinspect=False, quotas=quotas)
    queue = queue_for(spec.accelerator)
    check_gang_fits(store.engine, spec, queue, quotas, settings.worker_live_s)
    _, reused = plan_model_dir(spec, storage, "dry-run")
    plan_warm_start(spec, store, storage, tenant, reused)
    summary = model.summary
    section = spec.train or spec.eval
    arrays = storage.dataset_info(section.dataset).arrays if section is not None else None
    inputs = fed_inputs(summary.inputs, summary.column_inputs, arrays)
    parameters = parameter_count(model, storage)
    memory = estimate_memory(spec, model, parameters, storage, settings)
    priority = settings.priority_values[spec.priority]
    return Plan(
        spec=resolved_spec(spec),
        eval_metric_keys=eval_metric_keys(spec, model.metric_names),
        signatures=planned_signatures(spec, inputs, summary.outputs),
        parameters=parameters,
        memory_bytes=memory.total,
        memory=memory,
        queue=QueuePlan(
            name=queue, priority=spec.priority, place=placement.prospect(queue, tenant, priority)
        ),
    )


def resolved_spec(spec: ConvertRequest) -> dict[str, Any]:
    """The spec with every default filled in: the RunConfig's too (TensorFlow's
    checkpoint trigger, every 600 s, when the spec names none)."""
    config = spec.config or RunConfigSpec()
    if config.save_checkpoints_steps is None and config.save_checkpoints_secs is None:
        config = config.model_copy(update={"save_checkpoints_secs": DEFAULT_CHECKPOINT_SECS})
    return spec.model_copy(update={"config": config}).model_dump(mode="json")


def parameter_count(model: ResolvedModel, storage: Storage) -> int:
    """Every weight's size in the HDF5 file's ``model_weights``; else (an inline model, a
    ``.keras`` archive) what the config tells."""
    if model.path is not None and model.path.suffix.lower() in (".h5", ".hdf5"):
        with storage.local_copy(model.path) as local:
            counted = _h5_weights(local)
        if counted is not None:
            return counted
    return model.summary.param_count or 0


def _h5_weights(path: Path) -> int | None:
    sizes: list[int] = []

    def visit(_: str, item: Any) -> None:
        if isinstance(item, h5py.Dataset):
            sizes.append(int(item.size))

    with h5py.File(path, "r") as h5:
        group = h5.get("model_weights")
        if not isinstance(group, h5py.Group):
            return None
        group.visititems(visit)
    return sum(sizes)


def _optimizer_name(model: ResolvedModel, spec: ConvertRequest) -> str:
    if spec.keras_model is not None and spec.keras_model.compile is not None:
        optimizer: Any = spec.keras_model.compile.optimizer
    else:
        optimizer = (model.compile_args or {}).get("optimizer")
    """The optimizer's name in lower case: a Keras 2.15 HDF5 stores ``Custom>RMSprop``."""
    if isinstance(optimizer, dict):
        name = optimizer.get("class_name") or optimizer.get("config", {}).get("name", "")
        name = str(name).rsplit(">", 1)[-1].lower()
        momentum = (optimizer.get("config") or {}).get("momentum") or 0
        return "sgd_momentum" if name == "sgd" and momentum else name
    return str(optimizer or "rmsprop").rsplit(">", 1)[-1].lower()


def _example_bytes(info: DatasetInfo) -> int:
    """One example's decoded bytes, every array (4 bytes per value of an unknown dtype)."""
    total = 0
    for name, shape in info.arrays.items():
        dtype = info.dtypes.get(name)
        try:
            size = np.dtype(dtype).itemsize if dtype else 4
        except TypeError:
            size = 4
        total += math.prod(shape[1:]) * max(size, 4)
    return total


def estimate_memory(
    spec: ConvertRequest,
    model: ResolvedModel,
    parameters: int,
    storage: Storage,
    settings: Settings,
) -> MemoryPlan:
    optimizer = _optimizer_name(model, spec)
    slots = 1 if optimizer == "sgd_momentum" else OPTIMIZER_SLOTS.get(optimizer, 0)
    variables = parameters * 4 * (WEIGHT_COPIES + slots)
    sections = [s for s in (spec.train, spec.eval) if s is not None]
    batch = max((s.batch_size for s in sections), default=1)
    section = spec.train or spec.eval
    info = storage.dataset_info(section.dataset) if section is not None else None
    per_example = _example_bytes(info) if info is not None else 0
    batches = BATCHES_IN_FLIGHT * batch * per_example
    data = 0
    cached = False
    if spec.train is not None and info is not None:
        decoded = info.num_examples * per_example
        cached = decoded <= settings.dataset_cache_bytes
        data = decoded if cached else 0
        if spec.train.shuffle:
            data += min(spec.train.shuffle_buffer, info.num_examples) * per_example
    explanation = (
        f"{TENSORFLOW_BYTES} B for a worker process with TensorFlow; {parameters} parameters "
        f"x 4 B x ({WEIGHT_COPIES} copies: Keras model, graph variable, gradient + {slots} "
        f"slots of optimizer {optimizer!r}); {BATCHES_IN_FLIGHT} batches of {batch} "
        f"examples of {per_example} B; "
        + (
            f"the training data decoded ({'kept in memory' if cached else 'streamed'}, "
            f"K2E_DATASET_CACHE_BYTES) and its shuffle buffer"
            if spec.train is not None
            else "no training data"
        )
    )
    return MemoryPlan(
        tensorflow_bytes=TENSORFLOW_BYTES,
        variables_bytes=variables,
        batches_bytes=batches,
        data_bytes=data,
        explanation=explanation,
        limit_bytes=settings.job_memory_bytes,
    )
