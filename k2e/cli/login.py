"""``k2e login`` (store a URL and key in the user's config file) and ``k2e config``."""

from typing import Annotated

import typer

from k2e.cli.context import EXIT_FAILED, state
from k2e.cli.render import print_json
from k2e.client import Client
from k2e.client.endpoint import config_path, resolve_config, write_config_file


def login(
    ctx: typer.Context,
    url: Annotated[str | None, typer.Option(help="The API's URL.")] = None,
    api_key: Annotated[
        str | None, typer.Option(help="The key (asked for when not given).", show_default=False)
    ] = None,
) -> None:
    """Check a URL and key against the API, then keep them in the config file."""
    st = state(ctx)
    resolved = resolve_config(url or st.url)
    key = api_key or st.api_key or typer.prompt("API key", hide_input=True)
    with Client(resolved.url, key) as client:
        tenant = client.my_tenant()
    path = config_path()
    write_config_file(path, resolved.url, key)
    st.out.print(f"signed in to {resolved.url} as tenant {tenant.name}; saved in {path}")


def show_config(ctx: typer.Context, as_json: bool = typer.Option(False, "--json")) -> None:
    """Where the URL and key come from (the key itself is not printed)."""
    config = state(ctx).config()
    summary = {
        "url": config.url,
        "url_from": config.url_source,
        "api_key": f"…{config.api_key[-4:]}" if config.api_key else None,
        "api_key_from": config.key_source,
        "config_file": str(config_path()),
    }
    if as_json:
        print_json(state(ctx).out, summary)
        return
    for name, value in summary.items():
        state(ctx).out.print(f"{name:<13} {value}")
    if config.api_key is None:
        state(ctx).err.print("no API key: set K2E_API_KEY or run `k2e login`")
        raise typer.Exit(EXIT_FAILED)
