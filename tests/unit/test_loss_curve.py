"""The train loss curve a job keeps (GET /jobs/{id}/metrics) is thinned to its cap."""

import pytest

pytest.importorskip("tensorflow")
from worker.hooks import MAX_CURVE_POINTS, LossCurve  # noqa: E402  (needs TensorFlow)


def test_the_curve_never_holds_more_than_its_cap_and_keeps_both_ends() -> None:
    curve = LossCurve(limit=10)
    for step in range(1, 1001):
        curve.add(step, 1.0 / step)
        assert len(curve.points) <= 10
    steps = [p["step"] for p in curve.points]
    assert steps[0] == 1  # the first point stays: every other *old* point is dropped
    assert steps[-1] == 1000  # the newest point is always there
    assert steps == sorted(set(steps))
    assert len(steps) >= 5  # thinned, not emptied
    assert curve.points[-1] == {"step": 1000, "loss": 1.0 / 1000}


def test_the_default_cap_and_a_repeated_step_is_not_added_twice() -> None:
    curve = LossCurve()
    assert curve.limit == MAX_CURVE_POINTS
    for step in range(3 * MAX_CURVE_POINTS):
        curve.add(step, float(step))
    assert len(curve.points) <= MAX_CURVE_POINTS
    curve.add(curve.points[-1]["step"], -1.0)
    assert curve.points[-1]["loss"] != -1.0


def test_steps_trained_again_after_a_restore_replace_the_points_past_it() -> None:
    """A worker killed between two checkpoints reported steps its job trains again from
    the newest checkpoint: the curve keeps one point per step, in step order."""
    curve = LossCurve()
    for step in (1, 202, 401, 505):
        curve.add(step, 1.0)
    curve.add(401, 2.0)  # resumed from the checkpoint at 400
    curve.add(505, 2.0)
    assert curve.points == [
        {"step": 1, "loss": 1.0},
        {"step": 202, "loss": 1.0},
        {"step": 401, "loss": 1.0},
        {"step": 505, "loss": 2.0},
    ]
