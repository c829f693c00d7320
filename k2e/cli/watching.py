"""Watching a job to its end from the terminal, shared by submit, watch and demo."""

from k2e.cli.context import EXIT_DETACHED, EXIT_FAILED, CliState
from k2e.cli.progress import JobProgressView, print_outcome, show_events
from k2e.client import Client
from k2e.schemas import Job, JobStatus


def exit_code(job: Job) -> int:
    """0 succeeded; 130 suspended (like a detach: the job goes on once resumed); 1 else."""
    if job.status == JobStatus.suspended:
        return EXIT_DETACHED
    return 0 if job.status == JobStatus.succeeded else EXIT_FAILED


def watch_job(
    state: CliState, client: Client, job_id: str, cancel_on_interrupt: bool = False
) -> tuple[int, Job | None]:
    """Show the job's progress until it ends or is suspended. Ctrl-C detaches (the job
    goes on) and says how to come back, or cancels the job with ``cancel_on_interrupt``."""
    view = JobProgressView(job_id)
    try:
        job = show_events(state.out, view, client.events(job_id))
    except KeyboardInterrupt:
        if cancel_on_interrupt:
            cancelled = client.cancel(job_id)
            state.err.print(f"cancel requested: job {job_id} is {cancelled.status}")
            return EXIT_DETACHED, cancelled
        state.err.print(
            f"detached: job {job_id} goes on. Reattach with `k2e watch {job_id}`, "
            f"cancel with `k2e cancel {job_id}`."
        )
        return EXIT_DETACHED, None
    print_outcome(state.out, job)
    return exit_code(job), job
