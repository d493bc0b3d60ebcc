"""Flow control limits: ``max_concurrency``, ``max_concurrency_per_key``, ``RateLimit`` and
``execution_window`` (docs/flow-control.md).

Data. A job of a limited task carries its lane (``limit_scope``, ``limit_key``): the counter
row of ``soniq_limits`` its claim finds it by, one per task (``task:<name>``, holding
``max_concurrency``), per task and ``concurrency_key`` (``key:<name>``) or, for tasks whose
jobs are held by rate limits or a window only, per task and ``rate_limit_key``
(``lane:<name>``, no maximum of its own). ``limit_more`` lists the other rows the job must
take a slot in: the task-wide ``max_concurrency`` next to a per-key lane, and one row per rate
limit (``rate:<name>`` for a named limit, ``rate.task:<task>:<max>/<window>`` for a task's
own, keyed by ``rate_limit_key``). Jobs of other tasks have NULL there; the plain claim takes
only those (one ``IS NULL`` test on a row it already reads) and is otherwise unchanged.

Two kinds of lane. A *simple* lane belongs to a task whose only limit is ``max_concurrency``
or ``max_concurrency_per_key`` (or only a window): its jobs have no ``limit_more``, and it
keeps no counter: what runs in it is the number of its jobs in ``processing``. Every other
lane (a task with rate limits, or with both concurrency limits) keeps a counter: the
``running`` of its row, like the rows of ``limit_more``.

Admission. Workers whose registry has limited tasks claim with ``job_report_and_claim_gated``
(sql/flow.sql), whose ``soniq_gate_claim`` (migrations 010, 011) admits jobs in the same statement
that moves them to ``processing``. Simple lanes are visited in the worker's round-robin order
(from the lane its last claim visited last); a lane whose next due job is in a queue the
worker serves and which, by the statement's snapshot, has room, is locked with
``pg_try_advisory_xact_lock`` (a lane another claimer holds is skipped), up to one lane per
job wanted. Then a second statement, whose snapshot is taken after those locks, counts each
locked lane's jobs in ``processing`` and takes its due jobs in claim order up to ``max`` less
that count. Counter lanes are visited least busy, least recently served first; each is locked
``FOR NO KEY UPDATE SKIP LOCKED``, its due jobs are taken in claim order while every row in the
job's ``limit_more`` gives a slot (``soniq_gate_take``: each row locked the same way, checked,
then raised), and its ``running`` is raised by the jobs admitted. Lanes of a task whose
execution window is closed are left out of the claim by the worker.

Release. A job of a simple lane gives its slot back by leaving ``processing``, by whatever
path. Counter slots: a worker's report-and-claim statement gives back those of the jobs it
ends itself, first thing in ``soniq_gate_claim``: its rows locked in (scope, key) order, then
lowered by one ``UPDATE``, before it takes any claim lock; it then marks its transaction so
that the release trigger leaves those jobs alone. Every other path out of ``processing``
(rescue, shutdown return, abort, ``ctx.complete``, deletion) goes through the row trigger
(``WHEN`` the job leaves ``processing`` and has a lane, so other jobs pay nothing), which
lowers the counters of a job with ``limit_more`` in that same statement. Both NOTIFY the
wake-up channel so held jobs start at once. A rate row keeps its starts (rows of
``soniq_rate_starts``, counted by its ``running``): each leaves the window by time, and is
deleted by the claim that finds the count at ``max``; a worker that found a rate limit full
sleeps until its ``full_until``.

Why the limits hold under READ COMMITTED.

Simple lanes: every job enters ``processing`` in a simple lane only through a claim that
holds the lane's advisory lock (the plain claim takes only jobs without a lane), and that
lock is held until the claim's transaction ends. PostgreSQL releases a transaction's locks
after its commit is visible to new snapshots. So when a claimer gets the lock, every job
admitted to the lane by an earlier holder is committed, and the claimer's next statement (a
new snapshot: each statement of a PL/pgSQL function under READ COMMITTED takes one, which is
why the claim refuses any other isolation level) sees it in ``processing``; nobody else admits
to the lane until the claimer commits. Jobs that leave ``processing`` meanwhile can only make
the count too high, never too low, so the claimer admits no more than ``max`` less what
truly runs. Counting ``processing`` rows in the snapshot the lock was taken in would not be
safe (jobs admitted by a claimer that commits after the snapshot are invisible;
pgqueuer#761, hatchet#4778): that is why the count is a separate statement. The lock key is
a hash of the lane: two lanes that share one only take turns.

Counter rows: every change to ``running`` and ``starts`` is a write to the counter row: a
claim's raise happens while it holds the row lock, and every decrement (the give-back or the
trigger) waits for that lock. ``SELECT ... FOR [NO KEY] UPDATE`` returns the newest committed
version of the row it locks (EvalPlanQual re-reads it), not the statement's snapshot, and the
claim's ``UPDATE`` of the row it already holds likewise applies to that newest version. So the
``running`` a claimer reads is the true number of admitted, unreleased jobs (for a rate row: of
recorded starts, never fewer than those in the window, and made exact by deleting the starts
that left the window before a job is refused), nobody can admit against the row until it
commits, and it admits no more than the room it read. A rate start is stamped with
``clock_timestamp()`` taken while the row is locked, so the starts of one row are recorded in
time order and every start has fewer than ``max`` others in the ``window`` before it: no
window of that length holds more than ``max``. Decrements are only ever applied to jobs that
were counted: the claim counts exactly the jobs it returns (expired ones are left to the
expiry sweep), and each job leaving ``processing`` is given back once: by the claim for
exactly the rows its guarded outcome ``UPDATE`` moved (their ``RETURNING``), by the trigger
for all others.

Deadlocks. Claims only take locks that do not wait (SKIP LOCKED, try-locks), and a worker
gives its counter slots back before it claims, in one order; so two workers' statements never
wait on each other in a cycle. The only wait a claim can make is for recreating a pruned rate
row that another transaction is inserting at that instant. A trigger release (rescue and the
other paths above) updates counter rows in no set order and can deadlock with another
release; PostgreSQL aborts one and it is retried (rescue runs again, a worker writes its
batch again).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, NamedTuple

import asyncpg

from soniq.errors import ENQUEUE_INVALID, SETTINGS_INVALID, SoniqError, schema_missing
from soniq.foreign import as_asyncpg
from soniq.ratelimit import RateLimit
from soniq.windows import ExecutionWindow

if TYPE_CHECKING:
    from soniq.app import Soniq
    from soniq.jobs import Task

MAX_KEY_CHARS = 200
UNBOUNDED = 2_147_483_647  # the max of a lane that only orders jobs (rate limits, windows)


class Gate(NamedTuple):
    """One counter row: a concurrency limit (``window_ms`` None) or a rate limit."""

    scope: str
    key: str
    max: int
    window_ms: int | None = None


class JobGates(NamedTuple):
    """The rows one job counts against: its lane and the others."""

    lane: Gate
    more: tuple[Gate, ...]

    def rows(self) -> tuple[list[str], list[str], list[int], list[int | None]]:
        """(scopes, keys, maxes, windows) of every row, the lane first."""
        gates = (self.lane, *self.more)
        return (
            [g.scope for g in gates],
            [g.key for g in gates],
            [g.max for g in gates],
            [g.window_ms for g in gates],
        )

    def more_json(self) -> str | None:
        return json.dumps([list(g) for g in self.more]) if self.more else None


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


def _rate_limits(task_name: str, value: Any) -> tuple[RateLimit, ...]:
    if value is None:
        return ()
    found = (value,) if isinstance(value, RateLimit) else value
    if not isinstance(found, (list, tuple)) or not all(isinstance(r, RateLimit) for r in found):
        raise SoniqError(
            SETTINGS_INVALID,
            f"rate_limit for {task_name} must be a RateLimit or a list of them "
            f'(got {value!r}); e.g. rate_limit=RateLimit(100, 60, name="payments-api")',
        )
    scopes = [r.scope(task_name) for r in found]
    if len(set(scopes)) != len(scopes):
        raise SoniqError(
            SETTINGS_INVALID,
            f"rate_limit for {task_name} lists one limit twice ({list(found)!r}); give each once",
        )
    return tuple(found)


def apply(
    task: Task[Any, Any],
    registered: dict[str, Task[Any, Any]],
    max_concurrency: Any,
    max_concurrency_per_key: Any,
    rate_limit: Any = None,
    execution_window: Any = None,
    tz: Any = "UTC",
) -> None:
    """Check the task's limits and set them on ``task`` (before it is registered);
    ``registered``: the other tasks, whose named rate limits must agree with this one's."""
    task.max_concurrency = check_limit(task.name, "max_concurrency", max_concurrency)
    task.max_concurrency_per_key = check_limit(
        task.name, "max_concurrency_per_key", max_concurrency_per_key
    )
    rates = _rate_limits(task.name, rate_limit)
    for other in registered.values():
        if other.name == task.name:
            continue
        for mine in rates:
            for theirs in other.rate_limits:
                if mine.name is not None and mine.name == theirs.name and mine != theirs:
                    raise SoniqError(
                        SETTINGS_INVALID,
                        f"rate limit {mine.name!r} is {mine!r} on {task.name} but {theirs!r} "
                        f"on {other.name}: a named limit is one budget; give it the same "
                        "max and window everywhere (or different names)",
                    )
    task.rate_limits = rates
    if execution_window is not None:
        task.window = ExecutionWindow(execution_window, tz, task.name)
    elif tz != "UTC":
        ExecutionWindow("* * * * *", tz, task.name)  # a bad zone is an error on its own too


