"""The ``Soniq`` app object: the public surface over its settings, registry and pool.

The rules live in their own modules (``enqueue``, ``registry``, ``connection``, ``db``);
this one wires them together, so services and users see one object.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar, overload

import asyncpg
from pydantic import BaseModel

from soniq import browse, control, flow, limits, migrate, otel, workflows
from soniq.connection import Backend, Connector
from soniq.db import Conn, Database, parse_uuid
from soniq.deadletter import DeadLetter
from soniq.enqueue import (
    NewJob,
    check_cancel_filters,
    check_handler_args,
    check_tags,
    job_extras,
    new_job,
    new_jobs,
)
from soniq.errors import (
    ENQUEUE_INVALID,
    SETTINGS_INVALID,
    TASK_INVALID,
    SoniqError,
    schema_missing,
)
from soniq.foreign import as_asyncpg
from soniq.jobs import Task, attach
from soniq.notifier import Notifier
from soniq.queries import advisory_key
from soniq.ratelimit import RateLimit
from soniq.registry import Registry
from soniq.scheduler import list_schedules
from soniq.schedules import Schedule
from soniq.settings import Settings, load_settings
from soniq.states import JobStatus
from soniq.webhooks.manager import Webhooks
from soniq.worker import Worker

if TYPE_CHECKING:
    from soniq.sync import SyncApp

F = TypeVar("F", bound=Callable[..., Any])
_ASYNCPG_CONN = asyncpg.Connection


def _adder(attr: str, what: str) -> Callable[[Soniq, F], F]:
    """A decorator method appending its function to the registry's list ``attr``."""

    def add(self: Soniq, fn: F) -> F:
        getattr(self.registry, attr).append(fn)
        return fn

    add.__doc__ = f"Register {what}."
    return add


