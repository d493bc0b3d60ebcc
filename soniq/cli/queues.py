"""``soniq queues``: list queues with their pause state; pause and resume one."""

from __future__ import annotations

import click

from soniq.app import Soniq
from soniq.cli.apps import with_app
from soniq.cli.base import SoniqGroup, cli, common, json_option
from soniq.cli.render import age, ago, console, emit_json, table


@cli.group("queues", cls=SoniqGroup)
def queues() -> None:
    """Queues: counts and pause state; pause and resume (docs/flow-control.md)."""


@queues.command("list")
@common
@json_option
def queues_list(as_json: bool) -> None:
    """Every queue with jobs or a pause: counts by status and whether it is paused."""

    async def go(app: Soniq) -> None:
        rows = await app.list_queues()
        if as_json:
            emit_json(rows)
            return
        console().print(table(
            f"Queues (schema {app.schema!r})",
            ["Queue", "State", "Queued", "Running", "Done", "Dead", "Cancelled", "Oldest due"],
            [[q["queue"], f"paused {ago(q['paused_at'])}" if q["paused"] else "running",
              q["queued"], q["processing"], q["done"], q["dead_letter"], q["cancelled"],
              age(q["oldest_queued_age"])] for q in rows],
        ))  # fmt: skip

    with_app(go)


def _change(name: str, as_json: bool, pause: bool) -> None:
    async def go(app: Soniq) -> None:
        changed = await (app.pause_queue(name) if pause else app.resume_queue(name))
        if as_json:
            emit_json({"queue": name, "paused": pause, "changed": changed})
            return
        verb = "paused" if pause else "resumed"
        note = "" if changed else f" (it was already {'paused' if pause else 'running'})"
        console().print(f"Queue {name!r} {verb}{note}.")

    with_app(go)


@queues.command("pause")
@common
@json_option
@click.argument("name")
def queues_pause(as_json: bool, name: str) -> None:
    """Stop workers starting jobs of queue NAME (running jobs finish; enqueue still works)."""
    _change(name, as_json, True)


@queues.command("resume")
@common
@json_option
@click.argument("name")
def queues_resume(as_json: bool, name: str) -> None:
    """Let workers start jobs of queue NAME again."""
    _change(name, as_json, False)