def limited(task: Task[Any, Any] | None) -> bool:
    """True if jobs of ``task`` are held by a limit or a window."""
    return task is not None and bool(
        task.max_concurrency or task.max_concurrency_per_key or task.rate_limits or task.window
    )


def lane_scopes(task: Task[Any, Any]) -> list[str]:
    """The lanes jobs of ``task`` can be in (claimed by scope)."""
    if task.max_concurrency_per_key is not None:
        return [f"key:{task.name}"]
    out = [f"task:{task.name}"] if task.max_concurrency is not None else []
    if task.rate_limits or (task.window is not None and task.max_concurrency is None):
        out.append(f"lane:{task.name}")
    return out


def _key(option: str, value: Any) -> None:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_KEY_CHARS:
        raise SoniqError(
            ENQUEUE_INVALID,
            f"{option} must be a non-empty string of at most {MAX_KEY_CHARS} characters "
            f"(got {value!r})",
        )


def job_gates(
    task: Task[Any, Any] | None,
    job_name: str,
    concurrency_key: Any = None,
    rate_limit_key: Any = None,
) -> JobGates | None:
    """The rows a new job of ``task`` counts against; None for unlimited tasks. Raises
    ``SONIQ_ENQUEUE_INVALID`` for a missing or unexpected key."""
    per_key = task is not None and task.max_concurrency_per_key is not None
    if concurrency_key is not None:
        if not per_key:
            raise SoniqError(
                ENQUEUE_INVALID,
                f"concurrency_key given, but task {job_name!r} has no max_concurrency_per_key"
                " (declare it on @app.job, or leave the key out)",
            )
        _key("concurrency_key", concurrency_key)
    if rate_limit_key is not None:
        if task is None or not task.rate_limits:
            raise SoniqError(
                ENQUEUE_INVALID,
                f"rate_limit_key given, but task {job_name!r} has no rate_limit (declare "
                "rate_limit=RateLimit(...) on @app.job, or leave the key out)",
            )
        _key("rate_limit_key", rate_limit_key)
    if task is None or not limited(task):
        return None
    name = task.name
    more: list[Gate] = []
    fleet = task.max_concurrency
    if task.max_concurrency_per_key is not None:
        if concurrency_key is None:
            raise SoniqError(
                ENQUEUE_INVALID,
                f"task {job_name!r} has max_concurrency_per_key="
                f'{task.max_concurrency_per_key}: pass concurrency_key="..." to enqueue '
                "(the tenant, account... that shares the limit)",
            )
        lane = Gate(f"key:{name}", concurrency_key, task.max_concurrency_per_key)
        if fleet is not None:
            more.append(Gate(f"task:{name}", "", fleet))
    elif fleet is not None and (rate_limit_key is None or not task.rate_limits):
        lane = Gate(f"task:{name}", "", fleet)
    else:
        lane = Gate(f"lane:{name}", rate_limit_key or "", UNBOUNDED)
        if fleet is not None:
            more.append(Gate(f"task:{name}", "", fleet))
    for r in task.rate_limits:
        more.append(Gate(r.scope(name), rate_limit_key or "", r.max, r.window_ms))
    return JobGates(lane, tuple(more))