class Soniq:
    """A soniq instance: its own settings, task registry and connection pool.

    The constructor never connects; the first call that needs the database does.
    """

    def __init__(
        self, database_url: str | None = None, *, testing: str | None = None, **settings: Any
    ) -> None:
        self._settings = load_settings(database_url=database_url, **settings)
        self.registry = Registry()
        # the registry's own objects, under the names the worker and users know
        self.tasks = self.registry.tasks
        self.schedules = self.registry.schedules
        self.before_job_hooks = self.registry.before_job_hooks
        self.after_job_hooks = self.registry.after_job_hooks
        self.on_error_hooks = self.registry.on_error_hooks
        self.middlewares = self.registry.middlewares
        self.observers = self.registry.observers
        self._connector = Connector(self._settings)
        self.dead_letter = DeadLetter(self)
        self.backend = Backend(self._connector)
        self.notifier = Notifier(self)
        # webhooks (soniq/webhooks): app.webhooks, and the delivery task every worker can run
        self.webhooks = Webhooks(self)
        self.testing = testing
        if testing is not None:  # jobs in memory, no database (soniq.inline)
            from soniq.inline import InlineJobs

            InlineJobs(self, testing).install()
        self._connector.on_new_loop.append(self.notifier.forget)
        self._watchers = control.Watchers(self)

    # -- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> Soniq:
        await self.ensure_initialized()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def settings(self) -> Settings:
        return self._settings

    @settings.setter
    def settings(self, value: Settings) -> None:
        """Replace the settings (the CLI applies its overrides so) before the first connect."""
        self._settings = self._connector.settings = value

    @property
    def schema(self) -> str:
        return self._settings.schema_name

    @property
    def embedded(self) -> bool:
        """True once the URL in use is the embedded server's."""
        return self._connector.embedded

    @property
    def _db(self) -> Database | None:
        """The open pool's ``Database``, or None (for tests and benchmarks that peek)."""
        return self._connector.db

    async def database_url(self) -> str:
        """The URL in use: the configured one, or the embedded server's (started if needed)."""
        return await self._connector.database_url()

    async def connect(self, bounded: bool = True, /, **server_settings: str) -> Any:
        """A direct (unpooled) connection, for sessions: LISTEN, advisory locks, the claim.
        Its statements time out after the session timeout unless ``bounded=False``."""
        return await self._connector.connect(bounded, **server_settings)

    async def ensure_initialized(self) -> None:
        """Open the pool (and, on the embedded default, apply migrations)."""
        await self._connector.database()

    async def database(self) -> Database:
        """The named queries over this instance's pool (opened on first use)."""
        return await self._connector.database()

    async def close(self) -> None:
        """Close the pool. The instance may be used again afterwards (it reconnects)."""
        self._connector.leave_other_loop()
        await self._watchers.close()
        await self.notifier.close()
        await self.webhooks.close()  # webhooks: the delivery HTTP client
        await self._connector.close()

    async def create_database(self) -> bool:
        """Create the database the URL names if it does not exist (through the server's
        ``postgres`` database); True when created. The embedded default makes its own."""
        return await self._connector.create_database()

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

    @overload
    def job(self, fn: F, /) -> F: ...

    @overload
    def job(
        self,
        fn: None = None,
        /,
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
        retry_on: tuple[type[BaseException], ...] | None = None,
        no_retry_on: tuple[type[BaseException], ...] | None = None,
        expires_after: float | None = None,
        max_concurrency: int | None = None,
        max_concurrency_per_key: int | None = None,
        rate_limit: RateLimit | Sequence[RateLimit] | None = None,
        execution_window: str | None = None,
        timezone: str = "UTC",
    ) -> Callable[[F], F]: ...

    def job(
        self,
        fn: F | None = None,
        /,
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
        retry_on: tuple[type[BaseException], ...] | None = None,
        no_retry_on: tuple[type[BaseException], ...] | None = None,
        expires_after: float | None = None,
        max_concurrency: int | None = None,
        max_concurrency_per_key: int | None = None,
        rate_limit: RateLimit | Sequence[RateLimit] | None = None,
        execution_window: str | None = None,
        timezone: str = "UTC",
    ) -> F | Callable[[F], F]:
        """Register a handler; returns it unchanged but for an added ``.enqueue(**kwargs)``.
        Used bare (``@app.job``) or called (``@app.job(...)``)."""
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
                retry_on=retry_on,
                no_retry_on=no_retry_on,
                expires_after=expires_after,
            )
            limits.apply(
                task,
                self.registry.tasks,
                max_concurrency,
                max_concurrency_per_key,
                rate_limit,
                execution_window,
                timezone,
            )
            self.registry.add_task(task)
            return attach(fn, task, self)  # type: ignore[return-value]

        if callable(name):
            raise SoniqError(
                TASK_INVALID, "name= must be a string; decorate with @app.job or @app.job(...)"
            )
        return register if fn is None else register(fn)

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

        def register(fn: F) -> F:
            if job_options.get("execution_window") is not None:
                job_options["timezone"] = timezone  # one zone for schedule and window
            if job_options.get("max_concurrency_per_key") is not None:  # ticks have no key
                raise SoniqError(
                    SETTINGS_INVALID,
                    f"@app.periodic {name or fn.__name__}: max_concurrency_per_key needs a "
                    "concurrency_key per job, which schedule ticks cannot give; use "
                    "max_concurrency instead",
                )
            handler = self.job(**job_options)(fn)
            task: Task[Any, Any] = handler.__soniq_task__  # type: ignore[attr-defined]
            check_handler_args(task, args or {})  # every firing would fail otherwise
            schedule = Schedule.create(
                name=name or task.name,
                job_name=task.name,
                cron=cron,
                every=every,
                timezone=timezone,
                args=args or {},
            )
            self.registry.add_schedule(schedule)
            return handler

        return register

    before_job = _adder("before_job_hooks", "``async def hook(ctx)``, called before each handler")
    after_job = _adder(
        "after_job_hooks", "``async def hook(ctx, result)``, called after each successful handler"
    )
    on_error = _adder("on_error_hooks", "``async def hook(ctx, exc)``, called when a handler fails")
    middleware = _adder(
        "middlewares", "``async def mw(ctx, call_next)``; the first registered is outermost"
    )

    # -- enqueue -----------------------------------------------------------------------------

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
        tags: dict[str, str] | None = None,
        expires_at: datetime | timedelta | float | None = None,
        idempotency_key: str | None = None,
        after: Any = None,
        concurrency_key: str | None = None,
        rate_limit_key: str | None = None,
        **kwargs: Any,
    ) -> str:
        """Enqueue one job; returns its id. With ``connection=``, inside that transaction.
        With ``after=`` (a job id or a list), it waits for those jobs (docs/workflows.md)."""
        job = new_job(
            self.registry,
            self._settings,
            target,
            args,
            kwargs,
            queue,
            priority,
            scheduled_at,
            dedup_key,
        )
        task = self.registry.tasks.get(job.job_name)
        limit = limits.job_gates(task, job.job_name, concurrency_key, rate_limit_key)
        if after is not None:  # continuations (soniq.workflows)
            if (
                dedup_key is not None
                or tags is not None
                or expires_at is not None
                or idempotency_key is not None
                or limit is not None
            ):
                raise SoniqError(
                    ENQUEUE_INVALID,
                    "after= cannot be combined with dedup_key, tags, expires_at, "
                    "idempotency_key or a task with flow-control limits in this version",
                )
            return await workflows.enqueue_after(self, job, after, connection)
        if limit is not None:  # flow control: the job counts against its limits' rows
            ext = job_extras(self._settings, task, job, tags, expires_at, idempotency_key)
            if ext is None and job.dedup_key is None and not otel.active():
                return await limits.insert_one(self, job, limit, connection)

            async def insert(conn: Conn) -> list[str]:
                if ext is None:
                    return [await self.enqueue_job(job, connection=conn)]
                return [await control.insert_ext(self, await self.database(), job, ext, conn)]

            return (await limits.enqueue_limited(self, limit, [job.id], connection, insert))[0]
        if (
            tags is None
            and expires_at is None
            and idempotency_key is None
            and (task is None or task.expires_after is None)
        ):
            return await self.enqueue_job(job, connection=connection)
        ext = job_extras(self._settings, task, job, tags, expires_at, idempotency_key)
        assert ext is not None
        db = await self.database()
        try:
            return await control.insert_ext(self, db, job, ext, connection)
        except asyncpg.UndefinedTableError:
            raise schema_missing(self.schema) from None

    async def enqueue_job(self, job: NewJob, *, connection: Conn | None = None) -> str:
        """Insert a job built by ``soniq.enqueue`` (its rules already applied); returns its
        id, or that of the active job holding its dedup key."""
        # the open pool's Database without a coroutine call: this is the enqueue hot path
        db = self._connector.current() or await self._connector.database()
        if connection is not None and type(connection) is not _ASYNCPG_CONN:
            connection = await as_asyncpg(connection)  # SQLAlchemy, or an error naming those
        try:
            if otel.active():  # a dictionary look-up while no tracer provider is set
                with otel.producer(job.queue, job.job_name, job_id=job.id) as trace:
                    job_id = await db.job_insert_traced(connection, job, trace)
            else:
                job_id = await db.job_insert(connection, job)
        except asyncpg.UndefinedTableError:
            raise schema_missing(self.schema) from None
        if job_id == job.id:  # else an active job held its dedup key: nothing was inserted
            for observer in self.observers:
                observer.job_enqueued(job.queue, job.job_name, 1)
        return job_id

    async def enqueue_many(
        self,
        target: Any,
        args_list: Sequence[dict[str, Any]],
        *,
        queue: str | None = None,
        priority: int | None = None,
        scheduled_at: datetime | timedelta | float | None = None,
        connection: Conn | None = None,
        concurrency_key: str | None = None,
        rate_limit_key: str | None = None,
    ) -> list[str]:
        """Enqueue many jobs of one task in one statement; ids in input order; all or nothing.
        ``concurrency_key``/``rate_limit_key``: the keys every job shares (flow control)."""
        jobs = new_jobs(
            self.registry, self._settings, target, args_list, queue, priority, scheduled_at
        )
        if jobs is None:
            return []
        limit = limits.job_gates(
            self.registry.tasks.get(jobs.job_name), jobs.job_name, concurrency_key, rate_limit_key
        )
        if limit is not None:  # flow control: the jobs count against their limits' rows
            return await limits.insert_many(self, jobs, limit, connection)
        db = self._connector.current() or await self._connector.database()
        if connection is not None:
            connection = await as_asyncpg(connection)
        try:
            if otel.active():
                with otel.producer(jobs.queue, jobs.job_name, count=len(jobs.ids)) as trace:
                    await db.job_insert_many_traced(connection, jobs, trace)
            else:
                await db.job_insert_many(connection, jobs)
        except asyncpg.UndefinedTableError:
            raise schema_missing(self.schema) from None
        for observer in self.observers:
            observer.job_enqueued(jobs.queue, jobs.job_name, len(jobs.ids))
        return jobs.ids

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
        wf = job.get("workflow_id")
        job["workflow_id"] = None if wf is None else str(wf)
        job.setdefault("step", None)
        job["after"] = list(job.get("after") or [])
        return job

    async def get_job(self, job_id: str) -> dict[str, Any] | None:
        uid = parse_uuid(job_id)
        if uid is None:
            return None
        row = await (await self.database()).job_get(uid)
        if row is None:
            return None
        job = self._job_dict(row)
        job["errors"] = job["errors"] or []  # one entry per failed attempt
        return job

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
        tags: dict[str, str] | None = None,
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
        db = await self.database()
        if tags:
            wanted = json.dumps(check_tags(tags), sort_keys=True)
            rows = await db.job_list_tagged(status, queue, job_name, limit, offset, wanted)
        else:
            rows = await db.job_list(status, queue, job_name, limit, offset)
        return [self._job_dict(r) for r in rows]

    async def delete_job(self, job_id: str) -> bool:
        """Delete a job that is not ``processing`` (True); a running one is kept (False)."""
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
        """Per queue: counts by status, ``oldest_queued_age``, ``paused``, ``paused_at``."""
        rows = await (await self.database()).queue_stats()
        return await flow.list_queues(self, [dict(r) for r in rows])

    async def list_workers(self) -> list[dict[str, Any]]:
        rows = await (await self.database()).worker_list(self.settings.heartbeat_timeout)
        return [dict(r) for r in rows]

    async def list_schedules(self) -> list[dict[str, Any]]:
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
        row = await (await self.database()).lock_holder(advisory_key(self.schema, "scheduler"))
        return None if row is None else dict(row)

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
        options = (concurrency, queues, run_once, shutdown_event, with_scheduler, handle_signals)
        await Worker(self, *options).run()

    # -- job control (API.md Part 2, "Job control"; the logic lives in soniq.control) ---------

    async def cancel_job(self, job_id: str, *, abort: bool = False) -> bool:
        """A queued job becomes ``cancelled`` (True); with ``abort=True`` a processing job is
        asked to stop and ends ``cancelled`` ("aborted") (True); otherwise False."""
        return await control.cancel_job(self, job_id, abort)

    async def wait(self, job_id: str, *, timeout: float | None = None) -> dict[str, Any]:
        """The job (as ``get_job``) once it is done, dead-lettered or cancelled; pushed over
        the instance's one LISTEN connection. ``TimeoutError`` after ``timeout`` seconds."""
        return await self._watchers.wait(job_id, timeout)

    def watch(self, job_id: str) -> AsyncIterator[dict[str, Any]]:
        """Yields the job at once and on every change of status or progress; ends after its
        terminal state."""
        return self._watchers.watch(job_id)

    # -- integrations: sync callers (soniq.sync) ----------------------------------------------

    @property
    def sync(self) -> SyncApp:
        """Blocking versions of the async methods, for code without an event loop."""
        sync = self.__dict__.get("_sync")
        if sync is None:
            from soniq.sync import SyncApp

            sync = self.__dict__.setdefault("_sync", SyncApp(self))
        return sync  # type: ignore[no-any-return]

    # -- operator reads for the dashboard and CLI (soniq/browse.py) -------------------------

    async def list_jobs_page(
        self,
        *,
        before: str | None = None,
        status: str | JobStatus | None = None,
        queue: str | None = None,
        job_name: str | None = None,
        tags: dict[str, str] | None = None,
        limit: int = 50,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """A keyset page of jobs, newest first, older than job id ``before`` (and carrying
        every pair of ``tags``); returns the jobs and the ``before`` of the next page (None on
        the last page)."""
        return await browse.page_jobs(
            self,
            before=before,
            status=status,
            queue=queue,
            job_name=job_name,
            tags=tags,
            limit=limit,
        )

    async def list_dead_letters_page(
        self, *, before: str | None = None, job_name: str | None = None, limit: int = 50
    ) -> tuple[list[dict[str, Any]], str | None]:
        """A keyset page of dead-lettered jobs, newest first, and the next page's cursor."""
        return await browse.page_dead_letters(self, before=before, job_name=job_name, limit=limit)

    async def job_counts_per_minute(self, minutes: int = 60) -> list[dict[str, Any]]:
        """Jobs succeeded (``finished``) and dead-lettered (``failed``) in each of the last
        ``minutes`` minutes, oldest first."""
        return await browse.counts_per_minute(self, minutes)

    async def list_running_jobs(self, limit: int = 200) -> list[dict[str, Any]]:
        """Jobs being run now, with the ``worker_id`` running each."""
        return await browse.running_jobs(self, limit)

    async def get_job_statuses(self, job_ids: list[str]) -> dict[str, dict[str, Any]]:
        """Job id -> ``status``, ``attempts``, ``finished_at``, in one query."""
        return await browse.job_statuses(self, job_ids)

    # -- bulk cancel (issue 18) ---------------------------------------------------------------

    async def cancel_jobs(
        self,
        *,
        queue: str | None = None,
        job_name: str | None = None,
        tags: dict[str, str] | None = None,
    ) -> int:
        """Cancel every queued or waiting job matching all the filters given (at least one;
        ``tags``: jobs carrying every given pair); returns how many."""
        check_cancel_filters(queue, job_name, tags)
        tags_json = None if tags is None else json.dumps(check_tags(tags), sort_keys=True)
        return await (await self.database()).job_cancel_matching(queue, job_name, tags_json)

    # -- continuations and workflows (soniq.workflows, docs/workflows.md) ----------------------

    async def continue_with(
        self, parent_id: str, target: Any, *, args: dict[str, Any] | None = None, **kwargs: Any
    ) -> str:
        """``enqueue(target, after=parent_id, ...)``: runs once the parent is done."""
        return await self.enqueue(target, args=args, after=parent_id, **kwargs)

    def workflow(self, name: str | None = None) -> workflows.Workflow:
        """A new, empty workflow: ``wf.add(...)`` steps, then ``await wf.enqueue()``."""
        return workflows.Workflow(self, name)

    async def get_workflow(self, workflow_id: str) -> dict[str, Any] | None:
        """The workflow with its status (derived from its steps) and its steps, or None."""
        return await workflows.get_workflow(self, workflow_id)

    async def cancel_workflow(self, workflow_id: str, *, abort: bool = False) -> int:
        """Cancel every waiting or queued step (``abort=True``: ask running ones to stop);
        returns how many steps this moved to ``cancelled``."""
        return await workflows.cancel_workflow(self, workflow_id, abort)

    async def list_workflows(
        self, *, status: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        """Workflows, newest first, with step counts (CLI ``workflows list``, dashboard)."""
        return await workflows.list_workflows(self, status=status, limit=limit)

    # -- flow control (issue 13) ---------------------------------------------------------------

    async def pause_queue(self, name: str) -> bool:
        """Stop every worker from starting jobs of queue ``name`` (within 1 s; running jobs
        finish, enqueueing still works). True if it was running, False if already paused."""
        return await flow.pause_queue(self, name)

    async def resume_queue(self, name: str) -> bool:
        """Let workers start jobs of queue ``name`` again. True if it was paused."""
        return await flow.resume_queue(self, name)
