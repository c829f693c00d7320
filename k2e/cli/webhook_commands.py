"""``k2e webhooks``: add, list, delete, test, deliveries."""

from typing import Annotated

import typer
from rich.table import Table

from k2e.cli.context import state
from k2e.cli.render import ago, print_json
from k2e.webhooks.schemas import EventType

webhooks_app = typer.Typer(help="Webhook endpoints for job events: add, list, delete, test.")
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
WebhookIdArg = Annotated[str, typer.Argument(help="The webhook's id.")]


@webhooks_app.command("add")
def add(
    ctx: typer.Context,
    url: Annotated[str, typer.Argument(help="An http(s) URL at a public address.")],
    event: Annotated[
        list[EventType] | None,
        typer.Option("--event", "-e", help="An event type to send (repeat; default: all)."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Register an endpoint; prints its signing secret, which is shown only now."""
    st = state(ctx)
    with st.client() as client:
        hook = client.add_webhook(url, event or list(EventType))
    if as_json:
        print_json(st.out, hook)
        return
    st.out.print(f"webhook {hook.id} → {hook.url}")
    st.out.print(f"events: {', '.join(e.value for e in hook.events)}")
    st.out.print(f"secret (shown only now): {hook.secret}")


@webhooks_app.command("list")
def list_(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """The tenant's endpoints, newest first."""
    st = state(ctx)
    with st.client() as client:
        hooks = client.list_webhooks()
    if as_json:
        print_json(st.out, hooks)
        return
    if not hooks:
        st.out.print("no webhooks")
        return
    table = Table(box=None, header_style="bold")
    for column in ("ID", "URL", "EVENTS", "CREATED"):
        table.add_column(column, no_wrap=column == "ID")
    for hook in hooks:
        events = ", ".join(e.value for e in hook.events)
        table.add_row(hook.id, hook.url, events, ago(hook.created_at))
    st.out.print(table)


@webhooks_app.command("delete")
def delete(ctx: typer.Context, webhook_id: WebhookIdArg) -> None:
    """Delete an endpoint (its pending deliveries are not sent)."""
    st = state(ctx)
    with st.client() as client:
        client.delete_webhook(webhook_id)
    st.out.print(f"deleted webhook {webhook_id}")


@webhooks_app.command("test")
def send_test(ctx: typer.Context, webhook_id: WebhookIdArg, as_json: JsonOption = False) -> None:
    """Queue a webhook.test event for the endpoint."""
    st = state(ctx)
    with st.client() as client:
        delivery = client.test_webhook(webhook_id)
    if as_json:
        print_json(st.out, delivery)
        return
    st.out.print(f"queued delivery {delivery.id} (event {delivery.event_id})")


@webhooks_app.command("deliveries")
def deliveries(
    ctx: typer.Context,
    webhook_id: WebhookIdArg,
    limit: Annotated[int, typer.Option(min=1, max=200)] = 50,
    as_json: JsonOption = False,
) -> None:
    """The endpoint's deliveries, newest first, with their latest answers."""
    st = state(ctx)
    with st.client() as client:
        found = client.webhook_deliveries(webhook_id, limit)
    if as_json:
        print_json(st.out, found)
        return
    if not found:
        st.out.print("no deliveries")
        return
    table = Table(box=None, header_style="bold")
    for column in ("ID", "TYPE", "STATE", "ATTEMPTS", "ANSWER", "NEXT", "CREATED"):
        table.add_column(column, no_wrap=column in ("ID", "STATE"))
    for d in found:
        answer = str(d.response_status) if d.response_status is not None else (d.error or "-")
        nxt = d.next_attempt_at.isoformat(timespec="seconds") if d.next_attempt_at else "-"
        table.add_row(d.id, d.type, d.state, str(d.attempts), answer[:80], nxt, ago(d.created_at))
    st.out.print(table)
