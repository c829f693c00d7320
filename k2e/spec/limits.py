"""What one spec may ask for on this server and for its tenant: the server's spec limits
(k2e.settings, "Spec limits"), the tenant's quota on ``train.max_steps`` and its highest
priority class (``max_priority``), checked in one place.

The schema (k2e.schemas) bounds each field by what its type holds (int32, int64), which
the published OpenAPI shows; these are the operator's and the tenant's tighter limits,
which it does not.
"""

from dataclasses import dataclass, field

from k2e.errors import FieldError, InvalidSpec
from k2e.schemas import ConvertRequest
from k2e.settings import Settings
from k2e.tenancy.bodies import EffectiveQuotas


@dataclass(frozen=True)
class Limits:
    """The limits a spec is checked against: the server's (from its Settings) and, for a
    submission, the tenant's ``max_steps`` quota (None where no tenant is known: the
    worker's second check)."""

    max_steps: int
    max_batch_size: int
    max_shuffle_buffer: int
    max_model_params: int
    max_keep_checkpoints: int
    max_checkpoints_per_job: int
    min_keep_checkpoint_every_n_hours: float
    tenant_max_steps: int | None = None
    # The priority classes by name, and the tenant's highest (None: not checked, as in
    # the worker's check: a class removed since the submission does not fail the job).
    priority_classes: dict[str, int] = field(default_factory=dict)
    tenant_max_priority: str | None = None

    @classmethod
    def of(cls, settings: Settings, quotas: EffectiveQuotas | None = None) -> "Limits":
        return cls(
            max_steps=settings.max_steps,
            max_batch_size=settings.max_batch_size,
            max_shuffle_buffer=settings.max_shuffle_buffer,
            max_model_params=settings.max_model_params,
            max_keep_checkpoints=settings.max_keep_checkpoints,
            max_checkpoints_per_job=settings.max_checkpoints_per_job,
            min_keep_checkpoint_every_n_hours=settings.min_keep_checkpoint_every_n_hours,
            tenant_max_steps=quotas.max_steps if quotas is not None else None,
            priority_classes=settings.priority_values,
            tenant_max_priority=quotas.max_priority if quotas is not None else None,
        )


def check_limits(spec: ConvertRequest, limits: Limits) -> None:
    """Raise InvalidSpec (422) for a spec beyond its limits: the tenant's ceiling on
    ``train.max_steps`` alone when it is passed, else every server limit passed."""
    errors = tenant_limit_errors(spec, limits) or server_limit_errors(spec, limits)
    if errors:
        raise InvalidSpec(errors[0].msg, errors)


def tenant_limit_errors(spec: ConvertRequest, limits: Limits) -> list[FieldError]:
    """The tenant's ceiling on ``train.max_steps`` (its ``max_steps`` quota) and on
    ``priority`` (its ``max_priority``)."""
    errors = priority_errors(spec.priority, limits)
    ceiling = limits.tenant_max_steps
    if ceiling is None or spec.train is None or spec.train.max_steps <= ceiling:
        return errors
    msg = f"max_steps {spec.train.max_steps} is above the tenant's ceiling {ceiling}"
    return [*errors, FieldError(("train", "max_steps"), msg)]


def priority_errors(priority: str, limits: Limits) -> list[FieldError]:
    """A class the server has (K2E_PRIORITY_CLASSES), at most the tenant's max_priority."""
    ceiling = limits.tenant_max_priority
    if ceiling is None:
        return []
    classes = limits.priority_classes
    if priority not in classes:
        names = ", ".join(sorted(classes, key=classes.__getitem__))
        msg = f"priority {priority!r} is not a priority class of this server ({names})"
        return [FieldError(("priority",), msg)]
    # A ceiling no longer among the classes (an admin removed it) allows the default.
    most = classes.get(ceiling, classes.get("normal", 0))
    if classes[priority] <= most:
        return []
    msg = (
        f"priority {priority!r} is above the tenant's max_priority {ceiling!r}: a job may "
        "ask for that class or a lower one"
    )
    return [FieldError(("priority",), msg)]


def _above(loc: tuple[str, ...], value: int | None, limit: int, setting: str) -> list[FieldError]:
    if value is None or value <= limit:
        return []
    name = loc[-1]
    msg = f"{name} {value} is above the server's limit {limit} ({setting})"
    return [FieldError(loc, msg)]


def server_limit_errors(spec: ConvertRequest, limits: Limits) -> list[FieldError]:
    """The server's spec limits that the spec alone tells: sizes, steps, checkpoints."""
    train = spec.train
    errors = []
    if train is not None:
        errors += [
            *_above(("train", "max_steps"), train.max_steps, limits.max_steps, "K2E_MAX_STEPS"),
            *_above(
                ("train", "batch_size"),
                train.batch_size,
                limits.max_batch_size,
                "K2E_MAX_BATCH_SIZE",
            ),
            *_above(
                ("train", "shuffle_buffer"),
                train.shuffle_buffer,
                limits.max_shuffle_buffer,
                "K2E_MAX_SHUFFLE_BUFFER",
            ),
        ]
    if spec.eval is not None:
        batch = spec.eval.batch_size
        errors += _above(("eval", "batch_size"), batch, limits.max_batch_size, "K2E_MAX_BATCH_SIZE")
        errors += _above(("eval", "steps"), spec.eval.steps, limits.max_steps, "K2E_MAX_STEPS")
    cfg = spec.config
    if cfg is None:
        return errors
    if cfg.keep_checkpoint_max == 0:
        msg = (
            "keep_checkpoint_max 0 keeps every checkpoint; the server keeps at most "
            f"{limits.max_keep_checkpoints} (K2E_MAX_KEEP_CHECKPOINTS)"
        )
        errors.append(FieldError(("config", "keep_checkpoint_max"), msg))
    errors += _above(
        ("config", "keep_checkpoint_max"),
        cfg.keep_checkpoint_max,
        limits.max_keep_checkpoints,
        "K2E_MAX_KEEP_CHECKPOINTS",
    )
    floor = limits.min_keep_checkpoint_every_n_hours
    if cfg.keep_checkpoint_every_n_hours < floor:
        msg = (
            f"keep_checkpoint_every_n_hours {cfg.keep_checkpoint_every_n_hours} is below the "
            f"server's limit {floor} (K2E_MIN_KEEP_CHECKPOINT_EVERY_N_HOURS): each such "
            "checkpoint is kept for good"
        )
        errors.append(FieldError(("config", "keep_checkpoint_every_n_hours"), msg))
    steps = cfg.save_checkpoints_steps
    most = limits.max_checkpoints_per_job
    if train is not None and steps is not None and -(-train.max_steps // steps) > most:
        least = -(-train.max_steps // most)
        msg = (
            f"save_checkpoints_steps {steps} writes {-(-train.max_steps // steps)} checkpoints "
            f"in max_steps {train.max_steps}; the server's limit is {most} per job "
            f"(K2E_MAX_CHECKPOINTS_PER_JOB): use at least {least}"
        )
        errors.append(FieldError(("config", "save_checkpoints_steps"), msg))
    return errors


def check_model_params(loc: tuple[str, ...], params: int | None, limits: Limits) -> None:
    """The model's parameters (counted from its config) within K2E_MAX_MODEL_PARAMS."""
    if params is None or params <= limits.max_model_params:
        return
    msg = (
        f"the model has at least {params} parameters (counted from its config); the "
        f"server's limit is {limits.max_model_params} (K2E_MAX_MODEL_PARAMS)"
    )
    raise InvalidSpec(msg, [FieldError(loc, msg)])
