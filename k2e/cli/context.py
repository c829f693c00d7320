"""What every command shares: the consoles and the client built from the global options."""

import os
from dataclasses import dataclass, field

import typer
from rich.console import Console

from k2e.client import Client, ClientConfig, resolve_config

# Exit statuses: 0 done (a job succeeded), 1 failed (a job failed or was cancelled, the API
# unreachable, a request refused), 2 rejected (a spec or an upload broke a rule; also
# typer's usage errors), 130 detached on Ctrl-C.
EXIT_FAILED = 1
EXIT_REJECTED = 2
EXIT_DETACHED = 130


def _console(stderr: bool = False) -> Console:
    """A console for a person; piped, it keeps whole lines (rich would cut tables at 80
    columns) unless COLUMNS says otherwise."""
    console = Console(stderr=stderr)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(stderr=stderr, width=200)
    return console


@dataclass
class CliState:
    url: str | None = None
    api_key: str | None = None
    out: Console = field(default_factory=_console)
    err: Console = field(default_factory=lambda: _console(stderr=True))

    def config(self) -> ClientConfig:
        return resolve_config(self.url, self.api_key)

    def client(self) -> Client:
        config = self.config()
        return Client(config.url, config.api_key)


def state(ctx: typer.Context) -> CliState:
    """The state the root callback stored (a fresh one when a command runs on its own)."""
    root = ctx.find_root()
    if not isinstance(root.obj, CliState):
        root.obj = CliState()
    return root.obj
