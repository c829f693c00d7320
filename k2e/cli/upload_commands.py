"""``k2e models`` and ``k2e datasets``: upload, list, show, delete."""

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from k2e.cli.context import state
from k2e.cli.render import datasets_table, models_table, print_json, size
from k2e.client import Client

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


def _uploads_app(kind: str) -> typer.Typer:
    """The same four commands for each kind of upload."""
    noun = f"{kind}s"
    app = typer.Typer(help=f"Uploaded {noun}: upload, list, show, delete.", no_args_is_help=False)

    def fetch_page(client: Client, limit: int, cursor: str | None) -> Any:
        lister = client.list_models if kind == "model" else client.list_datasets
        return lister(limit, cursor)

    @app.callback(invoke_without_command=True)
    def default(ctx: typer.Context) -> None:
        if ctx.invoked_subcommand is None:
            list_(ctx)

    @app.command("upload")
    def upload(
        ctx: typer.Context,
        path: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="The file.")],
        as_json: JsonOption = False,
    ) -> None:
        """Upload a file; prints its id."""
        st = state(ctx)
        with st.client() as client:
            info = client.upload_model(path) if kind == "model" else client.upload_dataset(path)
        if as_json:
            print_json(st.out, info)
        else:
            st.out.print(show_table(info))

    @app.command("list")
    def list_(
        ctx: typer.Context,
        limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
        cursor: Annotated[str | None, typer.Option(help="Continue after a page.")] = None,
        as_json: JsonOption = False,
    ) -> None:
        """List them, newest first."""
        st = state(ctx)
        with st.client() as client:
            page = fetch_page(client, limit, cursor)
        if as_json:
            print_json(st.out, page)
            return
        if not page.items:
            st.out.print(f"no {noun}")
            return
        table = models_table if kind == "model" else datasets_table
        st.out.print(table(page.items))
        if page.next_cursor:
            st.out.print(f"more: k2e {noun} list --cursor {page.next_cursor}", style="dim")

    @app.command("show")
    def show(ctx: typer.Context, upload_id: str, as_json: JsonOption = False) -> None:
        """Describe one."""
        st = state(ctx)
        with st.client() as client:
            info = client.get_model(upload_id) if kind == "model" else client.get_dataset(upload_id)
        if as_json:
            print_json(st.out, info)
        else:
            st.out.print(show_table(info))

    @app.command("delete")
    def delete(ctx: typer.Context, upload_id: str) -> None:
        """Delete one (refused while a queued or running job uses it)."""
        st = state(ctx)
        with st.client() as client:
            if kind == "model":
                client.delete_model(upload_id)
            else:
                client.delete_dataset(upload_id)
        st.out.print(f"deleted {kind} {upload_id}")

    return app


def show_table(info: Any) -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    data = info.model_dump()
    for name, value in data.items():
        if name == "size":
            value = size(value)
        elif name in ("inputs", "outputs"):
            value = ", ".join(f"{t['name']} {tuple(t['shape'])} {t['dtype']}" for t in value)
        elif name == "arrays":
            value = ", ".join(f"{n} {tuple(s)}" for n, s in value.items())
        elif isinstance(value, list | dict):
            value = ", ".join(map(str, value)) or "-"
        table.add_row(name, str(value))
    return table


models_app = _uploads_app("model")
datasets_app = _uploads_app("dataset")
