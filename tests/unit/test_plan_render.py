"""What ``k2e submit --dry-run`` and ``k2e status`` print of a plan and a provenance."""

from rich.console import Console

from k2e.cli.plans import print_plan, provenance_rows
from k2e.plan_schemas import Plan, Provenance


def test_a_plan_prints_its_metrics_signatures_memory_and_queue() -> None:
    plan = Plan.model_validate(
        {
            "spec": {},
            "eval_metric_keys": ["acc_1", "loss", "global_step"],
            "signatures": [
                {
                    "name": "serving_default",
                    "method": "predict",
                    "inputs": [{"name": "x", "dtype": "float32", "shape": [None, 4]}],
                    "outputs": [{"name": "y", "dtype": "float32", "shape": None}],
                }
            ],
            "parameters": 1009,
            "memory_bytes": 700 * 1024**2,
            "memory": {
                "tensorflow_bytes": 1,
                "variables_bytes": 2,
                "batches_bytes": 3,
                "data_bytes": 4,
                "explanation": "why",
                "limit_bytes": 8 * 1024**3,
            },
            "queue": {
                "name": "cpu",
                "priority": "high",
                "place": {"position": 2, "priority": "high", "waiting_for": "slot"},
            },
        }
    )
    console = Console(record=True, width=200)
    print_plan(console, plan)
    text = console.export_text()
    assert "acc_1, loss, global_step" in text
    assert "1,009" in text
    assert "cpu, priority high, position 2 (slot)" in text
    assert "predict: x float32[None, 4] -> y float32[?]" in text


def test_provenance_rows_name_seeds_digests_versions_and_worker() -> None:
    provenance = Provenance.model_validate(
        {
            "versions": {"tensorflow": "2.15.1"},
            "model_sha256": "ab" * 32,
            "datasets": {"d1": "cd" * 32},
            "seeds": {"tf_random_seed": 7, "shuffle_seed": 9},
            "deterministic": True,
            "worker": {"node": "n1", "process": 42},
        }
    )
    rows = dict(provenance_rows(provenance))
    assert rows["deterministic"] == "yes"
    assert rows["seeds"] == "tf_random_seed 7, shuffle_seed 9"
    assert rows["dataset d1"] == "cd" * 32
    assert rows["versions"] == "tensorflow 2.15.1"
    assert rows["worker"] == "n1 pid 42"
    assert provenance_rows(None) == []
