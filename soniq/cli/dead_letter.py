"""``soniq dead-letter``: list, show, replay and delete dead-lettered jobs."""

from __future__ import annotations

import json
from typing import Any

import click

from soniq.app import Soniq
from soniq.cli.apps import with_app
from soniq.cli.base import SoniqGroup, cli, common, fail, json_option
from soniq.cli.bulk import Selection, act_in_bulk, bulk_options
from soniq.cli.render import (
    ago,
    console,
    details,
    emit_json,
    print_tracebacks,
    short,
    stamp,
    table,
)


@cli.group("dead-letter", cls=SoniqGroup)
def dead_letter() -> None:
    """List, show, replay and delete dead-lettered jobs."""


def _dead_row(d: Any) -> list[Any]:
    return [
        d.id,
        d.job_name,
        d.reason,
        d.resurrection_count,
        ago(d.dead_lettered_at),
        short(d.last_error, 50),
    ]


DEAD_COLUMNS = ["ID", "Task", "Reason", "Replayed", "Dead since", "Last error"]


@dead_letter.command("list")
@common
@json_option
@click.option("--job-name", metavar="TASK", help="Only entries of this task.")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--offset", type=click.IntRange(min=0), default=0, show_default=True)
def dead_letter_list(as_json: bool, job_name: str | None, limit: int, offset: int) -> None:
    """Dead-lettered jobs, most recent first."""

    async def go(app: Soniq) -> None:
        entries = await app.dead_letter.list_dead_letter_jobs(
            limit=limit, offset=offset, job_name=job_name
        )
        stats = await app.dead_letter.get_dead_letter_stats()
        if as_json:
            emit_json(
                {"total": stats.total_count, "by_reason": stats.by_reason, "entries": entries}
            )
            return
        out = console()
        out.print(
            table(
                f"Dead letter: {len(entries)} shown of {stats.total_count}",
                DEAD_COLUMNS,
                [_dead_row(d) for d in entries],
            )
        )
        if stats.by_reason:
            out.print(
                "By reason: "
                + ", ".join(f"{reason} {n}" for reason, n in sorted(stats.by_reason.items()))
            )

    with_app(go)


@dead_letter.command("show")
@common
@json_option
@click.argument("ids", nargs=-1, required=True, metavar="IDS...")
def dead_letter_show(as_json: bool, ids: tuple[str, ...]) -> None:
    """Everything about dead-letter entries: arguments and full last error."""

    async def go(app: Soniq) -> None:
        entries = []
        for job_id in ids:
            entry = await app.dead_letter.get_dead_letter_job(job_id)
            if entry is None:
                fail(f"no dead-letter entry with id {job_id}; see `soniq dead-letter list`")
            entries.append(entry)
        if as_json:
            emit_json(entries)
            return
        out = console()
        for d in entries:
            pairs = [
                ("task", d.job_name),
                ("queue", d.queue),
                ("reason", d.reason),
                ("attempts", d.attempts),
                ("replayed", f"{d.resurrection_count} time(s)"),
                ("dead since", stamp(d.dead_lettered_at)),
                ("args", json.dumps(d.args, ensure_ascii=False)),
                ("last error", d.last_error),
            ]
            out.print(details(f"Dead-letter entry {d.id}", pairs))
            print_tracebacks(out, d.errors or [])

    with_app(go)


@dead_letter.command("replay")
@common
@json_option
@bulk_options
@click.option("--again", is_flag=True, help="Also replay entries that were replayed before.")
def dead_letter_replay(as_json: bool, selection: Selection, again: bool) -> None:
    """Enqueue each entry's task again as a new job; the entry stays, marked replayed.

    Entries replayed before are skipped (unless --again), so an interrupted bulk replay can
    simply be run again: nothing is replayed twice.
    """

    def skip(entry: Any) -> str | None:
        if entry.resurrection_count and not again:
            return "replayed before; --again replays them anyway"
        return None

    act_in_bulk(
        "replay",
        selection,
        as_json,
        act=lambda app, entry: app.dead_letter.replay(entry.id),
        skip=skip,
    )


@dead_letter.command("delete")
@common
@json_option
@bulk_options
def dead_letter_delete(as_json: bool, selection: Selection) -> None:
    """Delete dead-letter entries for good."""
    act_in_bulk(
        "delete",
        selection,
        as_json,
        act=lambda app, entry: app.dead_letter.delete_dead_letter_job(entry.id),
    )
