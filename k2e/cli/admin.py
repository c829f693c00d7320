"""``k2e admin``: tenants, API keys and workers (admin keys only), and ``k2e whoami``."""

from typing import Annotated

import typer
from rich.text import Text

from k2e.cli.context import state
from k2e.cli.render import keys_table, print_json, tenants_table, workers_table

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]

admin_app = typer.Typer(
    help="Tenants, API keys and workers (needs an admin key).", no_args_is_help=True
)
tenants_app = typer.Typer(help="Tenants and their quotas.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys: create, list, revoke.", no_args_is_help=True)
admin_app.add_typer(tenants_app, name="tenants")
admin_app.add_typer(keys_app, name="keys")


@tenants_app.command("create")
def create_tenant(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Lowercase letters, digits, - and _.")],
    max_active_jobs: Annotated[int | None, typer.Option(help="Jobs queued + running.")] = None,
    max_bytes: Annotated[int | None, typer.Option(help="Bytes of uploads and models.")] = None,
    max_steps: Annotated[int | None, typer.Option(help="Largest train.max_steps.")] = None,
    max_run_s: Annotated[int | None, typer.Option(help="A job's run-time limit.")] = None,
    max_priority: Annotated[
        str | None, typer.Option(help="The highest priority class its jobs may ask for.")
    ] = None,
    share_cpu: Annotated[
        int | None, typer.Option(help="Guaranteed job slots of the cpu queue.")
    ] = None,
    share_gpu: Annotated[
        int | None, typer.Option(help="Guaranteed job slots of the gpu queue.")
    ] = None,
    borrow: Annotated[
        bool | None,
        typer.Option("--borrow/--no-borrow", help="May use idle slots beyond its share."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Create a tenant; quotas not given take the server's defaults."""
    share = {k: v for k, v in {"cpu": share_cpu, "gpu": share_gpu}.items() if v is not None}
    quotas: dict[str, object] = {
        k: v
        for k, v in {
            "max_active_jobs": max_active_jobs,
            "max_bytes": max_bytes,
            "max_steps": max_steps,
            "max_run_s": max_run_s,
            "max_priority": max_priority,
            "share": share or None,
            "borrow": borrow,
        }.items()
        if v is not None
    }
    st = state(ctx)
    with st.client() as client:
        tenant = client.create_tenant(name, quotas or None)
    if as_json:
        print_json(st.out, tenant)
    else:
        st.out.print(tenants_table([tenant]))


@tenants_app.command("list")
def list_tenants(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Every tenant with its quotas and usage."""
    st = state(ctx)
    with st.client() as client:
        tenants = client.list_tenants()
    if as_json:
        print_json(st.out, tenants)
    else:
        st.out.print(tenants_table(tenants))


@tenants_app.command("delete")
def delete_tenant(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The tenant to delete.")],
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete a tenant: its keys, uploads, jobs and files (none may be queued or running)."""
    st = state(ctx)
    if not yes:
        typer.confirm(f"Delete tenant {name!r} with its keys, uploads, jobs and files?", abort=True)
    with st.client() as client:
        client.delete_tenant(name)
    st.out.print(f"deleted tenant {name}")


@keys_app.command("create")
def create_key(
    ctx: typer.Context,
    tenant: Annotated[str, typer.Argument(help="The tenant the key acts for.")],
    name: Annotated[str, typer.Option(help="What the key is for.")],
    role: Annotated[str, typer.Option(help="member or admin.")] = "member",
    as_json: JsonOption = False,
) -> None:
    """Create a key; its secret is shown this once."""
    st = state(ctx)
    with st.client() as client:
        created = client.create_key(tenant, name, role)
    if as_json:
        print_json(st.out, created)
        return
    st.out.print(keys_table([created]))
    st.out.print(Text("secret (shown only now): ", style="bold") + Text(created.key))


@keys_app.command("list")
def list_keys(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Every key (never its secret)."""
    st = state(ctx)
    with st.client() as client:
        keys = client.list_keys()
    if as_json:
        print_json(st.out, keys)
    else:
        st.out.print(keys_table(keys))


@keys_app.command("revoke")
def revoke_key(ctx: typer.Context, key_id: str) -> None:
    """Revoke a key: it stops working at once."""
    st = state(ctx)
    with st.client() as client:
        client.revoke_key(key_id)
    st.out.print(f"revoked key {key_id}")


@admin_app.command("workers")
def list_workers(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """The workers: queues, accelerator, current job, memory, last heartbeat, live or lost."""
    st = state(ctx)
    with st.client() as client:
        workers = client.list_workers()
    if as_json:
        print_json(st.out, workers)
    else:
        st.out.print(workers_table(workers))


def whoami(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """The caller's tenant: its quotas and usage."""
    st = state(ctx)
    with st.client() as client:
        tenant = client.my_tenant()
    if as_json:
        print_json(st.out, tenant)
    else:
        st.out.print(tenants_table([tenant]))
