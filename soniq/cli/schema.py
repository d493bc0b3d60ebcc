"""``soniq setup`` and ``soniq migrate-status``: the database and its migrations."""

from __future__ import annotations

import click

from soniq.app import Soniq
from soniq.cli.apps import with_app
from soniq.cli.base import cli, common, json_option
from soniq.cli.render import console, emit_json, stamp, table
from soniq.connection import redact_url


@cli.command()
@common
def setup() -> None:
    """Create the database and tables if missing (idempotent)."""

    async def go(app: Soniq) -> None:
        created = await app.create_database()
        url = redact_url(await app.database_url())
        if created:
            click.echo(f"Created database {url}")
        applied = await app.setup()
        states = await app.migration_status()
        latest = max((s.version for s in states), default=0)
        if applied:
            click.echo(
                f"Applied {applied} migration(s) to schema {app.schema!r} of {url}; "
                f"now at version {latest}."
            )
        else:
            click.echo(f"Schema {app.schema!r} of {url} is up to date (version {latest}).")

    with_app(go)


@cli.command("migrate-status")
@common
@json_option
def migrate_status(as_json: bool) -> None:
    """Applied and pending migrations."""

    async def go(app: Soniq) -> None:
        states = await app.migration_status()
        pending = [s for s in states if s.applied_at is None]
        if as_json:
            emit_json(
                {
                    "schema": app.schema,
                    "migrations": [
                        {
                            "version": s.version,
                            "name": s.name,
                            "applied_at": s.applied_at,
                            "status": "pending" if s.applied_at is None else "applied",
                        }
                        for s in states
                    ],
                    "pending": len(pending),
                }
            )
            return
        out = console()
        out.print(
            table(
                f"Migrations in schema {app.schema!r}",
                ["Version", "Name", "Status", "Applied at"],
                [
                    [
                        f"{s.version:03d}",
                        s.name,
                        "pending" if s.applied_at is None else "applied",
                        stamp(s.applied_at),
                    ]
                    for s in states
                ],
            )
        )
        if pending:
            out.print(f"{len(pending)} pending: run `soniq setup` to apply them.")
        else:
            out.print("Up to date.")

    with_app(go)
