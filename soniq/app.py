"""The ``Soniq`` app object: settings, pool, registry, enqueue and management calls."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import random
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from pydantic import BaseModel

from soniq import migrate
from soniq.db import Conn, Database, init_connection, parse_uuid, release_connection
from soniq.deadletter import DeadLetter
from soniq.errors import (
    DATABASE_UNAVAILABLE,
    ENQUEUE_INVALID,
    TASK_ARGS_INVALID,
    TASK_INVALID,
    UNKNOWN_TASK_NAME,
    SoniqError,
    schema_missing,
)
from soniq.jobs import Task, TaskRef, attach, check_model_args, check_queue, dump_json
from soniq.notifier import Notifier
from soniq.settings import Settings, load_settings
from soniq.states import JobStatus

if TYPE_CHECKING:
    from soniq.schedules import Schedule

log = logging.getLogger("soniq")

F = TypeVar("F", bound=Callable[..., Any])
_INT32 = 2**31 - 1
_JSON = json.JSONEncoder(allow_nan=False, separators=(",", ":"))  # dump_json's, built once


# A ULID's randomness makes ids unique; it is not a secret. A private generator seeded from
# os.urandom (and again in every forked child) costs no system call per id, and user code
# that seeds the global `random` cannot make two processes repeat each other's ids.
_RANDOM = random.Random()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_RANDOM.seed)


class _Ids:
    """Monotonic ULIDs (python-ulid's layout: 48 bits of milliseconds, 80 random bits) as
    canonical UUID text, without building a ULID and a UUID object for every job."""

    def __init__(self) -> None:
        self._last = 0
        self._lock = threading.Lock()

    def take(self, n: int = 1) -> int:
        """The first of ``n`` consecutive ids, each above every id taken before."""
        value = (time.time_ns() // 1_000_000) << 80 | _RANDOM.getrandbits(80)
        with self._lock:
            if value <= self._last:  # same millisecond: count up, as python-ulid does
                value = self._last + 1
            self._last = value + n - 1
        return value

    @staticmethod
    def text(value: int) -> str:
        h = f"{value:032x}"
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_IDS = _Ids()


def redact_url(url: str) -> str:
    """``url`` with its password replaced by ``***``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if not parts.password:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


class Backend:
    """``app.backend``: the instance's connection pool."""

    def __init__(self, app: Soniq) -> None:
        self._app = app

    @asynccontextmanager
    async def acquire(self) -> Any:
        db = await self._app.database()
        async with db.pool.acquire() as conn:
            try:
                yield conn
            finally:
                # user code may leave session state (SET, LISTEN, advisory locks); the pool's
                # own release skips this reset to save a round trip on soniq's queries.
                # A connection the server closed is already back in the pool (and dropped);
                # a failing reset must not hide the error the caller's code raised.
                try:
                    if not conn.is_closed():
                        await conn.reset()
                except (
                    asyncpg.InterfaceError,
                    asyncpg.InternalClientError,
                    OSError,
                    asyncpg.PostgresError,
                ):
                    with contextlib.suppress(asyncpg.InterfaceError):
                        conn.terminate()


class Soniq:
    """A soniq instance: its own settings, task registry and connection pool.

    The constructor never connects; the first call that needs the database does.
    """

    def __init__(self, database_url: str | None = None, **settings: Any) -> None:
        self.settings: Settings = load_settings(database_url=database_url, **settings)
        self.tasks: dict[str, Task[Any, Any]] = {}
        self.schedules: dict[str, Schedule] = {}
        self.before_job_hooks: list[Callable[..., Awaitable[Any]]] = []
        self.after_job_hooks: list[Callable[..., Awaitable[Any]]] = []
        self.on_error_hooks: list[Callable[..., Awaitable[Any]]] = []
        self.middlewares: list[Callable[..., Awaitable[Any]]] = []
        # Objects told about enqueues and job outcomes (e.g. soniq.contrib.metrics).
        self.observers: list[Any] = []
        self.dead_letter = DeadLetter(self)
        self.backend = Backend(self)
        self.notifier = Notifier(self)
        self.embedded = False
        self._url: str | None = None
        self._db: Database | None = None
        self._init_lock: asyncio.Lock | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> Soniq:
        await self.ensure_initialized()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def schema(self) -> str:
        return self.settings.schema_name

    async def database_url(self) -> str:
        """The URL in use: the configured one, or the embedded server's (started if needed)."""
        if self._url is None:
            if self.settings.database_url:
                self._url = self.settings.database_url
            else:
                from soniq import embedded

                self._url = await embedded.database_url(self.settings.data_dir)
                self.embedded = True
        return self._url

    async def connect(self, **server_settings: str) -> Any:
        """A direct (unpooled) connection, for sessions: LISTEN and advisory locks."""
        url = await self.database_url()
        try:
            return await asyncpg.connect(
                url, server_settings={**self._server_settings(), **server_settings}
            )
        except (OSError, asyncpg.PostgresError, asyncio.TimeoutError) as exc:
            raise self._unavailable(url, exc) from exc

    def _server_settings(self) -> dict[str, str]:
        """Session settings: an application_name operators can find in pg_stat_activity."""
        return {"application_name": f"soniq:{self.schema}"[:63]}

    def _unavailable(self, url: str, exc: BaseException) -> SoniqError:
        return SoniqError(
            DATABASE_UNAVAILABLE,
            f"cannot reach PostgreSQL at {redact_url(url)}: {exc}. Fix: start the server or "
            "point SONIQ_DATABASE_URL (or --database-url) at a reachable database; "
            "`soniq setup` creates the database if it is missing.",
        )

    async def ensure_initialized(self) -> None:
        """Open the pool (and, on the embedded default, apply migrations)."""
        await self.database()

    async def database(self) -> Database:
        if self._db is not None:
            return self._db
        if self._init_lock is None:
            self._init_lock = asyncio.Lock()
        async with self._init_lock:
            if self._db is None:
                url = await self.database_url()
                try:
                    pool = await asyncpg.create_pool(
                        url,
                        min_size=self.settings.pool_min_size,
                        max_size=self.settings.pool_max_size,
                        init=init_connection,
                        reset=release_connection,
                        server_settings=self._server_settings(),
                    )
                except (OSError, asyncpg.PostgresError, asyncio.TimeoutError) as exc:
                    raise self._unavailable(url, exc) from exc
                self._db = Database(pool, self.schema)
                if self.embedded:
                    async with pool.acquire() as conn:
                        await migrate.apply(conn, self.schema)
        return self._db

    async def close(self) -> None:
        """Close the pool. The instance may be used again afterwards (it reconnects)."""
        await self.notifier.close()
        db, self._db = self._db, None
        if db is not None:
            await db.pool.close()

    async def setup(self) -> int:
        """Create the schema and apply pending migrations; returns how many were applied."""
        db = await self.database()
        async with db.acquire() as conn:
            return await migrate.apply(conn, self.schema)

    async def migration_status(self) -> list[migrate.MigrationState]:
        db = await self.database()
        async with db.acquire() as conn:
            return await migrate.status(conn, self.schema)

    # -- registration ------------------------------------------------------------------------

    def job(
        self,
        *,
        name: str | None = None,
        queue: str = "default",
        priority: int | None = None,
        retries: int | None = None,
        retry_delay: float | Sequence[float] = 0,
        retry_backoff: bool = False,
        retry_max_delay: float | None = None,
        retry_jitter: bool = True,
        timeout: float | None = None,
        unique: bool = False,
        validate: type[BaseModel] | None = None,
        max_retries: int | None = None,
    ) -> Callable[[F], F]:
        """Register a handler; returns it unchanged but for an added ``.enqueue(**kwargs)``."""
        if max_retries is not None:
            if retries is not None and retries != max_retries:
                raise SoniqError(TASK_INVALID, "give retries= or max_retries=, not both")
            retries = max_retries

        def register(fn: F) -> F:
            task = Task.create(
                fn,
                name=name,
                queue=queue,
                priority=priority,
                retries=retries,
                retry_delay=tuple(retry_delay)
                if not isinstance(retry_delay, (int, float))
                else retry_delay,
                retry_backoff=retry_backoff,
                retry_max_delay=retry_max_delay,
                retry_jitter=retry_jitter,
                timeout=timeout,
                unique=unique,
                validate=validate,
            )
            existing = self.tasks.get(task.name)
            if (
                existing is not None
                and existing.fn is not fn
                and (
                    getattr(existing.fn, "__qualname__", None) != getattr(fn, "__qualname__", None)
                    or getattr(existing.fn, "__module__", None) != getattr(fn, "__module__", None)
                )
            ):
                raise SoniqError(
                    TASK_INVALID,
                    f"task name {task.name!r} is already registered to another function; "
                    "give one of them a different name=",
                )
            self.tasks[task.name] = task
            return attach(fn, task, self)  # type: ignore[return-value]

        if callable(name):
            raise SoniqError(
                TASK_INVALID, "use @app.job() with parentheses (only the call form is supported)"
            )
        return register

    def periodic(
        self,
        *,
        cron: str | None = None,
        every: timedelta | float | None = None,
        timezone: str = "UTC",
        name: str | None = None,
        args: dict[str, Any] | None = None,
        **job_options: Any,
    ) -> Callable[[F], F]:
        """Register a handler as ``@app.job(**job_options)`` does, plus a schedule."""
        from soniq.schedules import Schedule

        def register(fn: F) -> F:
            handler = self.job(**job_options)(fn)
            task: Task[Any, Any] = handler.__soniq_task__  # type: ignore[attr-defined]
            schedule = Schedule.create(
                name=name or task.name,
                job_name=task.name,
                cron=cron,
                every=every,
                timezone=timezone,
                args=args or {},
            )
            self.schedules[schedule.name] = schedule
            return handler

        return register

    def before_job(self, fn: F) -> F:
        """Register ``async def hook(ctx)`` called before each handler."""
        self.before_job_hooks.append(fn)
        return fn

    def after_job(self, fn: F) -> F:
        """Register ``async def hook(ctx, result)`` called after each successful handler."""
        self.after_job_hooks.append(fn)
        return fn

    def on_error(self, fn: F) -> F:
        """Register ``async def hook(ctx, exc)`` called when a handler fails."""
        self.on_error_hooks.append(fn)
        return fn

    def middleware(self, fn: F) -> F:
        """Register ``async def mw(ctx, call_next)``; the first registered is outermost."""
        self.middlewares.append(fn)
        return fn

    # -- enqueue -----------------------------------------------------------------------------

    def _resolve(
        self, target: Any, args: dict[str, Any] | None, kwargs: dict[str, Any]
    ) -> tuple[str, Task[Any, Any] | None, dict[str, Any], str | None]:
        """(task name, registered task or None, arguments, default queue)."""
        if args is not None and not isinstance(args, dict):
            raise SoniqError(
                TASK_ARGS_INVALID,
                f"args= must be a dict of keyword arguments, not {type(args).__name__}",
            )
        merged = dict(args) if args else {}
        if kwargs:
            clash = merged.keys() & kwargs.keys()
            if clash:
                raise SoniqError(
                    TASK_ARGS_INVALID,
                    f"argument(s) {sorted(clash)} given both in args= and as keywords",
                )
            merged.update(kwargs)
        task: Task[Any, Any] | None
        if isinstance(target, TaskRef):
            task = self.tasks.get(target.name)
            if target.args_model is not None:
                merged = check_model_args(target.args_model, merged, target.name)
            return target.name, task, merged, target.default_queue
        if isinstance(target, str):
            task = self.tasks.get(target)
            if task is None:
                mode = self.settings.enqueue_validation
                if mode == "strict":
                    raise SoniqError(
                        UNKNOWN_TASK_NAME,
                        f"no task named {target!r} is registered on this Soniq instance. "
                        "Fix: import the module that defines it, enqueue task_ref("
                        f"{target!r}) to enqueue by name without the handler, or set "
                        "enqueue_validation='warn' or 'none'.",
                    )
                if mode == "warn":
                    log.warning("enqueueing unregistered task name %r", target)
            return target, task, merged, None
        task = getattr(target, "__soniq_task__", None)
        if task is None:
            raise SoniqError(
                ENQUEUE_INVALID,
                f"cannot enqueue {target!r}: pass a function decorated with @app.job(...), "
                "a task name, or a task_ref(...)",
            )
        registered = self.tasks.get(task.name)
        if registered is None:
            # decorated on another instance: register here too, so a worker of this app runs it
            self.tasks[task.name] = task
        return task.name, task, merged, None

    def _check_handler_args(self, task: Task[Any, Any], args: dict[str, Any]) -> dict[str, Any]:
        if task.validate is not None:
            return task.check_args(args)
        if not task.accepts_kwargs:
            unknown = args.keys() - task.param_names
            if unknown:
                raise SoniqError(
                    TASK_ARGS_INVALID,
                    f"{task.name} takes no argument(s) {sorted(unknown)}; "
                    f"its parameters are {sorted(task.param_names - set(task.context_params))}",
                )
        return args

    def _scheduled_at(self, value: Any) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, datetime):
            if value.tzinfo is None or value.utcoffset() is None:
                raise SoniqError(
                    ENQUEUE_INVALID,
                    "scheduled_at is a naive datetime; pass an aware one, e.g. "
                    "datetime.now(timezone.utc) + timedelta(minutes=5)",
                )
            return value
        if isinstance(value, timedelta):
            seconds = value.total_seconds()
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            seconds = float(value)
        else:
            raise SoniqError(
                ENQUEUE_INVALID,
                f"scheduled_at must be an aware datetime, a timedelta or seconds, "
                f"not {type(value).__name__}",
            )
        if not seconds >= 0 or seconds == float("inf"):
            raise SoniqError(
                ENQUEUE_INVALID, f"scheduled_at delay must be a finite number >= 0, got {value!r}"
            )
        if seconds == 0:
            return None
        return datetime.now(timezone.utc) + timedelta(seconds=seconds)

    def _options(
        self, task: Task[Any, Any] | None, queue: Any, priority: Any, default_queue: str | None
    ) -> tuple[str, int, int]:
        if queue is None:
            queue = task.queue if task is not None else (default_queue or "default")
        else:
            check_queue(queue, ENQUEUE_INVALID)
        if priority is None:
            priority = (
                task.priority
                if task is not None and task.priority is not None
                else self.settings.priority
            )
        elif (
            isinstance(priority, bool)
            or not isinstance(priority, int)
            or not (-_INT32 <= priority <= _INT32)
        ):
            raise SoniqError(
                ENQUEUE_INVALID, f"priority must be an integer (lower runs first), got {priority!r}"
            )
        retries = task.retries if task is not None and task.retries is not None else None
        max_attempts = (retries if retries is not None else self.settings.max_retries) + 1
        return queue, priority, max_attempts

    async def enqueue(
        self,
        target: Any,
        *,
        args: dict[str, Any] | None = None,
        queue: str | None = None,
        priority: int | None = None,
        scheduled_at: datetime | timedelta | float | None = None,
        dedup_key: str | None = None,
        connection: Conn | None = None,
        **kwargs: Any,
    ) -> str:
        """Enqueue one job; returns its id. With ``connection=``, inside that transaction."""
        name, task, job_args, default_queue = self._resolve(target, args, kwargs)
        if task is not None:
            job_args = self._check_handler_args(task, job_args)
        try:
            args_json = _JSON.encode(job_args)
        except (TypeError, ValueError):
            args_json = dump_json(job_args, f"arguments of {name}")  # raises the SoniqError
        q, prio, max_attempts = self._options(task, queue, priority, default_queue)
        when = self._scheduled_at(scheduled_at)
        if dedup_key is not None:
            if not isinstance(dedup_key, str) or not dedup_key:
                raise SoniqError(ENQUEUE_INVALID, "dedup_key must be a non-empty string")
        elif task is not None and task.unique:
            canonical = json.dumps(job_args, sort_keys=True, separators=(",", ":"))
            dedup_key = f"{name}:{hashlib.sha256(canonical.encode()).hexdigest()}"
        return await self._insert(
            name, q, prio, args_json, max_attempts, when, dedup_key, connection
        )

    async def _insert(
        self,
        name: str,
        queue: str,
        priority: int,
        args_json: str,
        max_attempts: int,
        scheduled_at: datetime | None,
        dedup_key: str | None,
        connection: Conn | None,
    ) -> str:
        db = self._db if self._db is not None else await self.database()
        job_id = _IDS.text(_IDS.take())
        try:
            if dedup_key is None and connection is None and scheduled_at is None:
                # the common case, with the fewest layers: a due job on soniq's connections
                await db.insert_due(job_id, name, queue, priority, args_json, max_attempts)
                for observer in self.observers:
                    observer.job_enqueued(queue, name, 1)
                return job_id
            for _ in range(10):
                got = await db.job_insert(
                    connection,
                    job_id,
                    name,
                    queue,
                    priority,
                    args_json,
                    max_attempts,
                    scheduled_at,
                    dedup_key,
                )
                if got is not None:
                    for observer in self.observers:
                        observer.job_enqueued(queue, name, 1)
                    return str(got)
                assert dedup_key is not None
                existing = await db.job_get_active_by_dedup_key(connection, dedup_key)
                if existing is not None:
                    return str(existing)
                # the holder ended between our insert and our look-up: try again
        except asyncpg.UndefinedTableError:
            raise schema_missing(self.schema) from None
        raise SoniqError(ENQUEUE_INVALID, f"dedup_key {dedup_key!r} kept changing hands; retry")

    async def enqueue_many(
        self,
        target: Any,
        args_list: Sequence[dict[str, Any]],
        *,
        queue: str | None = None,
        priority: int | None = None,
        scheduled_at: datetime | timedelta | float | None = None,
        connection: Conn | None = None,
    ) -> list[str]:
        """Enqueue many jobs of one task in one statement; ids in input order; all or nothing."""
        if isinstance(args_list, (str, bytes, dict)):
            raise SoniqError(TASK_ARGS_INVALID, "args_list must be a list of dicts")
        ref_model = target.args_model if isinstance(target, TaskRef) else None
        if ref_model is not None:  # each item is checked below, not an empty dict here
            name, default_queue = target.name, target.default_queue
            task = self.tasks.get(name)
        else:
            name, task, _, default_queue = self._resolve(target, None, {})
        # the same checks as enqueue's, per item, with what can be hoisted out of the loop
        names = (
            task.param_names
            if task is not None and task.validate is None and not task.accepts_kwargs
            else None
        )
        items: list[dict[str, Any]] = []
        for i, item in enumerate(args_list):
            if not isinstance(item, dict):
                raise SoniqError(
                    TASK_ARGS_INVALID, f"args_list[{i}] must be a dict, not {type(item).__name__}"
                )
            if ref_model is not None:
                item = check_model_args(ref_model, item, name)
            elif names is not None:
                if not names.issuperset(item):
                    self._check_handler_args(task, item)  # type: ignore[arg-type]  # raises
            elif task is not None:
                item = self._check_handler_args(task, item)
            items.append(item)
        if not items:
            return []
        try:
            args_array_json = _JSON.encode(items)  # one call for all: most of the cost per job
        except (TypeError, ValueError):
            for i, item in enumerate(items):
                dump_json(item, f"args_list[{i}] of {name}")  # raises for the first bad one
            raise
        q, prio, max_attempts = self._options(task, queue, priority, default_queue)
        when = self._scheduled_at(scheduled_at)
        db = self._db if self._db is not None else await self.database()
        first = _IDS.take(len(items))
        ids = [
            f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
            for h in map("{:032x}".format, range(first, first + len(items)))
        ]
        try:
            await db.job_insert_many(
                connection, ids, name, q, prio, args_array_json, max_attempts, when
            )
        except asyncpg.UndefinedTableError:
            raise schema_missing(self.schema) from None
        for observer in self.observers:
            observer.job_enqueued(q, name, len(ids))
        return ids

    async def schedule(
        self,
        target: Any,
        run_at: datetime | timedelta | float,
        *,
        args: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> str:
        """``enqueue`` with ``scheduled_at=run_at``."""
        return await self.enqueue(target, args=args, scheduled_at=run_at, **kwargs)

    # -- queries -----------------------------------------------------------------------------

    @staticmethod
    def _job_dict(row: Any) -> dict[str, Any]:
        job = dict(row)
        job["id"] = str(job["id"])
        job["status"] = JobStatus(job["status"])
        return job

    async def get_job(self, job_id: str) -> dict[str, Any] | None:
        uid = parse_uuid(job_id)
        if uid is None:
            return None
        row = await (await self.database()).job_get(uid)
        return None if row is None else self._job_dict(row)

    async def get_result(self, job_id: str) -> Any:
        uid = parse_uuid(job_id)
        if uid is None:
            return None
        row = await (await self.database()).job_get_result(uid)
        if row is None or row["status"] != JobStatus.DONE.value:
            return None
        return row["result"]

    async def list_jobs(
        self,
        *,
        status: str | JobStatus | None = None,
        queue: str | None = None,
        job_name: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[dict[str, Any]]:
        if status is not None:
            try:
                status = JobStatus(status).value
            except ValueError:
                raise SoniqError(
                    ENQUEUE_INVALID,
                    f"unknown status {status!r}; use one of "
                    f"{', '.join(s.value for s in JobStatus)}",
                ) from None
        rows = await (await self.database()).job_list(status, queue, job_name, limit, offset)
        return [self._job_dict(r) for r in rows]

    async def cancel_job(self, job_id: str) -> bool:
        uid = parse_uuid(job_id)
        return uid is not None and await (await self.database()).job_cancel(uid)

    async def delete_job(self, job_id: str) -> bool:
        uid = parse_uuid(job_id)
        return uid is not None and await (await self.database()).job_delete(uid)

    async def retry_job(self, job_id: str) -> bool:
        uid = parse_uuid(job_id)
        return uid is not None and await (await self.database()).job_retry_dead(uid)

    async def get_queue_stats(self) -> dict[str, int]:
        counts = await (await self.database()).job_count_by_status()
        stats = {s.value: counts.get(s.value, 0) for s in JobStatus}
        return {"total": sum(stats.values()), **stats}

    async def list_queues(self) -> list[dict[str, Any]]:
        rows = await (await self.database()).queue_stats()
        return [dict(r) for r in rows]

    async def list_workers(self) -> list[dict[str, Any]]:
        rows = await (await self.database()).worker_list(self.settings.heartbeat_timeout)
        return [dict(r) for r in rows]

    async def list_schedules(self) -> list[dict[str, Any]]:
        from soniq.scheduler import list_schedules

        return await list_schedules(self)

    async def queue_depths(self) -> list[dict[str, Any]]:
        """Per queue: ``queued``, ``processing``, ``dead_letter`` counts and
        ``oldest_queued_age`` (seconds; None when nothing is due). Cheap enough to sample."""
        rows = await (await self.database()).queue_depth()
        return [dict(r) for r in rows]

    async def queue_throughput(self, seconds: float = 60.0) -> dict[str, dict[str, int]]:
        """Per queue, jobs that ended in the last ``seconds``: ``succeeded``,
        ``dead_lettered``, ``cancelled``."""
        rows = await (await self.database()).queue_throughput(seconds)
        return {
            r["queue"]: {k: int(r[k]) for k in ("succeeded", "dead_lettered", "cancelled")}
            for r in rows
        }

    async def worker_jobs_held(self) -> dict[str, int]:
        """Worker id -> how many jobs it holds (status ``processing``) right now."""
        return await (await self.database()).worker_jobs_held()

    async def scheduler_leader(self) -> dict[str, Any] | None:
        """The database session holding the scheduler's leader lock (``pid``,
        ``application_name``, ``client_addr``, ``backend_start``), or None."""
        from soniq.db import advisory_key

        row = await (await self.database()).lock_holder(advisory_key(self.schema, "scheduler"))
        return None if row is None else dict(row)

    async def create_database(self) -> bool:
        """Create the database the URL names if it does not exist (through the server's
        ``postgres`` database); True when created. The embedded default makes its own."""
        from urllib.parse import unquote

        if not self.settings.database_url:
            await self.database_url()
            return False
        url = self.settings.database_url
        try:
            conn = await asyncpg.connect(url)
        except asyncpg.InvalidCatalogNameError:
            pass
        except (OSError, asyncpg.PostgresError, asyncio.TimeoutError) as exc:
            raise self._unavailable(url, exc) from exc
        else:
            await conn.close()
            return False
        parts = urlsplit(url)
        name = unquote(parts.path.lstrip("/")) or unquote(parts.username or "")
        for admin_db in ("postgres", "template1"):
            admin_url = urlunsplit(parts._replace(path=f"/{admin_db}"))
            try:
                conn = await asyncpg.connect(admin_url)
            except asyncpg.InvalidCatalogNameError:
                continue
            except (OSError, asyncpg.PostgresError, asyncio.TimeoutError) as exc:
                raise self._unavailable(admin_url, exc) from exc
            try:
                return await Database.database_create(conn, name)
            except asyncpg.PostgresError as exc:
                raise SoniqError(
                    DATABASE_UNAVAILABLE,
                    f"database {name!r} does not exist and could not be created: {exc}. "
                    "Fix: create it as a role allowed to (CREATEDB), or point "
                    "SONIQ_DATABASE_URL at an existing database.",
                ) from exc
            finally:
                await conn.close()
        raise SoniqError(
            DATABASE_UNAVAILABLE,
            f"database {name!r} does not exist and the server has no 'postgres' database to "
            "create it from. Fix: create it yourself, then run `soniq setup` again.",
        )

    # -- running -----------------------------------------------------------------------------

    async def run_worker(
        self,
        *,
        concurrency: int | None = None,
        queues: Sequence[str] | str | None = None,
        run_once: bool = False,
        shutdown_event: asyncio.Event | None = None,
        with_scheduler: bool = False,
        handle_signals: bool = False,
    ) -> None:
        """Run a worker in this process until ``shutdown_event`` is set (or, with
        ``run_once``, until nothing is runnable)."""
        from soniq.worker import Worker

        worker = Worker(
            self,
            concurrency=concurrency,
            queues=queues,
            run_once=run_once,
            shutdown_event=shutdown_event,
            with_scheduler=with_scheduler,
            handle_signals=handle_signals,
        )
        await worker.run()
