"""Acting on many dead-letter entries: select, confirm, work in batches, report.

A first SIGINT/SIGTERM stops after the entry in progress; a second cancels at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import signal
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar, cast

import click

from soniq.app import Soniq
from soniq.cli.apps import with_app
from soniq.cli.base import fail
from soniq.cli.render import console, emit_json

F = TypeVar("F", bound=Callable[..., Any])

BATCH = 100  # bulk dead-letter work: entries per batch between progress updates
PAST = {"replay": "replayed", "delete": "deleted"}
GERUND = {"replay": "replaying", "delete": "deleting"}
RERUN = {  # after an interruption
    "replay": "run the same command again to replay the rest (replayed entries are skipped)",
    "delete": "run the same command again to delete the rest",
}


@dataclasses.dataclass(frozen=True)
class Selection:
    """What a bulk command acts on, as given by :func:`bulk_options`."""

    ids: tuple[str, ...]
    select_all: bool
    job_name: str | None
    limit: int | None
    yes: bool


def _selection(ids: tuple[str, ...], select_all: bool, job_name: str | None, verb: str) -> bool:
    """Validates the selection flags; True for a bulk selection (--all / --job-name)."""
    if ids and (select_all or job_name):
        raise click.UsageError("give entry IDS, or --all / --job-name, not both")
    if not ids and not (select_all or job_name):
        raise click.UsageError(
            f"say what to {verb}: entry IDS, --all, or --job-name NAME "
            "(see `soniq dead-letter list`)"
        )
    return not ids


async def _collect(
    app: Soniq, job_name: str | None, limit: int | None, skip: Callable[[Any], str | None]
) -> tuple[list[Any], list[tuple[Any, str]]]:
    """Entries matching ``job_name``, paging through the list: (to act on, at most
    ``limit``; skipped with the reason)."""
    todo: dict[str, Any] = {}
    skipped: dict[str, tuple[Any, str]] = {}
    page = 1000
    offset = 0
    while limit is None or len(todo) < limit:
        batch = await app.dead_letter.list_dead_letter_jobs(
            limit=page, offset=offset, job_name=job_name
        )
        for entry in batch:
            why = skip(entry)
            if why is not None:
                skipped.setdefault(entry.id, (entry, why))
            elif limit is None or len(todo) < limit:
                todo.setdefault(entry.id, entry)
        if len(batch) < page:
            break
        offset += page
    return list(todo.values()), list(skipped.values())


class _Interrupt:
    """First SIGINT/SIGTERM: stop after the entry in progress. Second: cancel at once."""

    def __init__(self, task: asyncio.Task[Any]) -> None:
        self.requested = False
        self.task = task
        self.installed: list[signal.Signals] = []

    def __call__(self) -> None:
        if self.requested:
            self.task.cancel()
            return
        self.requested = True
        click.echo("interrupt: stopping after the entry in progress (again to stop now)", err=True)

    @contextlib.contextmanager
    def installed_on(self, loop: asyncio.AbstractEventLoop) -> Iterator[None]:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, self)
                self.installed.append(sig)
            except (NotImplementedError, RuntimeError, ValueError):
                pass  # not the main thread (e.g. tests): Ctrl-C raises KeyboardInterrupt
        try:
            yield
        finally:
            for sig in self.installed:
                loop.remove_signal_handler(sig)


def act_in_bulk(
    verb: str,
    selection: Selection,
    as_json: bool,
    *,
    act: Callable[[Soniq, Any], Awaitable[Any]],
    skip: Callable[[Any], str | None] = lambda entry: None,
) -> None:
    """The body of a bulk command: :func:`run_bulk`, then :func:`report` what was done."""

    async def go(app: Soniq) -> None:
        done, skipped, selected, interrupted = await run_bulk(
            app, verb, selection, skip=skip, act=lambda entry: act(app, entry)
        )
        report(verb, done, skipped, selected, interrupted, as_json)

    with_app(go)


async def run_bulk(
    app: Soniq,
    verb: str,
    selection: Selection,
    *,
    skip: Callable[[Any], str | None],
    act: Callable[[Any], Awaitable[Any]],
) -> tuple[list[tuple[Any, Any]], list[tuple[Any, str]], int, bool]:
    """Select entries, confirm, then ``act`` on each in batches with a progress bar.

    Returns (done as (entry, result), skipped as (entry, why), selected, interrupted).
    """
    job_name = selection.job_name
    bulk = _selection(selection.ids, selection.select_all, job_name, verb)
    if bulk:
        todo, skipped = await _collect(app, job_name, selection.limit, skip)
    else:
        todo, skipped = [], []
        for job_id in dict.fromkeys(selection.ids):
            entry = await app.dead_letter.get_dead_letter_job(job_id)
            if entry is None:
                fail(f"no dead-letter entry with id {job_id}; nothing was {PAST[verb]}")
            why = skip(entry)
            if why is None:
                todo.append(entry)
            else:
                skipped.append((entry, why))
    if bulk and todo and not selection.yes:
        what = f" of task {job_name}" if job_name else ""
        noun = "entry" if len(todo) == 1 else "entries"
        question = f"{verb.capitalize()} {len(todo)} dead-letter {noun}{what}"
        if skipped:
            question += f" ({len(skipped)} skipped)"
        try:
            confirmed = await asyncio.to_thread(click.confirm, question + "?", err=True)
        except click.Abort:
            confirmed = False
        if not confirmed:
            fail("not confirmed; nothing changed (--yes skips the question)")
    done: list[tuple[Any, Any]] = []
    current = asyncio.current_task()
    assert current is not None
    stopper = _Interrupt(current)
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    progress = Progress(
        TextColumn(GERUND[verb]),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console(stderr=True),
        transient=False,
        disable=len(todo) < 2,
    )
    try:
        with stopper.installed_on(asyncio.get_running_loop()), progress:
            bar = progress.add_task(verb, total=len(todo))
            for start in range(0, len(todo), BATCH):
                for entry in todo[start : start + BATCH]:
                    if stopper.requested:
                        break
                    done.append((entry, await act(entry)))
                    progress.advance(bar)
                if stopper.requested:
                    break
    except asyncio.CancelledError:
        if not stopper.requested:
            raise
        uncancel = getattr(current, "uncancel", None)  # 3.11+: clear the cancel request
        if uncancel is not None:
            uncancel()  # the second signal: the entry in progress was rolled back
    return done, skipped, len(todo) + len(skipped), stopper.requested and len(done) < len(todo)


def bulk_options(fn: F) -> F:
    """IDS, --all, --job-name, --limit and --yes, passed to ``fn`` as one ``selection``."""
    names = [f.name for f in dataclasses.fields(Selection)]

    @functools.wraps(fn)
    def command(**params: Any) -> Any:
        selection = Selection(**{name: params.pop(name) for name in names})
        return fn(selection=selection, **params)

    for option in reversed(
        [
            click.argument("ids", nargs=-1, metavar="[IDS...]"),
            click.option("--all", "select_all", is_flag=True, help="Every entry."),
            click.option("--job-name", metavar="TASK", help="Every entry of this task."),
            click.option("--limit", type=click.IntRange(min=1), help="At most this many entries."),
            click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation."),
        ]
    ):
        command = option(command)
    return cast(F, command)


def report(
    verb: str,
    done: list[tuple[Any, Any]],
    skipped: list[tuple[Any, str]],
    selected: int,
    interrupted: bool,
    as_json: bool,
) -> None:
    if as_json:
        emit_json(
            {
                PAST[verb]: [{"id": e.id, "result": r} for e, r in done],
                "skipped": [{"id": e.id, "why": why} for e, why in skipped],
                "selected": selected,
                "interrupted": interrupted,
            }
        )
    else:
        noun = "entry" if selected == 1 else "entries"
        line = f"{PAST[verb].capitalize()} {len(done)} of {selected} {noun}"
        if skipped:
            line += f"; skipped {len(skipped)} ({skipped[0][1]})"
        click.echo(line + ".")
    if interrupted:
        fail(f"interrupted after {len(done)}; {RERUN[verb]}")
