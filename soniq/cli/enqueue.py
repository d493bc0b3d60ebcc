"""``soniq enqueue NAME``: enqueue a job by task name from the shell (like ``celery call``)."""

from __future__ import annotations

import json
from typing import Any

import click

from soniq.app import Soniq
from soniq.cli.apps import _quiet_logging, load_apps, run, with_app
from soniq.cli.base import cli, common, current_config, json_option
from soniq.cli.render import emit_json
from soniq.errors import JOBS_MODULES_MISSING, SoniqError


def _parse_args(raw: str | None) -> dict[str, Any]:
    if raw is None:
        return {}
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise click.BadParameter(f"not JSON ({exc}); e.g. --args '{{\"order_id\": 42}}'") from None
    if not isinstance(value, dict):
        raise click.BadParameter(
            f"must be a JSON object of keyword arguments, not {type(value).__name__}; "
            "e.g. --args '{\"order_id\": 42}'"
        )
    return value


def _owner(apps: list[Soniq], name: str) -> Soniq:
    """The jobs modules' app that registers ``name`` (the first one if none does: its
    strict validation then names the problem)."""
    for app in apps:
        if name in app.tasks:
            return app
    return apps[0]


@cli.command()
@common
@json_option
@click.argument("name", metavar="NAME")
@click.option("--args", "raw_args", metavar="JSON", help="Keyword arguments, a JSON object.")
@click.option("--queue", metavar="Q", help="Queue (default: the task's).")
@click.option("--priority", type=int, metavar="N", help="Priority; lower runs first.")
@click.option(
    "--delay", type=click.FloatRange(min=0), metavar="SECONDS", help="Run no sooner than this."
)
@click.option(
    "--after",
    metavar="ID",
    multiple=True,
    help="Wait until job ID is done (repeat for several parents); cancelled if it fails.",
)
@click.option(
    "--no-validate",
    is_flag=True,
    help="Enqueue without importing the jobs modules: the name and arguments are not checked.",
)
def enqueue(
    as_json: bool,
    name: str,
    raw_args: str | None,
    queue: str | None,
    priority: int | None,
    delay: float | None,
    after: tuple[str, ...],
    no_validate: bool,
) -> None:
    """Enqueue a job of task NAME and print its id.

    The name and arguments get the same checks as app.enqueue, against the tasks the jobs
    modules (SONIQ_JOBS_MODULES or --jobs-modules) register; --no-validate skips them.
    """
    args = _parse_args(raw_args)

    async def go(app: Soniq) -> None:
        job_id = await app.enqueue(
            name,
            args=args,
            queue=queue,
            priority=priority,
            scheduled_at=delay,
            after=list(after) or None,
        )
        if as_json:
            emit_json({"id": job_id, "job_name": name})
        else:
            click.echo(job_id)

    if no_validate:
        # a plain instance from flags and SONIQ_*: unknown names are enqueued as given
        with_app(go, enqueue_validation="none")
        return
    cfg = current_config()
    _quiet_logging(cfg)
    try:
        apps = load_apps(cfg)
    except SoniqError as exc:
        if exc.error_code != JOBS_MODULES_MISSING:
            raise
        raise SoniqError(
            exc.error_code, f"{exc.message}; or pass --no-validate to enqueue unchecked"
        ) from None
    app = _owner(apps, name)

    async def in_owner() -> None:
        try:
            await go(app)
        finally:
            await app.close()

    run(in_owner)
