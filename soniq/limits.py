"""Concurrency limits: ``max_concurrency`` and ``max_concurrency_per_key`` (docs/flow-control.md).

Data. A job of a limited task carries ``limit_scope``/``limit_key``: the counter row of
``soniq_limits`` it counts against (``task:<name>`` with key ``""`` for ``max_concurrency``,
``key:<name>`` with the job's ``concurrency_key`` for ``max_concurrency_per_key``). Jobs of
other tasks have NULL there; the plain claim takes only those (one ``IS NULL`` test on a row
it already reads) and is otherwise unchanged.

Admission. Workers whose registry has limited tasks claim with ``job_claim_limited``
(sql/flow.sql): it locks counter rows with ``FOR UPDATE SKIP LOCKED``, admits at most
``max - running`` due jobs per row, and raises ``running`` by the jobs admitted, all in one
statement; the lock is held until that statement commits.

Release. A row trigger (``WHEN`` the job leaves ``processing`` and has a limit, so other jobs
pay nothing) lowers ``running`` in the statement that records the job's outcome, rescue,
shutdown return or abort, and NOTIFYs the wake-up channel so held jobs start at once.

Why the limit holds under READ COMMITTED. Every change to ``running`` is a write to the
counter row: the claim's raise happens while it holds the row lock, and the trigger's
decrement waits for that lock. ``SELECT ... FOR UPDATE`` returns the newest committed version
of the row it locks (EvalPlanQual re-reads it), not the statement's snapshot, and the
claim's ``UPDATE`` of the row it already holds likewise applies to that newest version. So
the ``running`` a claimer reads is the true number of admitted, unreleased jobs, nobody can
admit against the row until it commits, and it admits no more than ``max - running``.
Counting ``processing`` rows inside the claim's snapshot would not be safe (jobs admitted by a
claimer that commits after the snapshot are invisible; pgqueuer#761, hatchet#4778).
Decrements are only ever applied to jobs that were counted: the claim counts exactly the
jobs it moves to ``processing`` (an expired job it cancels instead is not counted), and the
trigger fires once per job leaving ``processing``.

Deadlocks. The claim only takes locks with SKIP LOCKED, and a worker with limited tasks
writes its outcomes in a statement of their own before claiming, so a claim never waits
while holding counter rows. Two outcome statements releasing several keys in opposite order
can deadlock; PostgreSQL aborts one and its worker writes the batch again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, NamedTuple

import asyncpg

from soniq.errors import ENQUEUE_INVALID, SETTINGS_INVALID, SoniqError, schema_missing
from soniq.foreign import as_asyncpg

if TYPE_CHECKING:
    from soniq.app import Soniq
    from soniq.jobs import Task

MAX_KEY_CHARS = 200


class Limit(NamedTuple):
    """The counter row one job counts against."""

    scope: str
    key: str
    max: int


def check_limit(task_name: str, option: str, value: Any) -> int | None:
    """``value`` of ``max_concurrency``/``max_concurrency_per_key``, checked."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SoniqError(
            SETTINGS_INVALID,
            f"{option} for {task_name} must be an integer >= 1 (got {value!r}); leave it out "
            "for no limit",
        )
    return value


def apply(task: Task[Any, Any], max_concurrency: Any, max_concurrency_per_key: Any) -> None:
    """Check the task's limits and set them on ``task`` (before it is registered)."""
    fleet = check_limit(task.name, "max_concurrency", max_concurrency)
    per_key = check_limit(task.name, "max_concurrency_per_key", max_concurrency_per_key)
    if fleet is not None and per_key is not None:
        raise SoniqError(
            SETTINGS_INVALID,
            f"{task.name}: give max_concurrency or max_concurrency_per_key, not both "
            "(combining them is not supported yet)",
        )
    task.max_concurrency = fleet
    task.max_concurrency_per_key = per_key


def scope_of(task: Task[Any, Any]) -> tuple[str, int] | None:
    """(scope, max) of a task's limit, or None."""
    if task.max_concurrency is not None:
        return f"task:{task.name}", task.max_concurrency
    if task.max_concurrency_per_key is not None:
        return f"key:{task.name}", task.max_concurrency_per_key
    return None


