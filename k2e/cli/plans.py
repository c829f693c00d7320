"""What the CLI shows of dry runs and provenance: ``k2e submit --dry-run``'s plan, the
provenance rows of ``k2e status``, and ``k2e rerun``."""

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from k2e.cli.context import state
from k2e.cli.render import print_json, size, status_text
from k2e.plan_schemas import Plan, Provenance, SignatureTensor
from k2e.schemas import Job


def provenance_rows(provenance: Provenance | None) -> list[tuple[str, str]]:
    """The rows ``k2e status`` adds for a job's provenance."""
    if provenance is None:
        return []
    seeds = provenance.seeds
    rows = [
        ("deterministic", "yes" if provenance.deterministic else "no"),
        ("seeds", f"tf_random_seed {seeds.tf_random_seed}, shuffle_seed {seeds.shuffle_seed}"),
        ("model sha256", provenance.model_sha256),
    ]
    rows += [(f"dataset {name}", digest) for name, digest in provenance.datasets.items()]
    if provenance.versions:
        rows.append(("versions", ", ".join(f"{k} {v}" for k, v in provenance.versions.items())))
    if provenance.worker is not None:
        rows.append(("worker", f"{provenance.worker.node} pid {provenance.worker.process}"))
    return rows


def _tensors(tensors: list[SignatureTensor]) -> str:
    return ", ".join(
        f"{t.name} {t.dtype}{t.shape if t.shape is not None else '[?]'}" for t in tensors
    )


def print_plan(out: Console, plan: Plan) -> None:
    """A dry run's plan: what the job would report, export, need and where it would wait."""
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    place = plan.queue.place
    table.add_row("eval metrics", ", ".join(plan.eval_metric_keys) or "(no eval)")
    table.add_row("parameters", f"{plan.parameters:,}")
    table.add_row("memory", f"{size(plan.memory_bytes)} (limit {size(plan.memory.limit_bytes)})")
    table.add_row("", Text(plan.memory.explanation, style="dim"))
    table.add_row(
        "queue",
        f"{plan.queue.name}, priority {plan.queue.priority}, position {place.position} "
        f"({place.waiting_for})",
    )
    for signature in plan.signatures:
        table.add_row(
            f"signature {signature.name}",
            f"{signature.method}: {_tensors(signature.inputs)} -> {_tensors(signature.outputs)}",
        )
    out.print(table)


def rerun(
    ctx: typer.Context,
    job_id: Annotated[str, typer.Argument(help="The job to run again.", show_default=False)],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Run a job again with its inputs: its spec, recorded seeds, model and datasets
    (refused when one is gone or changed)."""
    st = state(ctx)
    with st.client() as client:
        job: Job = client.rerun(job_id)
    if as_json:
        print_json(st.out, job)
    else:
        st.out.print(Text(f"rerun of {job_id}: job {job.id} ") + status_text(job.status))
