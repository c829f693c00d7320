"""The ``k2e`` command: its subcommands, global options, and how failures are shown
(a message and an exit status, never a traceback, for what a user can cause)."""

import sys
from typing import Annotated

import typer

from k2e.cli import (
    admin,
    demo,
    job_commands,
    login,
    plans,
    run,
    submit,
    upload_commands,
    webhook_commands,
)
from k2e.cli.context import EXIT_FAILED, EXIT_REJECTED, CliState
from k2e.cli.render import print_problem
from k2e.client import ApiUnreachable, ClientError, ProblemError
from k2e.version import __version__

app = typer.Typer(
    name="k2e",
    help="Keras models in, TensorFlow Estimator training jobs out: the k2e API's command.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def print_version(value: bool) -> None:
    if value:
        print(f"k2e {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    url: Annotated[
        str | None, typer.Option(help="The API (else K2E_URL, the config file, or local).")
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option(help="An API key (else K2E_API_KEY, the config file, or make run's key)."),
    ] = None,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=print_version, is_eager=True, help="Print k2e's version."
        ),
    ] = False,
) -> None:
    ctx.obj = CliState(url=url, api_key=api_key)


app.command("submit")(submit.submit)
app.command("jobs")(job_commands.list_jobs)
app.command("status")(job_commands.status)
app.command("watch")(job_commands.watch)
app.command("logs")(job_commands.logs)
app.command("cancel")(job_commands.cancel)
app.command("suspend")(job_commands.suspend)
app.command("resume")(job_commands.resume)
app.command("rerun")(plans.rerun)
app.command("delete")(job_commands.delete)
app.command("download")(job_commands.download)
app.add_typer(upload_commands.models_app, name="models")
app.add_typer(upload_commands.datasets_app, name="datasets")
app.add_typer(webhook_commands.webhooks_app, name="webhooks")
app.add_typer(admin.admin_app, name="admin")
app.command("whoami")(admin.whoami)
app.command("login")(login.login)
app.command("config")(login.show_config)
app.command("demo")(demo.demo)
app.command("run")(run.run)


def main() -> None:
    """The console script: run the command; expected failures become a message on stderr."""
    err = CliState().err
    try:
        app()
    except ProblemError as exc:
        print_problem(err, exc)
        if exc.status == 401:
            err.print("set K2E_API_KEY, pass --api-key, or run `k2e login`")
        sys.exit(EXIT_REJECTED if exc.status in (413, 422) else EXIT_FAILED)
    except ApiUnreachable as exc:
        err.print(f"{exc}\nis the API running? (`make run` starts one on this machine)")
        sys.exit(EXIT_FAILED)
    except ClientError as exc:
        err.print(str(exc))
        sys.exit(EXIT_FAILED)
    except KeyboardInterrupt:
        sys.exit(130)