def job_limit(task: Task[Any, Any] | None, job_name: str, concurrency_key: Any) -> Limit | None:
    """The limit a new job of ``task`` counts against; None for unlimited tasks.
    Raises ``SONIQ_ENQUEUE_INVALID`` for a missing or unexpected ``concurrency_key``."""
    per_key = task is not None and task.max_concurrency_per_key is not None
    if concurrency_key is not None:
        if not per_key:
            raise SoniqError(
                ENQUEUE_INVALID,
                f"concurrency_key given, but task {job_name!r} has no max_concurrency_per_key"
                " (declare it on @app.job, or leave the key out)",
            )
        if not isinstance(concurrency_key, str) or not 0 < len(concurrency_key) <= MAX_KEY_CHARS:
            raise SoniqError(
                ENQUEUE_INVALID,
                f"concurrency_key must be a non-empty string of at most {MAX_KEY_CHARS} "
                f"characters (got {concurrency_key!r})",
            )
    if task is None:
        return None
    found = scope_of(task)
    if found is None:
        return None
    scope, limit = found
    if per_key:
        if concurrency_key is None:
            raise SoniqError(
                ENQUEUE_INVALID,
                f"task {job_name!r} has max_concurrency_per_key={limit}: pass "
                'concurrency_key="..." to enqueue (the tenant, account... that shares the limit)',
            )
        return Limit(scope, concurrency_key, limit)
    return Limit(scope, "", limit)


def registry_scopes(tasks: dict[str, Task[Any, Any]]) -> tuple[list[str], list[int]]:
    """The scopes (and their max) of the limited tasks a worker runs."""
    found = [s for s in (scope_of(t) for t in tasks.values()) if s is not None]
    return [s for s, _ in found], [m for _, m in found]


def summary(described: dict[str, Any]) -> str:
    """One table cell for ``describe``'s keys: "max 3", "max 1 per key" or "-"."""
    if described.get("max_concurrency") is not None:
        return f"max {described['max_concurrency']}"
    if described.get("max_concurrency_per_key") is not None:
        return f"max {described['max_concurrency_per_key']} per key"
    return "-"


def stale_scopes(tasks: dict[str, Task[Any, Any]]) -> list[str]:
    """Scopes of limits the registered tasks do not declare (any more): their queued jobs
    are released to the plain claim when a worker starts."""
    out = []
    current = {s for s, _ in (scope_of(t) or ("", 0) for t in tasks.values())}
    for name in tasks:
        out += [s for s in (f"task:{name}", f"key:{name}") if s not in current]
    return out


def describe(task: Task[Any, Any]) -> dict[str, Any]:
    """The limits of ``task``, for ``soniq tasks``."""
    return {
        "max_concurrency": task.max_concurrency,
        "max_concurrency_per_key": task.max_concurrency_per_key,
    }


async def enqueue_limited(
    app: Soniq,
    limit: Limit,
    ids: list[str],
    connection: Any,
    insert: Callable[[Any], Awaitable[list[str]]],
) -> list[str]:
    """Run ``insert`` (the usual enqueue statement) and mark the jobs ``ids`` it inserted as
    counting against ``limit``, in one transaction (the caller's, with ``connection=``), so
    no worker ever sees them unmarked."""
    db = await app.database()

    async def run(conn: Any) -> list[str]:
        async with conn.transaction():
            await db.limit_ensure(conn, limit.scope, limit.key, limit.max)
            got = await insert(conn)
            mine = [i for i in got if i in set(ids)]  # not a dedup hit's older job
            if mine:
                await db.job_set_limit(conn, mine, limit.scope, limit.key)
            return got

    try:
        if connection is None:
            async with db.pool.acquire() as conn:
                return await run(conn)
        return await run(await _asyncpg(connection))
    except asyncpg.UndefinedTableError:
        raise schema_missing(app.schema) from None


async def _asyncpg(connection: Any) -> Any:
    if connection is None or isinstance(connection, asyncpg.Connection):
        return connection
    return await as_asyncpg(connection)


async def insert_one(app: Soniq, job: Any, limit: Limit, connection: Any) -> str:
    """Insert ``job`` (no dedup key, no extras) counting against ``limit``: one statement."""
    db = await app.database()
    try:
        await db.job_insert_limited(await _asyncpg(connection), job, limit)
    except asyncpg.UndefinedTableError:
        raise schema_missing(app.schema) from None
    for observer in app.observers:
        observer.job_enqueued(job.queue, job.job_name, 1)
    return str(job.id)


async def insert_many(app: Soniq, jobs: Any, limit: Limit, connection: Any) -> list[str]:
    """``enqueue_many`` of a limited task: one statement."""
    db = await app.database()
    try:
        await db.job_insert_many_limited(await _asyncpg(connection), jobs, limit)
    except asyncpg.UndefinedTableError:
        raise schema_missing(app.schema) from None
    for observer in app.observers:
        observer.job_enqueued(jobs.queue, jobs.job_name, len(jobs.ids))
    return list(jobs.ids)
