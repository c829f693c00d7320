"""A job's live view: a progress bar with step/max_steps, steps/s, loss and ETA, fed by
the job's events; the final state, evaluation metrics and error when it ends."""

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from k2e.cli.render import STATUS_STYLE, duration
from k2e.client.following import JobStreamEvent
from k2e.schemas import Job

# Without a terminal (a pipe, CI) a plain line is printed at most this often while training.
PLAIN_INTERVAL_S = 5.0


@dataclass
class JobProgressView:
    """The state a job's events build up, and its rendering."""

    job_id: str
    status: str = "queued"
    global_step: int = 0
    max_steps: int | None = None
    steps_per_sec: float | None = None
    eta_s: float | None = None
    loss: float | None = None
    last_log: str = ""
    eval_metrics: dict[str, float] = field(default_factory=dict)
    job: Job | None = None

    def apply(self, event: JobStreamEvent) -> None:
        data: dict[str, Any] = event.data
        if event.event == "status":
            self.status = data.get("status", self.status)
        elif event.event == "progress":
            self.global_step = data.get("global_step", self.global_step)
            self.max_steps = data.get("max_steps", self.max_steps)
            self.steps_per_sec = data.get("steps_per_sec")
            self.eta_s = data.get("eta_s")
        elif event.event == "loss":
            self.loss = data.get("loss", self.loss)
        elif event.event == "log":
            self.last_log = str(data.get("message", "")).splitlines()[-1:][0] if data else ""
        elif event.event == "eval":
            self.eval_metrics = dict(data.get("metrics", {}))
        elif event.event == "end":
            self.apply_job(event.job())

    def apply_job(self, job: Job) -> None:
        self.job = job
        self.status = job.status
        self.global_step = job.progress.global_step
        self.max_steps = job.progress.max_steps or self.max_steps
        self.steps_per_sec = job.progress.steps_per_sec
        self.eta_s = job.progress.eta_s if job.status == "running" else None
        if job.metrics.train:
            self.loss = job.metrics.train[-1].loss
        self.eval_metrics = dict(job.metrics.eval) or self.eval_metrics

    def line(self) -> Text:
        """step/max · steps/s · loss · ETA, as one line of text."""
        steps = f"{self.global_step}/{self.max_steps}" if self.max_steps else str(self.global_step)
        parts = [f"step {steps}"]
        if self.max_steps:
            parts[0] += f" ({100 * min(self.global_step / self.max_steps, 1):.0f}%)"
        rate = "-" if self.steps_per_sec is None else f"{self.steps_per_sec:.1f}"
        parts.append(f"{rate} steps/s")
        parts.append("loss " + ("-" if self.loss is None else f"{self.loss:.4g}"))
        parts.append("ETA " + duration(self.eta_s))
        text = Text(f"{self.status:<10} ", style=STATUS_STYLE.get(self.status, ""))
        return text + Text(" · ".join(parts))

    def renderable(self) -> RenderableType:
        bar = ProgressBar(total=float(self.max_steps or 1), completed=float(self.global_step))
        grid = Table.grid(padding=(0, 1))
        grid.add_column(width=32)
        grid.add_column()
        grid.add_row(bar, self.line())
        rows: list[RenderableType] = [Text(f"job {self.job_id}", style="bold"), grid]
        if self.last_log:
            rows.append(Text(self.last_log[:200], style="dim", overflow="ellipsis", no_wrap=True))
        return Group(*rows)


def eval_table(metrics: dict[str, float]) -> Table:
    table = Table(title="evaluation", box=None, header_style="bold", title_justify="left")
    table.add_column("METRIC")
    table.add_column("VALUE", justify="right")
    for name, value in sorted(metrics.items()):
        table.add_row(name, f"{value:.6g}")
    return table


def print_outcome(console: Console, job: Job) -> None:
    """How the job ended: its state, run time, metrics, and its error with the reason."""
    took = ""
    if job.started_at and job.finished_at:
        took = f" in {duration((job.finished_at - job.started_at).total_seconds())}"
    console.print(Text(f"job {job.id} {job.status}{took}", style=STATUS_STYLE.get(job.status, "")))
    if job.metrics.eval:
        console.print(eval_table(job.metrics.eval))
    if job.error is not None:
        console.print(
            Text(f"error ({job.error.reason}): ", style="bold red")
            + Text(f"{job.error.type}: {job.error.message}")
        )


def show_events(console: Console, view: JobProgressView, events: Iterable[JobStreamEvent]) -> Job:
    """Feed the view from the events until ``end``: live in a terminal, plain lines
    otherwise. Returns the ended job; KeyboardInterrupt goes to the caller."""
    if console.is_terminal:
        with Live(view.renderable(), console=console, refresh_per_second=8) as live:
            for event in events:
                view.apply(event)
                live.update(view.renderable())
                if view.job is not None:
                    return view.job
    else:
        printed = 0.0
        status = ""
        for event in events:
            view.apply(event)
            now = time.monotonic()
            ended = view.job is not None
            if ended or view.status != status or now - printed >= PLAIN_INTERVAL_S:
                if event.event in ("progress", "status", "end"):
                    console.print(view.line())
                    printed, status = now, view.status
            if ended:
                assert view.job is not None
                return view.job
    raise RuntimeError("the event stream ended without the job's end")