class WorkerGates:
    """A worker's view of the limits of the tasks it runs."""

    def __init__(self, tasks: dict[str, Task[Any, Any]]) -> None:
        self.lanes: list[tuple[str, ExecutionWindow | None]] = []
        simple: set[str] = set()  # lanes whose jobs have no other row to take a slot in
        sync: dict[str, tuple[int, int | None]] = {}
        rate: set[str] = set()
        for task in tasks.values():
            if not limited(task):
                continue
            for scope in lane_scopes(task):
                self.lanes.append((scope, task.window))
            if not task.rate_limits and not (
                task.max_concurrency is not None and task.max_concurrency_per_key is not None
            ):
                simple.update(lane_scopes(task))
            if task.max_concurrency_per_key is not None:
                sync[f"key:{task.name}"] = (task.max_concurrency_per_key, None)
            if task.max_concurrency is not None:
                sync[f"task:{task.name}"] = (task.max_concurrency, None)
            sync[f"lane:{task.name}"] = (UNBOUNDED, None)
            for r in task.rate_limits:
                sync[r.scope(task.name)] = (r.max, r.window_ms)
                rate.add(r.scope(task.name))
        self.sync_scopes = list(sync)
        self.sync_maxes = [m for m, _ in sync.values()]
        self.sync_windows = [w for _, w in sync.values()]
        self.rate_scopes = sorted(rate)
        current = {s for s, _ in self.lanes}
        self.stale = [
            s
            for name in tasks
            for s in (f"task:{name}", f"key:{name}", f"lane:{name}")
            if s not in current
        ]

        self._all = [s for s, _ in self.lanes]
        self._windowed = any(w is not None for _, w in self.lanes)
        self._open: tuple[int, list[str]] | None = None  # (UTC minute, its open lanes)
        self._ring = sorted(simple)  # the simple lanes, in round-robin order
        self._cursor: tuple[str, str] | None = None  # the simple lane served last

    def __bool__(self) -> bool:
        return bool(self.lanes)

    def ring(self, open_lanes: list[str]) -> tuple[list[str], str | None]:
        """The simple lanes among ``open_lanes`` in this worker's round-robin order, and
        the key to go on after in the first: the claim visits the lanes after the one
        served last, then wraps around."""
        lanes = [s for s in self._ring if s in open_lanes] if self._windowed else self._ring
        if self._cursor is None or self._cursor[0] not in lanes:
            return lanes, None
        i = lanes.index(self._cursor[0])
        return lanes[i:] + lanes[:i], self._cursor[1]

    def served(self, rows: list[Any]) -> None:
        """Note where the claim that returned ``rows`` left the round-robin (its last
        simple lane visited), for the next claim to go on after."""
        if rows and rows[0]["lane_cursor"]:
            scope, key = json.loads(rows[0]["lane_cursor"])
            self._cursor = (scope, key)

    def open_lanes(self, now: datetime | None = None) -> list[str]:
        """The lanes to claim from now (those of tasks whose window is closed left out).
        Windows open and close on whole minutes: worked out once per minute."""
        if not self._windowed:
            return self._all
        at = now or datetime.now(timezone.utc)
        minute = int(at.timestamp() // 60)
        if now is None and self._open is not None and self._open[0] == minute:
            return self._open[1]
        lanes = [s for s, w in self.lanes if w is None or w.is_open(at)]
        if now is None:
            self._open = (minute, lanes)
        return lanes

    def until_a_window_opens(self, now: datetime | None = None) -> float | None:
        """Seconds until the first closed window of this worker's tasks opens, or None."""
        at = now or datetime.now(timezone.utc)
        waits = [
            w.seconds_until_open(at) for _, w in self.lanes if w is not None and not w.is_open(at)
        ]
        found = [s for s in waits if s is not None]
        return min(found) if found else None


def summary(described: dict[str, Any]) -> str:
    """One table cell for ``describe``'s keys, e.g. "max 3; 10 per 1s (api)", or "-"."""
    parts = []
    if described.get("max_concurrency") is not None:
        parts.append(f"max {described['max_concurrency']}")
    if described.get("max_concurrency_per_key") is not None:
        parts.append(f"max {described['max_concurrency_per_key']} per key")
    for r in described.get("rate_limits") or []:
        parts.append(
            f"{r['max']} per {r['window']:g}s" + (f" ({r['name']})" if r.get("name") else "")
        )
    if described.get("execution_window"):
        parts.append(f"window {described['execution_window']} {described['timezone']}")
    return "; ".join(parts) or "-"


def describe(task: Task[Any, Any]) -> dict[str, Any]:
    """The limits and window of ``task``, for ``soniq tasks``."""
    window = task.window
    return {
        "max_concurrency": task.max_concurrency,
        "max_concurrency_per_key": task.max_concurrency_per_key,
        "rate_limits": [r.describe() for r in task.rate_limits],
        "execution_window": window.expression if window is not None else None,
        "timezone": window.timezone if window is not None else None,
    }


async def enqueue_limited(
    app: Soniq,
    gates: JobGates,
    ids: list[str],
    connection: Any,
    insert: Callable[[Any], Awaitable[list[str]]],
) -> list[str]:
    """Run ``insert`` (the usual enqueue statement) and mark the jobs ``ids`` it inserted as
    counting against ``gates``, in one transaction (the caller's, with ``connection=``), so
    no worker ever sees them unmarked."""
    db = await app.database()

    async def run(conn: Any) -> list[str]:
        async with conn.transaction():
            await db.limit_ensure(conn, gates)
            got = await insert(conn)
            mine = [i for i in got if i in set(ids)]  # not a dedup hit's older job
            if mine:
                await db.job_set_limit(conn, mine, gates)
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


async def insert_one(app: Soniq, job: Any, gates: JobGates, connection: Any) -> str:
    """Insert ``job`` (no dedup key, no extras) counting against ``gates``: one statement."""
    db = await app.database()
    try:
        await db.job_insert_limited(await _asyncpg(connection), job, gates)
    except asyncpg.UndefinedTableError:
        raise schema_missing(app.schema) from None
    for observer in app.observers:
        observer.job_enqueued(job.queue, job.job_name, 1)
    return str(job.id)


async def insert_many(app: Soniq, jobs: Any, gates: JobGates, connection: Any) -> list[str]:
    """``enqueue_many`` of a limited task: one statement."""
    db = await app.database()
    try:
        await db.job_insert_many_limited(await _asyncpg(connection), jobs, gates)
    except asyncpg.UndefinedTableError:
        raise schema_missing(app.schema) from None
    for observer in app.observers:
        observer.job_enqueued(jobs.queue, jobs.job_name, len(jobs.ids))
    return list(jobs.ids)
