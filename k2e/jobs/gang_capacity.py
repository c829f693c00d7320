"""Whether a cluster job's gang can ever be placed, checked at submission against the
worker registry as the scheduler reads it (k2e.jobs.scheduling.live_slots) and the
tenant's share (k2e.spec.distribution.capacity_errors)."""

from sqlalchemy import Engine

from k2e.db import utcnow
from k2e.errors import InvalidSpec
from k2e.jobs.scheduling import live_slots
from k2e.schemas import ConvertRequest
from k2e.spec.distribution import capacity_errors
from k2e.tenancy.bodies import EffectiveQuotas


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
) -> None:
    """InvalidSpec (422 naming ``distribution``) for a cluster larger than its queue's live
    slots, or than the tenant's share when it may not borrow; nothing for other jobs."""
    if spec.distribution is None:
        return
    slots = queue_slots(engine, queue, live_s)
    errors = capacity_errors(spec.distribution, queue, slots, quotas.share.of(queue), quotas.borrow)
    if errors:
        raise InvalidSpec(errors[0].msg, errors)
