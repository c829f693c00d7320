"""The rules of a cluster job (``ConvertRequest.distribution``): the strategies k2e runs,
what a cluster needs from its spec, and whether it can ever be placed.

A cluster is placed as a gang: every member holds a worker slot at once. One larger than
its queue's live slots, or than its tenant's share when the tenant may not borrow, would
wait forever, so it is refused at submission instead (``capacity_errors``).
"""

from __future__ import annotations

from dataclasses import dataclass

from k2e.cluster_schemas import Distribution
from k2e.errors import FieldError
from k2e.schemas import ConvertRequest


@dataclass(frozen=True)
class Strategy:
    """How a cluster's workers share the model, and whether k2e runs it (with why)."""

    name: str
    accepted: bool
    why: str
    # The variables live on the parameter servers: a cluster without one is refused.
    needs_parameter_servers: bool = False


# Every strategy a spec may name, accepted or refused with what was measured (three local
# processes, model_to_estimator + train_and_evaluate, max_steps=400). The worker runs
# the accepted ones: accepting another starts here.
STRATEGIES: dict[str, Strategy] = {
    s.name: s
    for s in (
        Strategy(
            "between_graph",
            accepted=True,
            why="between-graph replication: each worker trains a replica and the variables "
            "live on the parameter servers; measured to end at exactly max_steps",
            needs_parameter_servers=True,
        ),
        Strategy(
            "parameter_server_strategy",
            accepted=False,
            why="tf.compat.v1 ParameterServerStrategy was measured to end one step past "
            "max_steps (model.ckpt-401 for max_steps=400)",
        ),
        Strategy(
            "multi_worker_mirrored",
            accepted=False,
            why="MultiWorkerMirroredStrategy must be created before any other TensorFlow op "
            "in its process; k2e's cluster members do not create it yet (they run "
            "between-graph replication with parameter servers)",
        ),
    )
}


def accepted_strategies() -> list[str]:
    return [name for name, strategy in STRATEGIES.items() if strategy.accepted]


def strategy_errors(strategy: str) -> list[FieldError]:
    """A strategy k2e runs; a refused one with its measured reason, an unknown one with
    the accepted names."""
    loc = ("distribution", "strategy")
    known = STRATEGIES.get(strategy)
    accepted = ", ".join(f"`{name}`" for name in accepted_strategies())
    if known is None:
        msg = f"strategy {strategy!r} is not one k2e knows; accepted: {accepted}"
        return [FieldError(loc, msg)]
    if not known.accepted:
        msg = f"strategy {strategy!r} is refused: {known.why}; accepted: {accepted}"
        return [FieldError(loc, msg)]
    return []


def distribution_errors(spec: ConvertRequest) -> list[FieldError]:
    """What the spec alone tells of its cluster: a strategy k2e runs, the parameter servers
    it needs, something to train, and no single-node strategy beside it."""
    shape = spec.distribution
    if shape is None:
        return []
    errors = strategy_errors(shape.strategy)
    strategy = STRATEGIES.get(shape.strategy)
    if strategy is not None and strategy.needs_parameter_servers and shape.parameter_servers < 1:
        msg = (
            f"strategy {shape.strategy!r} needs parameter_servers >= 1: the variables live "
            "on the parameter servers; without one each worker would train its own copy"
        )
        errors.append(FieldError(("distribution", "parameter_servers"), msg))
    if spec.train is None:
        msg = "a cluster needs `train`: without training there is nothing to distribute"
        errors.append(FieldError(("distribution",), msg))
    if spec.config is not None and spec.config.train_distribute is not None:
        msg = (
            "`config.train_distribute` must be unset on a cluster job: `distribution` "
            "decides how its workers share the model"
        )
        errors.append(FieldError(("config", "train_distribute"), msg))
    return errors


def capacity_errors(
    shape: Distribution, queue: str, live_slots: int, share: int, borrow: bool
) -> list[FieldError]:
    """A gang that can be placed one day: its size within the queue's ``live_slots`` (the
    live workers' job slots) and, for a tenant that may not borrow, within its ``share``
    of the queue (0: the tenant's quotas give none, not checked)."""
    loc = ("distribution",)
    needs = (
        f"the cluster needs {shape.size} worker slots at once (workers {shape.workers} + "
        f"parameter_servers {shape.parameter_servers}"
        + (" + an evaluator)" if shape.evaluator else ")")
    )
    errors = []
    if shape.size > live_slots:
        errors.append(
            FieldError(
                loc,
                f"{needs}; the live workers of queue {queue!r} have {live_slots}: it would "
                "wait forever (start more workers, e.g. K2E_LOCAL_WORKERS, or ask for fewer)",
            )
        )
    if share > 0 and not borrow and shape.size > share:
        errors.append(
            FieldError(
                loc,
                f"{needs}; the tenant's share of queue {queue!r} is {share} slots and it may "
                "not borrow beyond it (quotas.borrow false)",
            )
        )
    return errors
