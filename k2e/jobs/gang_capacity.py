"""Whether a cluster job's gang can ever be placed, checked at submission against the
worker registry as the scheduler reads it (k2e.jobs.scheduling.live_slots) and the
tenant's share (k2e.spec.distribution.capacity_errors)."""

from sqlalchemy import Engine

from k2e.db import utcnow
from k2e.errors import FieldError, InvalidSpec
from k2e.jobs.scheduling import live_slots
from k2e.schemas import ConvertRequest
from k2e.spec.distribution import capacity_errors
from k2e.tenancy.bodies import EffectiveQuotas

EVALUATOR_LOC = ("distribution", "evaluator")
# The chief, workers and parameter servers of a cluster job run on bucket storage (each
# member reads its inputs from the bucket; the chief writes every checkpoint and publishes
# it); an evaluator would have to follow the chief's checkpoints through the bucket.
EVALUATOR_ON_BUCKET = (
    "a cluster's evaluator needs the storage folder shared by every worker: this server "
    "keeps its files in a bucket (K2E_STORAGE_URL), where the chief, workers and parameter "
    "servers run but an evaluator does not yet; set evaluator to false (the job is "
    "evaluated after training, on its `eval` section, as any job)"
)


def queue_slots(engine: Engine, queue: str, live_s: float) -> int:
    """The job slots of ``queue``'s live workers now."""
    with engine.connect() as conn:
        return live_slots(conn, utcnow(), live_s).get(queue, 0)


def check_gang_fits(
    engine: Engine,
    spec: ConvertRequest,
    queue: str,
    quotas: EffectiveQuotas,
    live_s: float,
    bucket: bool = False,
) -> None:
    """InvalidSpec (422 naming ``distribution``) for a cluster larger than its queue's live
    slots, or than the tenant's share when it may not borrow; on bucket storage
    (``bucket``), one with an evaluator (422 naming ``distribution.evaluator``); nothing
    for other jobs."""
    if spec.distribution is None:
        return
    if bucket and spec.distribution.evaluator:
        raise InvalidSpec(EVALUATOR_ON_BUCKET, [FieldError(EVALUATOR_LOC, EVALUATOR_ON_BUCKET)])
    slots = queue_slots(engine, queue, live_s)
    errors = capacity_errors(spec.distribution, queue, slots, quotas.share.of(queue), quotas.borrow)
    if errors:
        raise InvalidSpec(errors[0].msg, errors)
