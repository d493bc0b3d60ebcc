"""The worker: wait (notify | poll | stop) -> claim a batch -> run -> report.

One asyncio loop runs up to ``concurrency`` handlers at once. Outcomes of finished jobs wait
in a :class:`Reporter` and are written, through the guarded "still processing by me" update,
in the same statement that claims up to the free slots: one round trip per cycle. Side loops
keep a heartbeat, listen for NOTIFY, rescue silent workers' jobs and tend the job table.
Database faults are logged and retried with backoff; a claim whose answer was lost is
reconciled once the database is back, so no job is stranded.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import asyncpg
from ulid import ULID

from soniq import logs, maintenance
from soniq.db import init_connection
from soniq.errors import SETTINGS_INVALID, SoniqError, schema_missing
from soniq.jobs import JobContext, Snooze, Task, dump_json
from soniq.states import Decision, JobStatus, Kind, Outcome, decide

if TYPE_CHECKING:
    from soniq.app import Soniq
    from soniq.db import Database

log = logging.getLogger("soniq.worker")

DB_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncio.TimeoutError,
)
MAX_BACKOFF = 5.0
CANCEL_GRACE = 1.0  # seconds an async handler gets to honour cancellation
VACUUM_CHECK_SECONDS = 2.0
# The claim connection only runs soniq's hot statements, which must walk their indexes in
# order whatever the statistics say: on a table not yet analysed the planner guesses a few
# rows and would bitmap-scan and sort the whole backlog on every claim. Their plans are
# planned once per connection (generic): custom plans re-planned the report-and-claim
# statement on every cycle, which took about as long as running it.
CLAIM_PLANNER = {
    "enable_seqscan": "off",
    "enable_bitmapscan": "off",
    "enable_sort": "off",
    "plan_cache_mode": "force_generic_plan",
}


def _backoff(failures: int) -> float:
    return float(min(MAX_BACKOFF, 0.1 * 2 ** min(failures, 6)))


class _Job:
    """A claimed job while this worker holds it."""

    __slots__ = (
        "attempt",
        "created_at",
        "id",
        "job_name",
        "max_attempts",
        "queue",
        "row",
        "scheduled_at",
        "started",
    )

    def __init__(self, row: Any) -> None:
        self.row = row
        self.id: uuid.UUID = row["id"]
        self.job_name: str = row["job_name"]
        self.queue: str = row["queue"]
        self.attempt: int = row["attempts"]
        self.max_attempts: int = row["max_attempts"]
        self.scheduled_at = row["scheduled_at"]
        self.created_at = row["created_at"]
        self.started = time.monotonic()


class Signal:
    """A flag that wakes the claim loop when set.

    The claim loop waits for any of several conditions; waiting on one shared
    ``asyncio.Event`` costs no task per wait, where waiting on several events would.
    """

    __slots__ = ("_flag", "_wake")

    def __init__(self, wake: asyncio.Event) -> None:
        self._flag = False
        self._wake = wake

    def set(self) -> None:
        self._flag = True
        self._wake.set()

    def clear(self) -> None:
        self._flag = False

    def is_set(self) -> bool:
        return self._flag


class Reporter:
    """Outcomes waiting to be written, in the order they happened.

    The claim loop takes them and writes them in the same statement as its next claim (one
    round trip per cycle); when it has nothing to claim for, it writes them on their own.
    An outcome stays here until the database has taken it, so a write that fails (database
    restart, killed connection) is retried after reconnecting, never dropped.
    """

    def __init__(self, wake: asyncio.Event) -> None:
        self.done: list[tuple[uuid.UUID, str | None]] = []
        self.other: list[tuple[uuid.UUID, str]] = []
        self.requeue_now = False  # some outcome puts a job back with no delay
        self.pending = Signal(wake)

    def __len__(self) -> int:
        return len(self.done) + len(self.other)

    def ids(self) -> set[uuid.UUID]:
        return {i for i, _ in self.done} | {i for i, _ in self.other}

    def add_done(self, job_id: uuid.UUID, result_json: str | None) -> None:
        self.done.append((job_id, result_json))
        self.pending.set()

    def add_other(self, job_id: uuid.UUID, outcome_json: str, requeue_now: bool) -> None:
        self.other.append((job_id, outcome_json))
        self.requeue_now = self.requeue_now or requeue_now
        self.pending.set()

    def take(self) -> Batch:
        batch = Batch(self.done, self.other, self.requeue_now)
        self.done, self.other, self.requeue_now = [], [], False
        self.pending.clear()
        return batch

    def restore(self, batch: Batch) -> None:
        """Put back a batch whose write failed, ahead of anything newer."""
        self.done[:0] = batch.done
        self.other[:0] = batch.other
        self.requeue_now = self.requeue_now or batch.requeue_now
        if len(self):
            self.pending.set()


class Batch:
    """Outcomes taken for one write."""

    __slots__ = ("done", "other", "requeue_now")

    def __init__(
        self,
        done: list[tuple[uuid.UUID, str | None]],
        other: list[tuple[uuid.UUID, str]],
        requeue_now: bool,
    ) -> None:
        self.done = done
        self.other = other
        self.requeue_now = requeue_now

    def done_args(self) -> tuple[list[uuid.UUID], list[str | None]]:
        return [i for i, _ in self.done], [r for _, r in self.done]

    def other_args(self) -> list[str]:
        return [o for _, o in self.other]


EMPTY_BATCH = Batch([], [], False)
_SUCCESS_NONE = Outcome(Kind.SUCCESS)


class _Signals:
    """SIGTERM/SIGINT for every worker of this process that asked for them.

    One handler per signal serves them all, so several workers in one process (one per Soniq
    instance) all stop gracefully on the first signal and all return their jobs on the second.
    """

    def __init__(self) -> None:
        self.workers: set[Worker] = set()
        self.received = 0

    def add(self, worker: Worker) -> None:
        loop = asyncio.get_running_loop()
        if not self.workers:
            self.received = 0
            for signum in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.add_signal_handler(signum, self._handle, signum)
        self.workers.add(worker)

    def discard(self, worker: Worker) -> None:
        self.workers.discard(worker)
        if not self.workers:
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.remove_signal_handler(signum)

    def _handle(self, signum: int) -> None:
        self.received += 1
        name = signal.Signals(signum).name
        if self.received == 1:
            timeout = max(w.app.settings.shutdown_timeout for w in self.workers)
            log.info(
                "%s: finishing in-flight jobs (up to %ss); send again to stop at once",
                name,
                timeout,
            )
        else:
            log.warning("second %s: returning in-flight jobs now", name)
        for worker in self.workers:
            if self.received == 1:
                worker.stop.set()
            else:
                worker.force.set()
            worker.more_work.set()


_signals = _Signals()


class Worker:
    """Claims and runs jobs of ``app`` until stopped (or, with ``run_once``, until idle)."""

    def __init__(
        self,
        app: Soniq,
        *,
        concurrency: int | None = None,
        queues: Sequence[str] | str | None = None,
        run_once: bool = False,
        shutdown_event: asyncio.Event | None = None,
        with_scheduler: bool = False,
        handle_signals: bool = False,
    ) -> None:
        self.app = app
        s = app.settings
        self.concurrency = concurrency if concurrency is not None else s.concurrency
        if self.concurrency < 1:
            raise SoniqError(SETTINGS_INVALID, "concurrency must be at least 1")
        if isinstance(queues, str):
            queues = [q.strip() for q in queues.split(",") if q.strip()]
        self.queues: list[str] | None = list(queues) if queues else (s.queues or None)
        self.run_once = run_once
        self.poll_interval = s.poll_interval
        self.stop = shutdown_event if shutdown_event is not None else asyncio.Event()
        self.force = asyncio.Event()
        self.with_scheduler = with_scheduler
        self.handle_signals = handle_signals
        host = socket.gethostname()
        self.hostname = host
        self.worker_id = f"{host}:{os.getpid()}:{str(ULID())[-10:].lower()}"
        self.running: dict[uuid.UUID, asyncio.Task[None]] = {}
        # Sync handlers whose thread outlived their timeout: outcome written when it ends.
        self.lingering: dict[uuid.UUID, asyncio.Future[Any]] = {}
        self._wake = asyncio.Event()  # set by every Signal below, and by stop
        self.more_work = Signal(self._wake)
        self.slot_free = Signal(self._wake)
        self.reporter = Reporter(self._wake)
        self.executor: ThreadPoolExecutor | None = None
        self._db: Database | None = None
        self._needs_reconcile = False
        self._conn: Any = None
        self._side: list[asyncio.Task[None]] = []

    @property
    def db(self) -> Database:
        assert self._db is not None
        return self._db

    # -- lifecycle ---------------------------------------------------------------------------

    async def run(self) -> None:
        app = self.app
        self._db = await app.database()
        self.executor = ThreadPoolExecutor(
            max_workers=app.settings.sync_handler_pool_size, thread_name_prefix="soniq-sync"
        )
        if self.handle_signals:
            _signals.add(self)
        try:
            await self._retry_db("register worker", self._register)
        except BaseException:
            _signals.discard(self)
            self.executor.shutdown(wait=False)
            raise
        log.info(
            "worker %s started: concurrency=%d queues=%s tasks=%d",
            self.worker_id,
            self.concurrency,
            ",".join(self.queues) if self.queues else "all",
            len(app.tasks),
        )
        self._side = [
            asyncio.create_task(self._heartbeat_loop(), name="soniq-heartbeat"),
            asyncio.create_task(self._watch_stop(), name="soniq-stop"),
        ]
        if not self.run_once:
            self._side.append(asyncio.create_task(self._listen_loop(), name="soniq-listen"))
            self._side.append(asyncio.create_task(self._maintenance_loop(), name="soniq-rescue"))
            if self.with_scheduler:
                from soniq.scheduler import Scheduler

                self._side.append(
                    asyncio.create_task(Scheduler(app).run(self.stop), name="soniq-scheduler")
                )
        try:
            await self._claim_loop()
        finally:
            await self._shutdown()
            _signals.discard(self)

    async def _register_on(self, conn: Any) -> None:
        await self.db.worker_register(
            conn, self.worker_id, self.hostname, os.getpid(), self.queues, self.concurrency
        )

    async def _register(self) -> None:
        try:
            async with self.db.acquire() as conn:
                await self._register_on(conn)
        except (asyncpg.UndefinedTableError, asyncpg.InvalidSchemaNameError):
            raise schema_missing(self.app.schema) from None

    async def _retry_db(self, what: str, fn: Callable[[], Awaitable[None]]) -> None:
        failures = 0
        while True:
            try:
                await fn()
                return
            except DB_ERRORS as exc:
                failures += 1
                if self.force.is_set() or (self.stop.is_set() and failures > 3):
                    raise
                delay = _backoff(failures)
                log.warning("%s failed (%s); retrying in %.1fs", what, exc, delay)
                await self._sleep(delay)

    async def _sleep(self, seconds: float) -> None:
        """Sleep, but wake early on stop."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.stop.wait(), seconds)

    # -- claim loop --------------------------------------------------------------------------

    async def _claim_loop(self) -> None:
        poll = self.app.settings.poll_interval
        failures = 0
        reporter = self.reporter
        while not self.stop.is_set():
            self.slot_free.clear()
            free = self.concurrency - len(self.running)
            if free <= 0:
                # a thread that outlived its timeout ended meanwhile
                if len(reporter) and not await self._write_outcomes():
                    await self._sleep(_backoff(3))
                await self._wait_any(self.slot_free, reporter.pending, timeout=poll)
                continue
            self.more_work.clear()
            batch = EMPTY_BATCH
            try:
                if self._needs_reconcile:
                    await self._reconcile()
                batch = reporter.take()
                claimed = await self._claim(free, batch)
                failures = 0
            except Exception as exc:  # never let a fault end the loop
                reporter.restore(batch)
                failures += 1
                self._needs_reconcile = True
                await self._drop_connection()
                delay = _backoff(failures)
                log.warning(
                    "claim failed (%s); retrying in %.1fs",
                    exc,
                    delay,
                    exc_info=not isinstance(exc, DB_ERRORS),
                )
                await self._sleep(delay)
                continue
            if batch.requeue_now:
                self.more_work.set()
            if claimed == free:
                continue  # there may be more: claim again while slots are free
            if (
                self.run_once
                and claimed == 0
                and not self.running
                and not self.lingering
                and not len(reporter)
                and not self.more_work.is_set()
            ):
                return
            await self._wait_any(self.more_work, self.slot_free, reporter.pending, timeout=poll)

    async def _wait_any(self, *signals: Signal, timeout: float) -> None:
        """Wait until stop or one of ``signals`` is set, or ``timeout`` passes."""
        if self.stop.is_set() or any(s.is_set() for s in signals):
            return  # without asking for the loop (a getpid() system call on Python 3.11)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        wake = self._wake
        while not (self.stop.is_set() or any(s.is_set() for s in signals)):
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            wake.clear()
            timer = loop.call_later(remaining, wake.set)
            try:
                await wake.wait()
            finally:
                timer.cancel()

    async def _watch_stop(self) -> None:
        """Wake the claim loop when ``stop`` (which callers may set) is set."""
        await self.stop.wait()
        self._wake.set()

    async def _connection(self) -> Any:
        """The claim loop's own connection (claims and outcomes), reconnected when lost.

        Its commits do not wait for the WAL flush unless ``worker_synchronous_commit`` is on:
        a database crash can then forget the last few milliseconds of claims and outcomes,
        which puts those jobs back to run again (at-least-once), never loses one.
        """
        conn = self._conn
        if conn is None or conn.is_closed():
            self._conn = None
            sync = "on" if self.app.settings.worker_synchronous_commit else "off"
            try:
                conn = await self.app.connect(synchronous_commit=sync, **CLAIM_PLANNER)
            except SoniqError as exc:  # unreachable: retried like any lost connection
                raise ConnectionError(exc.message) from exc
            await init_connection(conn)
            self._conn = conn
        return conn

    async def _drop_connection(self) -> None:
        """Abandon the claim connection after a fault: its protocol state cannot be trusted."""
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.terminate()

    async def _close_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), 5.0)

    async def _claim(self, limit: int, batch: Batch) -> int:
        """Write ``batch`` and claim up to ``limit`` jobs, in one statement."""
        done_ids, results = batch.done_args()
        conn = await self._connection()
        rows = await self.db.job_report_and_claim(
            conn, self.worker_id, limit, self.queues, done_ids, results, batch.other_args()
        )
        if not rows:
            return 0
        if len(rows) > 1:
            rows = sorted(rows, key=lambda r: (r["priority"], r["scheduled_at"], r["id"]))
        observers = self.app.observers
        for row in rows:
            job = _Job(row)
            for o in observers:
                o.job_started(job.queue, job.job_name)
            self.running[job.id] = asyncio.create_task(self._run_job(job))
        self._report_in_flight()
        return len(rows)

    async def _write_outcomes(self) -> bool:
        """Write pending outcomes on their own; False if the database refused."""
        batch = self.reporter.take()
        if not batch.done and not batch.other:
            return True
        try:
            conn = await self._connection()
            ids, results = batch.done_args()
            await self.db.job_report(conn, self.worker_id, ids, results, batch.other_args())
        except Exception as exc:
            self.reporter.restore(batch)
            self._needs_reconcile = True
            await self._drop_connection()
            log.warning(
                "could not record %d outcome(s): %s",
                len(self.reporter),
                exc,
                exc_info=not isinstance(exc, DB_ERRORS),
            )
            return False
        if batch.requeue_now:
            self.more_work.set()
        return True

    async def _reconcile(self) -> None:
        """After a fault: jobs the database says we hold but we do not run go back."""
        known = set(self.running) | set(self.lingering) | self.reporter.ids()
        conn = await self._connection()
        rows = await self.db.job_return_orphans(conn, self.worker_id, list(known))
        if not await self.db.worker_heartbeat(conn, self.worker_id, len(self.running)):
            await self._register_on(conn)
        self._needs_reconcile = False
        if rows:
            log.warning("returned %d job(s) whose claim was cut off by a fault", len(rows))

    def _report_in_flight(self) -> None:
        for o in self.app.observers:
            o.worker_in_flight(self.worker_id, len(self.running))

    # -- running one job ---------------------------------------------------------------------

    async def _run_job(self, job: _Job) -> None:
        outcome: Outcome | None = None
        task = self.app.tasks.get(job.job_name)
        # each job runs in its own asyncio task, so this context ends with it
        logs.set_current_job(str(job.id), job.job_name, job.queue, job.attempt)
        try:
            if task is None:
                outcome = Outcome(
                    Kind.NOT_FOUND,
                    error=f"task {job.job_name!r} is not registered in worker {self.worker_id} "
                    "(import its module via SONIQ_JOBS_MODULES)",
                )
            else:
                outcome = await self._execute(task, job)
        except asyncio.CancelledError:
            outcome = None  # shutdown: the job is returned to the queue
            raise
        except _Lingering:
            outcome = None  # recorded when its thread ends
        except BaseException as exc:  # a bug here must not lose the job
            log.exception("internal error running job %s", job.id)
            outcome = Outcome(Kind.ERROR, error=f"internal error: {exc!r}")
        finally:
            self.running.pop(job.id, None)
            self.slot_free.set()
            if outcome is not None:
                self._record(task, job, outcome)
            self._report_in_flight()

    def _context(self, job: _Job) -> JobContext:
        return JobContext(
            job_id=str(job.id),
            job_name=job.job_name,
            queue=job.queue,
            attempt=job.attempt,
            max_attempts=job.max_attempts,
            worker_id=self.worker_id,
            scheduled_at=job.scheduled_at,
            created_at=job.created_at,
        )

    async def _execute(self, task: Task[Any, Any], job: _Job) -> Outcome:
        app = self.app
        kwargs: dict[str, Any] = job.row["args"]
        try:
            if task.validate is not None:
                kwargs = task.check_args(kwargs)
        except Exception as exc:
            return Outcome(Kind.ERROR, error=str(exc))
        # the context is built only when something takes it (most handlers do not)
        ctx = (
            self._context(job)
            if task.context_params or app.before_job_hooks or app.after_job_hooks or app.middlewares
            else None
        )
        for name in task.context_params:
            kwargs[name] = ctx
        for hook in app.before_job_hooks:
            await self._hook(hook, ctx)

        timeout = task.timeout if task.timeout is not None else app.settings.job_timeout
        if task.is_async and timeout is None and ctx is None:
            # the plain case, without the wrappers below: the handler's own coroutine
            try:
                value = await task.fn(**kwargs)
            except asyncio.CancelledError:
                raise
            except BaseException as exc:  # SystemExit too: it must not stop the worker
                outcome = self._outcome(False, exc)
            else:
                outcome = _SUCCESS_NONE if value is None else self._outcome(True, value)
        elif task.is_async:
            call: Callable[[], Awaitable[Any]] = lambda: task.fn(**kwargs)  # noqa: E731
            if app.middlewares:
                assert ctx is not None
                call = self._wrap(ctx, call)
            outcome = await self._run_async(call, timeout)
        else:
            outcome = await self._run_sync(task, job, ctx, kwargs, timeout)

        if outcome.kind is Kind.SUCCESS:
            for hook in app.after_job_hooks:
                await self._hook(hook, ctx, outcome.result)
        elif outcome.kind in (Kind.ERROR, Kind.TIMEOUT) and app.on_error_hooks:
            exc_obj = outcome.result if isinstance(outcome.result, BaseException) else None
            ctx = ctx if ctx is not None else self._context(job)
            for hook in app.on_error_hooks:
                await self._hook(hook, ctx, exc_obj or RuntimeError(outcome.error))
        return outcome

    def _wrap(
        self, ctx: JobContext, inner: Callable[[], Awaitable[Any]]
    ) -> Callable[[], Awaitable[Any]]:
        call = inner
        for mw in reversed(self.app.middlewares):
            call = (lambda m, nxt: lambda: m(ctx, nxt))(mw, call)
        return call

    async def _hook(self, hook: Callable[..., Awaitable[Any]], *args: Any) -> None:
        try:
            await hook(*args)
        except Exception:
            log.exception("hook %r failed", getattr(hook, "__name__", hook))

    async def _run_async(
        self, call: Callable[[], Awaitable[Any]], timeout: float | None
    ) -> Outcome:
        async def guarded() -> tuple[bool, Any]:
            # Catch BaseException inside the task: SystemExit / KeyboardInterrupt raised by a
            # handler would otherwise escape through the event loop and stop the worker.
            try:
                return True, await call()
            except asyncio.CancelledError:
                raise
            except BaseException as exc:
                return False, exc

        if timeout is None:
            ok, value = await guarded()
        else:
            inner = asyncio.ensure_future(guarded())
            done, _ = await asyncio.wait({inner}, timeout=timeout)
            if not done:
                inner.cancel()
                await asyncio.wait({inner}, timeout=CANCEL_GRACE)
                return Outcome(Kind.TIMEOUT, error=f"timed out after {timeout}s")
            ok, value = inner.result()
        return self._outcome(ok, value)

    async def _run_sync(
        self,
        task: Task[Any, Any],
        job: _Job,
        ctx: JobContext | None,
        kwargs: dict[str, Any],
        timeout: float | None,
    ) -> Outcome:
        gate = threading.Lock()
        state = {"started": False, "abandoned": False}

        def call() -> tuple[bool, Any]:
            with gate:
                if state["abandoned"]:
                    return False, None
                state["started"] = True
            try:
                return True, task.fn(**kwargs)
            except BaseException as exc:
                return False, exc

        loop = asyncio.get_running_loop()
        if self.app.middlewares:
            # middleware is async: it wraps an awaitable that runs the handler in a thread
            threads: list[asyncio.Future[tuple[bool, Any]]] = []

            async def in_thread() -> Any:
                thread = loop.run_in_executor(self.executor, contextvars.copy_context().run, call)
                threads.append(thread)
                ok, value = await asyncio.shield(thread)
                if not ok:
                    raise value
                return value

            assert ctx is not None  # built whenever there is middleware
            outcome = await self._run_async(self._wrap(ctx, in_thread), timeout)
            if outcome.kind is not Kind.TIMEOUT or not threads:
                return outcome
            fut = threads[0]
        else:
            fut = loop.run_in_executor(self.executor, contextvars.copy_context().run, call)
            if timeout is None:
                ok, value = await fut
                return self._outcome(ok, value)
            done, _ = await asyncio.wait({fut}, timeout=timeout)
            if done:
                ok, value = fut.result()
                return self._outcome(ok, value)
        with gate:
            never_started = not state["started"]
            state["abandoned"] = never_started
        if never_started or fut.done():  # never ran (all threads busy), or already over
            return Outcome(Kind.TIMEOUT, error=f"timed out after {timeout}s")
        # The thread cannot be killed: free the slot, and record the failure only when the
        # thread ends, so the job is not run again while it still runs.
        self.lingering[job.id] = fut
        outcome = Outcome(Kind.TIMEOUT, error=f"timed out after {timeout}s (thread still running)")
        fut.add_done_callback(lambda _f: self._lingering_done(task, job, outcome))
        raise _Lingering

    def _lingering_done(self, task: Task[Any, Any], job: _Job, outcome: Outcome) -> None:
        if self.lingering.pop(job.id, None) is not None:
            self._record(task, job, outcome)

    def _outcome(self, ok: bool, value: Any) -> Outcome:
        if not ok:
            exc: BaseException = value
            text = f"{type(exc).__name__}: {exc}"
            return Outcome(Kind.ERROR, error=text, result=exc)
        if isinstance(value, Snooze):
            seconds = min(float(value.seconds), self.app.settings.snooze_max_seconds)
            return Outcome(Kind.SNOOZE, snooze_seconds=seconds, error=None)
        return Outcome(Kind.SUCCESS, result=value)

    # -- recording outcomes ------------------------------------------------------------------

    def _record(self, task: Task[Any, Any] | None, job: _Job, outcome: Outcome) -> None:
        duration = time.monotonic() - job.started
        if outcome.kind is Kind.SUCCESS:
            if outcome.result is None:
                result_json: str | None = None
            else:
                try:
                    result_json = dump_json(outcome.result, f"the return value of {job.job_name}")
                except Exception as exc:
                    outcome = Outcome(Kind.ERROR, error=str(exc))
                    return self._record(task, job, outcome)
            self.reporter.add_done(job.id, result_json)
            self._observe(job, "succeeded", duration)
            return
        delay = 0.0
        if outcome.kind in (Kind.ERROR, Kind.TIMEOUT) and task is not None:
            delay = task.retry.delay_for(job.attempt)
        decision: Decision = decide(outcome, job.attempt, job.max_attempts, delay)
        payload = {
            "id": str(job.id),
            "status": decision.status.value,
            "delay": decision.delay,
            "refund": decision.refund_attempt,
            "error": outcome.error,
            "reason": decision.reason.value if decision.reason else None,
        }
        if outcome.kind is Kind.SNOOZE:
            payload["error"] = None
        self.reporter.add_other(
            job.id,
            json.dumps(payload),
            decision.status is JobStatus.QUEUED and decision.delay <= 0,
        )
        if decision.status is JobStatus.QUEUED and 0 < decision.delay < self.poll_interval:
            # due again before the next poll: wake up for it (a little after, so the outcome
            # has been written and its due time has passed)
            asyncio.get_running_loop().call_later(decision.delay + 0.05, self.more_work.set)
        if decision.status is JobStatus.DEAD_LETTER:
            log.error(
                "job %s (%s) dead-lettered (%s): %s",
                job.id,
                job.job_name,
                decision.reason,
                outcome.error,
            )
            self._observe(job, "dead_lettered", duration)
        elif outcome.kind is Kind.SNOOZE:
            self._observe(job, "snoozed", duration)
        else:
            log.warning(
                "job %s (%s) attempt %d/%d failed: %s; retry in %.1fs",
                job.id,
                job.job_name,
                job.attempt,
                job.max_attempts,
                outcome.error,
                decision.delay,
            )
            self._observe(job, "retried", duration)

    def _observe(self, job: _Job, outcome: str, duration: float) -> None:
        for o in self.app.observers:
            o.job_ended(job.queue, job.job_name, outcome, duration)

    # -- side loops --------------------------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        """Record that this worker is alive, on a connection of its own: handlers (or
        enqueues) holding every pool connection must not make a live worker look dead."""
        interval = self.app.settings.heartbeat_interval
        conn: Any = None
        try:
            while True:
                await asyncio.sleep(interval)
                try:
                    if conn is None or conn.is_closed():
                        conn = await self.app.connect()
                    alive = await self.db.worker_heartbeat(conn, self.worker_id, len(self.running))
                    if not alive:
                        log.warning(
                            "worker %s was declared dead (silent too long); registering again",
                            self.worker_id,
                        )
                        await self._register_on(conn)
                except Exception as exc:  # a dead heartbeat loop would get this worker rescued
                    log.warning(
                        "heartbeat failed: %s", exc, exc_info=not isinstance(exc, DB_ERRORS)
                    )
                    if conn is not None:
                        with contextlib.suppress(Exception):
                            conn.terminate()
                    conn = None
        finally:
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.terminate()

    async def _maintenance_loop(self) -> None:
        """Rescue every ``cleanup_interval``; a VACUUM check every few seconds; prune now and
        then. Each pass is guarded by an advisory lock, so one process does it at a time."""
        interval = self.app.settings.cleanup_interval
        tick = min(interval, VACUUM_CHECK_SECONDS)
        now = time.monotonic()
        last_rescue = last_prune = now
        first = True
        while True:
            if not first:  # the first pass runs at once: a fresh table gets its statistics
                await asyncio.sleep(tick)
            now = time.monotonic()
            try:
                if not first and now - last_rescue >= interval - 1e-3:
                    last_rescue = now
                    if await maintenance.rescue_stale(self.app):
                        self.more_work.set()
                first = False
                await maintenance.vacuum_if_needed(self.app)
                if now - last_prune > max(60.0, interval * 10):
                    last_prune = now
                    await maintenance.prune(self.app)
            except Exception as exc:
                log.warning("maintenance failed: %s", exc, exc_info=not isinstance(exc, DB_ERRORS))

    async def _listen_loop(self) -> None:
        """Hold a LISTEN on a direct connection; on any loss, reconnect and poll once."""
        channel = self.db.channel
        queues = set(self.queues) if self.queues else None
        failures = 0

        def on_notify(_conn: Any, _pid: int, _channel: str, payload: str) -> None:
            if queues is None or payload in queues:
                self.more_work.set()

        while True:
            lost = asyncio.Event()
            conn = None
            try:
                conn = await self.app.connect()
                conn.add_termination_listener(_setter(lost))
                await conn.add_listener(channel, on_notify)
                failures = 0
                self.more_work.set()  # anything that arrived while we were not listening
                while not lost.is_set():
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(lost.wait(), 10.0)
                    if not lost.is_set():
                        await self.db.ping(conn, 5.0)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                log.warning("LISTEN connection lost (%s); reconnecting", exc)
            finally:
                if conn is not None and not conn.is_closed():
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(conn.close(), 2.0)
            await asyncio.sleep(_backoff(failures))

    # -- shutdown ----------------------------------------------------------------------------

    async def _shutdown(self) -> None:
        timeout = self.app.settings.shutdown_timeout
        if self.running:
            log.info("waiting up to %ss for %d in-flight job(s)", timeout, len(self.running))
            tasks = list(self.running.values())
            waiter = asyncio.ensure_future(asyncio.wait(tasks, timeout=timeout))
            forced = asyncio.ensure_future(self.force.wait())
            await asyncio.wait({waiter, forced}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            forced.cancel()
        leftover = list(self.running.keys()) + list(self.lingering.keys())
        for t in list(self.running.values()):
            t.cancel()
        if self.running:
            await asyncio.wait(list(self.running.values()), timeout=CANCEL_GRACE)
        deadline = time.monotonic() + 10.0
        while len(self.reporter) and not await self._write_outcomes():
            if time.monotonic() > deadline:
                log.error(
                    "gave up recording %d outcome(s); rescue will return those jobs",
                    len(self.reporter),
                )
                break
            await asyncio.sleep(0.5)
        for t in self._side:
            t.cancel()
        await asyncio.gather(*self._side, return_exceptions=True)
        try:
            async with self.db.acquire() as conn:
                if leftover:
                    back = await self.db.job_return_many(conn, self.worker_id, leftover)
                    log.info("returned %d unfinished job(s) to the queue", len(back))
                await self.db.worker_stop(conn, self.worker_id)
        except DB_ERRORS as exc:
            log.warning("could not mark worker stopped (%s); rescue will return its jobs", exc)
        await self._close_connection()
        if self.executor is not None:
            self.executor.shutdown(wait=False, cancel_futures=True)
        log.info("worker %s stopped", self.worker_id)


def _setter(event: asyncio.Event) -> Callable[[Any], None]:
    return lambda _conn: event.set()


class _Lingering(Exception):
    """Raised out of a job whose sync thread outlived its timeout (outcome recorded later)."""
