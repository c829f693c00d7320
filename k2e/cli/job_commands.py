"""Job commands: jobs, status, watch, logs, cancel, suspend, resume, delete, download."""

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from k2e.cli.context import CliState, state
from k2e.cli.plans import provenance_rows
from k2e.cli.progress import JobProgressView, eval_table
from k2e.cli.render import (
    ago,
    cluster_shape,
    duration,
    job_duration,
    jobs_table,
    members_table,
    print_json,
    status_text,
)
from k2e.cli.watching import watch_job
from k2e.schemas import Job, JobStatus

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
JobIdArg = Annotated[str, typer.Argument(help="The job's id.", show_default=False)]


def list_jobs(
    ctx: typer.Context,
    status: Annotated[JobStatus | None, typer.Option(help="Only jobs in this state.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="How many, newest first.")] = 20,
    cursor: Annotated[str | None, typer.Option(help="Continue after a previous page.")] = None,
    as_json: JsonOption = False,
) -> None:
    """List jobs, newest first."""
    st = state(ctx)
    with st.client() as client:
        page = client.list_jobs(status, limit, cursor)
    if as_json:
        print_json(st.out, page)
        return
    if not page.items:
        st.out.print("no jobs")
        return
    st.out.print(jobs_table(page.items))
    if page.next_cursor:
        st.out.print(Text(f"more: k2e jobs --cursor {page.next_cursor}", style="dim"))


def describe_job(job: Job) -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    view = JobProgressView(job.id)
    view.apply_job(job)
    rows: list[tuple[str, str | Text]] = [
        ("id", job.id),
        ("status", status_text(job.status)),
        ("progress", view.line()),
        ("created", ago(job.created_at)),
        ("ran", duration(job_duration(job))),
        ("attempts", str(job.attempts)),
        ("queue", job.queue),
        ("model_dir", job.model_dir),
    ]
    if job.tenant:
        rows.append(("tenant", job.tenant))
    shape = cluster_shape(job)
    if shape is not None:
        rows.append(("cluster", shape))
    rows += provenance_rows(job.provenance)
    if job.error is not None:
        rows.append(("error", Text(f"({job.error.reason}) {job.error.type}: {job.error.message}")))
    for name, value in rows:
        table.add_row(name, value)
    return table


def status(ctx: typer.Context, job_id: JobIdArg, as_json: JsonOption = False) -> None:
    """Show a job: state, progress, a cluster's members, metrics, error."""
    st = state(ctx)
    with st.client() as client:
        job = client.get_job(job_id)
    if as_json:
        print_json(st.out, job)
        return
    st.out.print(describe_job(job))
    if job.cluster is not None:
        st.out.print(members_table(job.cluster))
    if job.metrics.eval:
        st.out.print(eval_table(job.metrics.eval))


def watch(
    ctx: typer.Context,
    job_id: JobIdArg,
    cancel_on_interrupt: Annotated[
        bool, typer.Option(help="Ctrl-C cancels the job instead of detaching.")
    ] = False,
) -> None:
    """Follow a job's progress until it ends (exit 0 succeeded, 1 failed or cancelled) or is
    suspended (exit 130)."""
    st = state(ctx)
    with st.client() as client:
        code, _ = watch_job(st, client, job_id, cancel_on_interrupt)
    raise typer.Exit(code)


def logs(
    ctx: typer.Context,
    job_id: JobIdArg,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Wait for more.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Print a job's state transitions and worker log lines."""
    st = state(ctx)
    with st.client() as client:
        if follow:
            for event in client.events(job_id):
                if event.event in ("log", "status"):
                    if as_json:
                        print_json(st.out, {"event": event.event, **event.data})
                    else:
                        _log_line(st.out, event.data.get("at", ""), event.event, event.data)
            return
        since, items = 0, []
        while True:
            page = client.logs(job_id, since)
            items += page.items
            if not page.items:
                break
            since = page.next_since
    if as_json:
        print_json(st.out, items)
        return
    for item in items:
        data = {"message": item.message, "status": item.kind}
        _log_line(st.out, item.at.isoformat(), "log" if item.kind == "log" else "status", data)


def _log_line(out: Console, at: str, kind: str, data: dict[str, Any]) -> None:
    stamp = Text(str(at)[:19].replace("T", " ") + " ", style="dim")
    if kind == "status":
        message = f" {data['message']}" if data.get("message") else ""
        out.print(stamp + status_text(str(data.get("status"))) + Text(message))
    else:
        out.print(stamp + Text(str(data.get("message", ""))), soft_wrap=True)


def cancel(ctx: typer.Context, job_id: JobIdArg, as_json: JsonOption = False) -> None:
    """Cancel a job (queued: at once; running: at its next step, after a checkpoint)."""
    st = state(ctx)
    with st.client() as client:
        job = client.cancel(job_id)
    if as_json:
        print_json(st.out, job)
    else:
        st.out.print(Text(f"job {job.id} ") + status_text(job.status))


def suspend(ctx: typer.Context, job_id: JobIdArg, as_json: JsonOption = False) -> None:
    """Suspend a job (queued: at once; running: at its next step, after a checkpoint
    there); it keeps its model_dir and resumes from that checkpoint."""
    st = state(ctx)
    with st.client() as client:
        job = client.suspend(job_id)
    _print_job_status(st, job, as_json)


def resume(ctx: typer.Context, job_id: JobIdArg, as_json: JsonOption = False) -> None:
    """Resume a suspended job from its newest checkpoint."""
    st = state(ctx)
    with st.client() as client:
        job = client.resume(job_id)
    _print_job_status(st, job, as_json)


def _print_job_status(st: CliState, job: Job, as_json: bool) -> None:
    if as_json:
        print_json(st.out, job)
    else:
        st.out.print(Text(f"job {job.id} ") + status_text(job.status))


def delete(ctx: typer.Context, job_id: JobIdArg) -> None:
    """Delete an ended job and its files."""
    st = state(ctx)
    with st.client() as client:
        client.delete_job(job_id)
    st.out.print(f"deleted job {job_id}")


def download(
    ctx: typer.Context,
    job_id: JobIdArg,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Folder (default: ./<job id>).")
    ] = None,
    checkpoint: Annotated[
        int | None, typer.Option(help="A checkpoint's step instead of the SavedModel.")
    ] = None,
    archive: Annotated[bool, typer.Option(help="Keep the tar.gz as it is.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Download a job's SavedModel (unpacked, TF Serving layout) or one checkpoint."""
    st = state(ctx)
    dest = output or Path(job_id)
    with st.client() as client:
        if checkpoint is None:
            path = client.download_savedmodel(job_id, dest, archive)
        else:
            path = client.download_checkpoint(job_id, checkpoint, dest, archive)
    if as_json:
        print_json(st.out, {"path": str(path)})
        return
    st.out.print(f"saved {path}")
    if checkpoint is None and not archive:
        print_serving_hint(st.out, path)


def print_serving_hint(out: Console, version_dir: Path) -> None:
    base = version_dir.resolve().parent
    out.print(
        Text("serve it with TF Serving:\n", style="bold")
        + Text(
            f"  docker run -p 8501:8501 -v {base}:/models/k2e -e MODEL_NAME=k2e "
            "tensorflow/serving\n"
            "  curl -d '{\"instances\": [...]}' http://localhost:8501/v1/models/k2e:predict\n"
            f'or in Python: tf.saved_model.load("{version_dir}")'
        )
    )
