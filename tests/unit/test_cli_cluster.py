"""The CLI's side of cluster jobs: `k2e submit`'s cluster options and `k2e status`'s
cluster shape and members, rendered as a terminal shows them."""

from datetime import datetime, timedelta

from rich.console import Console
from typer.testing import CliRunner

from k2e.cli.app import app
from k2e.cli.job_commands import describe_job
from k2e.cli.render import members_table
from k2e.cli.submit import cluster_shape
from k2e.compat import UTC
from k2e.schemas import Job

AT = "2026-01-01T00:00:00+00:00"


def _job(distribution: dict | None, cluster: dict | None) -> Job:
    spec: dict = {"keras_model_path": "m", "train": {"dataset": "d", "max_steps": 400}}
    if distribution is not None:
        spec["distribution"] = distribution
    return Job.model_validate(
        {
            "id": "job-1",
            "status": "running",
            "created_at": AT,
            "spec": spec,
            "queue": "cpu",
            "model_dir": "jobs/job-1",
            "progress": {"global_step": 120, "max_steps": 400},
            "metrics": {},
            "cluster": cluster,
        }
    )


def _text(*renderables: object) -> str:
    console = Console(record=True, force_terminal=True, width=140)
    for renderable in renderables:
        console.print(renderable)
    return console.export_text()


def test_status_shows_the_clusters_shape_and_each_members_node_address_and_state() -> None:
    seen = (datetime.now(UTC) - timedelta(seconds=3)).isoformat()
    member = {"node": None, "address": None, "worker": None, "beat_at": None}
    cluster = {
        "gang": 2,
        "members": [
            {**member, "role": "chief", "index": 0, "state": "running", "node": "node-a",
             "address": "node-a:4001", "beat_at": seen},
            {**member, "role": "worker", "index": 0, "state": "running", "node": "node-b",
             "address": "node-b:4002", "beat_at": seen},
            {**member, "role": "worker", "index": 1, "state": "placed"},
            {**member, "role": "ps", "index": 0, "state": "lost", "node": "node-c",
             "address": "node-c:4003", "beat_at": seen},
            {**member, "role": "evaluator", "index": 0, "state": "ready", "node": "node-a",
             "address": "node-a:4004", "beat_at": seen},
        ],
    }  # fmt: skip
    shape = {"workers": 3, "parameter_servers": 1, "evaluator": True, "strategy": "between_graph"}
    job = _job(shape, cluster)
    assert job.cluster is not None
    text = _text(describe_job(job), members_table(job.cluster))
    assert (
        "cluster    3 workers (the chief + 2), 1 parameter server, an evaluator; "
        "between_graph, placement 2" in text
    )
    roles = ("chief:", "worker:", "ps:", "evaluator:")
    rows = [line.split() for line in text.splitlines() if line.strip().startswith(roles)]
    assert rows == [
        ["chief:0", "running", "node-a", "node-a:4001", "3s", "ago"],
        ["worker:0", "running", "node-b", "node-b:4002", "3s", "ago"],
        ["worker:1", "placed", "-", "-", "-"],
        ["ps:0", "lost", "node-c", "node-c:4003", "3s", "ago"],
        ["evaluator:0", "ready", "node-a", "node-a:4004", "3s", "ago"],
    ]
    assert "MEMBER" in text
    assert "ADDRESS" in text


def test_status_of_a_cluster_not_placed_yet_and_of_a_job_on_one_worker() -> None:
    waiting = _text(describe_job(_job({"workers": 1, "parameter_servers": 2}, None)))
    assert "1 worker (the chief + 0), 2 parameter servers; between_graph, not placed yet" in (
        waiting
    )
    single = _text(describe_job(_job(None, None)))
    assert "cluster" not in single


def test_submit_cluster_options_set_the_distribution_over_the_spec() -> None:
    assert cluster_shape({}, None, None, False) is None
    assert cluster_shape({}, 2, 1, False) == {"workers": 2, "parameter_servers": 1}
    assert cluster_shape({}, None, None, True) == {"evaluator": True}
    spec = {"distribution": {"workers": 4, "strategy": "between_graph"}}
    assert cluster_shape(spec, None, 2, True) == {
        "workers": 4,
        "parameter_servers": 2,
        "evaluator": True,
        "strategy": "between_graph",
    }
    help_text = CliRunner().invoke(app, ["submit", "--help"], env={"COLUMNS": "200"}).output
    for option in ("--workers", "--parameter-servers", "--evaluator"):
        assert option in help_text
    refused = CliRunner().invoke(app, ["submit", "m.h5", "--train", "d.npz", "--workers", "0"])
    assert refused.exit_code == 2
