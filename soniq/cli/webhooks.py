"""``soniq webhooks``: add, list, remove, rotate and inspect lifecycle webhooks."""

from __future__ import annotations

from typing import Any

import click

from soniq.app import Soniq
from soniq.cli.apps import with_app
from soniq.cli.base import SoniqGroup, cli, common, fail, json_option
from soniq.cli.render import ago, console, details, emit_json, short, table


@cli.group("webhooks", cls=SoniqGroup)
def webhooks() -> None:
    """Signed HTTP POSTs on job events (docs/webhooks.md)."""


def _names(values: tuple[str, ...]) -> list[str] | None:
    return list(values) or None


@webhooks.command("add")
@common
@json_option
@click.argument("url")
@click.option("--event", "events", multiple=True, metavar="E",
              help="An event to send (repeatable; default all).")  # fmt: skip
@click.option("--task", "tasks", multiple=True, metavar="T", help="Only jobs of this task.")
@click.option("--queue", "queues", multiple=True, metavar="Q", help="Only jobs of this queue.")
def webhooks_add(
    as_json: bool, url: str, events: tuple[str, ...], tasks: tuple[str, ...],
    queues: tuple[str, ...],
) -> None:  # fmt: skip
    """Subscribe URL; prints its id and its secret (shown this once)."""

    async def go(app: Soniq) -> None:
        hook = await app.webhooks.add(
            url, events=_names(events), tasks=_names(tasks), queues=_names(queues)
        )
        if as_json:
            emit_json(hook)
            return
        out = console()
        out.print(details(f"Webhook {hook['id']}", [
            ("URL", hook["url"]), ("Events", ", ".join(hook["events"])),
            ("Tasks", ", ".join(hook["tasks"] or ["(all)"])),
            ("Queues", ", ".join(hook["queues"] or ["(all)"])), ("Secret", hook["secret"]),
        ]))  # fmt: skip
        out.print("Store the secret now: it is not shown again.")

    with_app(go)


@webhooks.command("list")
@common
@json_option
def webhooks_list(as_json: bool) -> None:
    """Every subscription (never its secret)."""

    async def go(app: Soniq) -> None:
        hooks = await app.webhooks.list()
        if as_json:
            emit_json(hooks)
            return
        rows = [
            [h["id"], h["url"], ", ".join(h["events"]), ", ".join(h["tasks"] or ["(all)"]),
             ", ".join(h["queues"] or ["(all)"]), "yes" if h["rotating"] else "",
             ago(h["created_at"])]
            for h in hooks
        ]  # fmt: skip
        columns = ["ID", "URL", "Events", "Tasks", "Queues", "Rotating", "Added"]
        console().print(table(f"Webhooks: {len(hooks)}", columns, rows))

    with_app(go)


@webhooks.command("remove")
@common
@click.argument("webhook_id", metavar="ID")
def webhooks_remove(webhook_id: str) -> None:
    """Delete a subscription; its pending deliveries are dropped."""

    async def go(app: Soniq) -> bool:
        return await app.webhooks.remove(webhook_id)

    if not with_app(go):
        fail(f"no webhook {webhook_id!r}; see `soniq webhooks list` for the ids")
    click.echo(f"removed webhook {webhook_id}")


@webhooks.command("rotate")
@common
@json_option
@click.argument("webhook_id", metavar="ID")
@click.option("--grace", type=float, default=86400.0, show_default=True, metavar="S",
              help="Seconds during which the old secret still signs too.")  # fmt: skip
def webhooks_rotate(as_json: bool, webhook_id: str, grace: float) -> None:
    """A new secret for ID (printed this once); the old one signs for --grace more seconds."""

    async def go(app: Soniq) -> str:
        return await app.webhooks.rotate_secret(webhook_id, grace=grace)

    secret = with_app(go)
    if as_json:
        emit_json({"id": webhook_id, "secret": secret, "grace": grace})
        return
    click.echo(secret)
    click.echo(f"Store the new secret now; the old one signs too for {grace:g} s.", err=True)


@webhooks.command("deliveries")
@common
@json_option
@click.option("--webhook", "webhook_id", metavar="ID", help="Only this subscription's.")
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True)
def webhooks_deliveries(as_json: bool, webhook_id: str | None, limit: int) -> None:
    """Recent delivery attempts, newest first."""

    async def go(app: Soniq) -> list[dict[str, Any]]:
        return await app.webhooks.deliveries(webhook_id=webhook_id, limit=limit)

    rows = with_app(go)
    if as_json:
        emit_json(rows)
        return
    columns = ["webhook-id", "Event", "Job", "Attempt", "Status", "Error", "Duration", "When"]
    console().print(table(f"Deliveries: {len(rows)}", columns, [
        [r["message_id"], r["event"], r["job_id"], r["attempt"], r["status_code"] or "-",
         short(r["error"], 40), f"{r['duration'] * 1000:.0f} ms", ago(r["time"])]
        for r in rows
    ]))  # fmt: skip
