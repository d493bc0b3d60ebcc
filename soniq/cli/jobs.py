"""``soniq jobs``: list, cancel, retry and purge jobs."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import click

from soniq.app import Soniq
from soniq.cli.apps import require_job, with_app
from soniq.cli.base import SoniqGroup, cli, common, fail, json_option
from soniq.cli.render import ago, console, emit_json, short, table
from soniq.states import JobStatus


@cli.group(cls=SoniqGroup)
def jobs() -> None:
    """List, cancel, retry and purge jobs."""


@jobs.command("list")
@common
@json_option
@click.option("--status", type=click.Choice([s.value for s in JobStatus], case_sensitive=False))
@click.option("--queue", metavar="Q")
@click.option("--name", metavar="TASK", help="Only jobs of this task name.")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--offset", type=click.IntRange(min=0), default=0, show_default=True)
@click.option(
    "--tag",
    "tags",
    metavar="KEY=VALUE",
    multiple=True,
    help="Only jobs carrying this tag (repeatable: all must match).",
)
def jobs_list(
    as_json: bool,
    status: str | None,
    queue: str | None,
    name: str | None,
    limit: int,
    offset: int,
    tags: tuple[str, ...],
) -> None:
    """Jobs, newest first."""
    wanted: dict[str, str] = {}
    for tag in tags:
        key, sep, value = tag.partition("=")
        if not sep or not key:
            raise click.UsageError(f"--tag {tag!r}: use KEY=VALUE, e.g. --tag tenant=acme")
        wanted[key] = value

    async def go(app: Soniq) -> None:
        if queue is not None:
            known = [q["queue"] for q in await app.list_queues()]
            if queue not in known:
                fail(
                    f"no queue named {queue!r} has jobs in schema {app.schema!r}; queues: "
                    f"{', '.join(known) or 'none'}"
                )
        rows = await app.list_jobs(
            status=status.lower() if status else None,
            queue=queue,
            job_name=name,
            limit=limit,
            offset=offset,
            tags=wanted or None,
        )
        if as_json:
            emit_json(rows)
            return
        console().print(
            table(
                f"{len(rows)} job(s)" + (f" (limit {limit})" if len(rows) == limit else ""),
                ["ID", "Task", "Queue", "Status", "Attempts", "Due", "Last error"],
                [
                    [
                        j["id"],
                        j["job_name"],
                        j["queue"],
                        j["status"].value,
                        f"{j['attempts']}/{j['max_attempts']}",
                        ago(j["scheduled_at"]),
                        short(_error_behind(j), 50),
                    ]
                    for j in rows
                ],
            )
        )

    with_app(go)


def _error_behind(job: dict[str, Any]) -> str | None:
    """The last error, when the job's current state came from it: dead-lettered, or queued
    again for a retry (not a done job whose earlier attempt failed)."""
    status = job["status"]
    if status is JobStatus.DEAD_LETTER or (status is JobStatus.QUEUED and job["attempts"] > 0):
        return job["last_error"]  # type: ignore[no-any-return]
    return None


def _job_command(
    name: str,
) -> Callable[[Callable[[Soniq, str, dict[str, Any]], Awaitable[None]]], click.Command]:
    """``soniq jobs NAME ID``: the decorated coroutine (its docstring is the help) gets the app,
    the ID as given and that job, which exists."""

    def decorate(body: Callable[[Soniq, str, dict[str, Any]], Awaitable[None]]) -> click.Command:
        def command(job_id: str) -> None:
            async def go(app: Soniq) -> None:
                await body(app, job_id, await require_job(app, job_id))

            with_app(go)

        command.__doc__ = body.__doc__
        return jobs.command(name)(common(click.argument("job_id", metavar="ID")(command)))

    return decorate


@jobs.command("cancel")
@common
@click.argument("job_id", metavar="ID")
@click.option(
    "--abort", is_flag=True, help="Also stop the job if it is running (its worker cancels it)."
)
def jobs_cancel(job_id: str, abort: bool) -> None:
    """Cancel a queued job (it will never run); with --abort, stop a running one too."""

    async def go(app: Soniq) -> None:
        job = await require_job(app, job_id)
        was_running = job["status"] is JobStatus.PROCESSING
        if await app.cancel_job(job_id, abort=abort):
            if abort and was_running:
                click.echo(
                    f"Abort requested for running job {job['id']} ({job['job_name']}); "
                    "it ends cancelled when its handler stops."
                )
            else:
                click.echo(f"Cancelled job {job['id']} ({job['job_name']}).")
            return
        now = await app.get_job(job_id)
        state = now["status"].value if now else "gone"
        hint = "" if abort else " (use --abort to stop a running job)"
        fail(f"job {job_id} is {state}; only queued jobs can be cancelled{hint}")

    with_app(go)


@_job_command("retry")
async def jobs_retry(app: Soniq, job_id: str, job: dict[str, Any]) -> None:
    """Put a dead-lettered job back in the queue under its own id, with one more attempt."""
    if await app.retry_job(job_id):
        now = await app.get_job(job_id) or job
        click.echo(
            f"Job {job['id']} ({job['job_name']}) is queued again: attempt "
            f"{now['attempts'] + 1} of {now['max_attempts']}."
        )
        return
    fail(
        f"job {job_id} is {job['status'].value}; only dead-lettered jobs can be retried "
        "(a failed job waiting for its next attempt is already queued)"
    )


@jobs.command("purge")
@common
@json_option
@click.option("--queue", metavar="Q", help="Only jobs of this queue.")
@click.option("--name", metavar="TASK", help="Only jobs of this task name.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def jobs_purge(as_json: bool, queue: str | None, name: str | None, yes: bool) -> None:
    """Cancel every queued and waiting job of a queue and/or task (they never run).

    Jobs already running, finished or dead-lettered are left as they are.
    """
    if queue is None and name is None:
        fail("give --queue and/or --name: purge cancels the matching jobs only", code=2)
    what = " and ".join(
        part
        for part in (f"queue {queue!r}" if queue else "", f"task {name!r}" if name else "")
        if part
    )
    if not yes:
        click.confirm(f"Cancel every queued and waiting job of {what}?", abort=True, err=True)

    async def go(app: Soniq) -> None:
        count = await app.cancel_jobs(queue=queue, job_name=name)
        if as_json:
            emit_json({"cancelled": count, "queue": queue, "job_name": name})
        else:
            click.echo(f"Cancelled {count} job(s) of {what}.")

    with_app(go)
