"""The worker: wait (notify | poll | stop) -> report and claim a batch -> spawn -> shut down.

One asyncio loop runs up to ``concurrency`` jobs at once (each through ``runner``). Outcomes
wait in the ``outcomes.Reporter`` and are written, through the guarded "still processing by
me" update, in the same statement that claims up to the free slots: one round trip per
cycle. Beside the loop: a heartbeat on its own connection, the instance's notifier for
wake-ups, and the maintenance loop. Database faults are logged and retried with backoff; a
claim whose answer was lost is reconciled once the database is back, so no job is stranded.
The path of a job through these modules is in docs/internals.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import asyncpg
from ulid import ULID

from soniq import limits, logs
from soniq.aio import retry_delay, wait_event
from soniq.connection import application_name
from soniq.control import WorkerControl
from soniq.db import init_connection
from soniq.errors import DB_ERRORS, SETTINGS_INVALID, SoniqError, schema_missing
from soniq.flow import QUEUES_CHANGED, PausedSet
from soniq.heartbeat import Heartbeat
from soniq.jobs import Task
from soniq.outage import Outage, is_outage
from soniq.outcomes import EMPTY_BATCH, Batch, Reporter
from soniq.runner import CANCEL_GRACE, ClaimedJob, Runner
from soniq.scheduler import Scheduler
from soniq.states import JobStatus, Kind, Outcome
from soniq.unix_signals import shutdown_signals
from soniq.wakeup import WakeFlag, wait_any

if TYPE_CHECKING:
    from soniq.app import Soniq
    from soniq.db import Database
    from soniq.notifier import Subscription

log = logging.getLogger("soniq.worker")

# The claim connection only runs soniq's hot statements, which must walk their indexes in
# order whatever the statistics say: on a table not yet analysed the planner guesses a few
# rows and would bitmap-scan and sort the whole backlog on every claim. Their plans are
# planned once per connection (generic): custom plans re-planned the report-and-claim
# statement on every cycle, which took about as long as running it (docs/internals.md).
# No JIT: on PostgreSQL 13-17 the settings above add disable_cost (1e10) to plans with a node
# that has no alternative (the limited claim's sort of counter rows, the webhook trigger's
# sort of its transition table), far over jit_above_cost, and a server with LLVM then
# compiled every claim for 0.3-1 s (tests/db/test_claim_jit.py).
CLAIM_PLANNER = {
    "enable_seqscan": "off",
    "enable_bitmapscan": "off",
    "enable_sort": "off",
    "plan_cache_mode": "force_generic_plan",
    "jit": "off",
    # the claim of simple lanes counts running jobs in a statement that starts after it took
    # their locks: it needs each statement's own snapshot (soniq/limits.py)
    "default_transaction_isolation": "read committed",
}


class Worker:
    """Claims and runs jobs of ``app`` until stopped (or, with ``run_once``, until idle)."""

    def __init__(
        self,
        app: Soniq,
        concurrency: int | None,
        queues: Sequence[str] | str | None,
        run_once: bool,
        shutdown_event: asyncio.Event | None,
        with_scheduler: bool,
        handle_signals: bool,
    ) -> None:
        """The options of ``Soniq.run_worker``, in its order; it gives their defaults."""
        self.app = app
        s = app.settings
        self.concurrency = concurrency if concurrency is not None else s.concurrency
        if self.concurrency < 1:
            raise SoniqError(SETTINGS_INVALID, "concurrency must be at least 1")
        if isinstance(queues, str):
            queues = [q.strip() for q in queues.split(",") if q.strip()]
        self.queues: list[str] | None = list(queues) if queues else (s.queues or None)
        self.run_once = run_once
        self.stop = shutdown_event if shutdown_event is not None else asyncio.Event()
        self.force = asyncio.Event()
        self.with_scheduler = with_scheduler
        self.handle_signals = handle_signals
        host = socket.gethostname()
        self.hostname = host
        self.worker_id = f"{host}:{os.getpid()}:{str(ULID())[-10:].lower()}"
        self.running: dict[uuid.UUID, asyncio.Task[None]] = {}
        self._wake = asyncio.Event()  # set by every WakeFlag below, and by stop
        self.more_work = WakeFlag(self._wake)
        self.slot_free = WakeFlag(self._wake)
        self.reporter = Reporter(self._wake, app.observers)
        self.outage = Outage(f"worker {self.worker_id}", log)
        self.executor: ThreadPoolExecutor | None = None
        self.runner: Runner | None = None
        self._db: Database | None = None
        self._needs_reconcile = False
        self._conn: Any = None
        self._side: list[asyncio.Task[None]] = []
        self._wakeups: Subscription | None = None
        self.control: WorkerControl
        self.paused = PausedSet()  # flow control: queues left out of the claim
        # flow control: the limits and windows of the tasks this worker runs
        self.gates = limits.WorkerGates(app.registry.tasks)
        self._limits_synced = False
        self._rate_room_at: float | None = None  # loop time when a full rate limit has room

    @property
    def db(self) -> Database:
        assert self._db is not None
        return self._db

    @property
    def lingering(self) -> dict[uuid.UUID, asyncio.Future[Any]]:
        """Jobs whose sync thread outlived its timeout (outcome recorded when it ends)."""
        return self.runner.lingering if self.runner is not None else {}

    # -- what a signal asks (unix_signals.Stoppable) -------------------------------------------

    @property
    def shutdown_timeout(self) -> float:
        return self.app.settings.shutdown_timeout

    def stop_gracefully(self) -> None:
        self.stop.set()
        self.more_work.set()

    def stop_now(self) -> None:
        self.force.set()
        self.more_work.set()

    # -- lifecycle ---------------------------------------------------------------------------

    async def run(self) -> None:
        app = self.app
        self._db = await app.database()
        self.executor = ThreadPoolExecutor(
            max_workers=app.settings.sync_handler_pool_size, thread_name_prefix="soniq-sync"
        )
        self.runner = Runner(
            app.registry, app.settings, self.worker_id, self.executor, self._record
        )
        self.control = WorkerControl(self.db, self.worker_id, self._abort)
        self.runner.control = self.control
        if self.handle_signals:
            shutdown_signals.add(self)
        try:
            await self._retry_db("register worker", self._register)
        except BaseException:
            shutdown_signals.discard(self)
            self.executor.shutdown(wait=False)
            raise
        log.info(
            "worker %s started: concurrency=%d queues=%s tasks=%d",
            self.worker_id,
            self.concurrency,
            ",".join(self.queues) if self.queues else "all",
            len(app.tasks),
        )
        heartbeat = Heartbeat(
            app,
            self.worker_id,
            lambda: len(self.running),
            self._register_on,
            maintain=not self.run_once,
            on_rescued=self.more_work.set,
            after=self._after_beat,
        )
        self._side = [
            asyncio.create_task(heartbeat.run(), name="soniq-heartbeat"),
            asyncio.create_task(self._watch_stop(), name="soniq-stop"),
        ]
        if not self.run_once:
            queues = set(self.queues) if self.queues else None

            def on_notify(payload: str) -> None:  # the payload is the job's queue
                if payload == QUEUES_CHANGED:  # a queue was paused or resumed
                    self.paused.stale = True
                    self.more_work.set()
                elif payload[:1] == "!":  # job control (soniq.control), never a queue name
                    self.control.on_message(payload)
                elif queues is None or payload in queues:
                    self.more_work.set()

            def on_reconnect() -> None:  # NOTIFYs may have been missed meanwhile
                self.paused.stale = True
                self.more_work.set()

            self._wakeups = app.notifier.subscribe(self.db.channel, on_notify, on_reconnect)
            if self.with_scheduler:
                scheduler = Scheduler(app, maintain=False)  # this worker already maintains
                self._side.append(
                    asyncio.create_task(scheduler.run(self.stop), name="soniq-scheduler")
                )
        try:
            await self._claim_loop()
        finally:
            await self._shutdown()
            shutdown_signals.discard(self)

    async def _register_on(self, conn: Any) -> None:
        await self.db.worker_register(
            conn, self.worker_id, self.hostname, os.getpid(), self.queues, self.concurrency
        )

    async def _register(self) -> None:
        """Register on the claim connection (the pool is for handlers; the worker's own
        statements use its own connections)."""
        try:
            await self._register_on(await self._connection())
        except (asyncpg.UndefinedTableError, asyncpg.InvalidSchemaNameError):
            raise schema_missing(self.app.schema) from None
        except DB_ERRORS:
            await self._drop_connection()
            raise

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
                delay = retry_delay(failures)
                self.outage.failed(exc, retry_delay(99))
                log.debug("%s failed (%s); retrying in %.1fs", what, exc, delay)
                await self._sleep(delay)

    async def _sleep(self, seconds: float) -> None:
        """Sleep, but wake early on stop."""
        await wait_event(self.stop, seconds)

    async def _watch_stop(self) -> None:
        """Wake the claim loop when ``stop`` (which callers may set) is set."""
        await self.stop.wait()
        self._wake.set()

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
                    await self._sleep(retry_delay(3))
                await self._wait(self.slot_free, reporter.pending, timeout=poll)
                continue
            self.more_work.clear()
            batch = EMPTY_BATCH
            try:
                if self._needs_reconcile:
                    await self._reconcile()
                batch = reporter.take()
                claimed = await self._claim(free, batch)
                failures = 0
                self.outage.ok()
            except Exception as exc:  # never let a fault end the loop
                reporter.restore(batch)
                failures += 1
                self._needs_reconcile = True
                await self._drop_connection()
                delay = retry_delay(failures)
                if is_outage(exc):
                    self.outage.failed(exc, retry_delay(99))
                else:
                    log.warning("claim failed (%s); retrying in %.1fs", exc, delay, exc_info=True)
                await self._sleep(delay)
                continue
            if batch.requeue_now or (self.run_once and len(batch)):
                # run_once: outcomes just recorded may have released waiting children
                # (workflows), which this claim could not see: look once more
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
            await self._wait(
                self.more_work, self.slot_free, reporter.pending, timeout=self._idle_timeout(poll)
            )

    def _idle_timeout(self, poll: float) -> float:
        """How long to wait for a wake-up: the poll, or less when a closed execution window
        opens or a full rate limit has room again before it (no NOTIFY tells of those)."""
        if not self.gates:
            return poll
        timeout = poll
        opens = self.gates.until_a_window_opens()
        if opens is not None:
            timeout = min(timeout, opens + 0.01)
        if self._rate_room_at is not None:
            timeout = min(timeout, self._rate_room_at - asyncio.get_running_loop().time())
        return max(timeout, 0.001)

    async def _wait(self, *flags: WakeFlag, timeout: float) -> None:
        await wait_any(self._wake, self.stop, flags, timeout)

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
                conn = await self.app.connect(
                    application_name=application_name(self.app.schema, "claim"),
                    synchronous_commit=sync,
                    **CLAIM_PLANNER,
                )
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
        conn = await self._connection()
        if self.run_once:
            self.paused.stale = True  # no notifier: read the paused set every claim
        await self.paused.refresh(self.db, conn)
        queues, paused = self.paused.claim_queues(self.queues)
        if queues == []:  # every queue of this worker is paused: outcomes only
            if len(batch):
                await self.db.job_report(conn, self.worker_id, batch)
            return 0
        gates = self.gates
        if not self._limits_synced:  # this worker's decorators set each limit's max
            await self.db.limit_sync(conn, gates.sync_scopes, gates.sync_maxes, gates.sync_windows)
            await self.db.job_unlimit_stale(conn, gates.stale)
            self._limits_synced = True
        if gates:
            lanes = gates.open_lanes()
            ring, after = gates.ring(lanes)
            rows = await self.db.job_report_and_claim_gated(
                conn, self.worker_id, limit, batch, lanes, queues, paused, ring, after
            )
            gates.served(rows)
            self._rate_room_at = None
            if len(rows) < limit and gates.rate_scopes:  # held by a full rate limit?
                wait = await self.db.gate_next_free(conn, gates.rate_scopes)
                if wait is not None:
                    self._rate_room_at = asyncio.get_running_loop().time() + wait + 0.005
        else:
            rows = await self.db.job_report_and_claim(
                conn, self.worker_id, limit, queues, batch, paused
            )
        if not rows:
            return 0
        if len(rows) > 1:
            rows = sorted(rows, key=lambda r: (r["priority"], r["scheduled_at"], r["id"]))
        observers = self.app.observers
        for row in rows:
            if row["status"] == "cancelled":  # expired before it started: never run
                continue
            job = ClaimedJob(row)
            for o in observers:
                o.job_started(job.queue, job.job_name)
            self.running[job.id] = asyncio.create_task(self._run_job(job))
        self._report_in_flight()
        return len(rows)

    async def _write_outcomes(self) -> bool:
        """Write pending outcomes on their own; False if the database refused."""
        batch = self.reporter.take()
        if not len(batch):
            return True
        try:
            conn = await self._connection()
            await self.db.job_report(conn, self.worker_id, batch)
        except Exception as exc:
            self.reporter.restore(batch)
            self._needs_reconcile = True
            await self._drop_connection()
            if is_outage(exc):
                self.outage.failed(exc, retry_delay(99))
            else:
                log.warning(
                    "could not record %d outcome(s): %s", len(self.reporter), exc, exc_info=True
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

    # -- one job -------------------------------------------------------------------------------

    async def _run_job(self, job: ClaimedJob) -> None:
        assert self.runner is not None
        task: Task[Any, Any] | None = None
        outcome: Outcome | None = None
        # each job runs in its own asyncio task, so this context ends with it
        logs.set_current_job(str(job.id), job.job_name, job.queue, job.attempt)
        control = self.control
        try:
            task, outcome = await self.runner.run(job)
        except asyncio.CancelledError:
            if job.id not in control.aborted or self.stop.is_set():
                outcome = None  # shutdown: the job is returned to the queue
                raise
            # an abort cancelled the handler: the outcome statement ends it cancelled
            uncancel = getattr(asyncio.current_task(), "uncancel", None)
            if uncancel is not None:  # Python 3.11+: this task goes on, not cancelled
                uncancel()
            outcome = Outcome(Kind.ABORTED, error="aborted: cancel_job(abort=True)")
        except BaseException as exc:  # a bug here must not lose the job
            log.exception("internal error running job %s", job.id)
            outcome = Outcome(Kind.ERROR, error=f"internal error: {exc!r}")
        finally:
            if control.aborted:
                control.aborted.discard(job.id)
            if control.progress:  # its last progress lands before its outcome
                await control.finish(job.id, flush=outcome is not None)
            self.running.pop(job.id, None)
            self.slot_free.set()
            if outcome is not None:
                self._record(task, job, outcome)
            self._report_in_flight()

    def _abort(self, job_id: uuid.UUID, job_name: str) -> None:
        """An abort was asked for ``job_id``: flag it (``ctx.cancel_requested``) and cancel
        an async handler's task; a sync handler cannot be killed and sees only the flag."""
        running = self.running.get(job_id)
        if running is None or job_id in self.control.aborted:
            return
        self.control.aborted.add(job_id)
        log.info("job %s (%s): abort requested", job_id, job_name)
        task = self.app.registry.tasks.get(job_name)
        if task is not None and task.is_async:
            running.cancel()

    async def _after_beat(self, conn: Any) -> None:
        """After each heartbeat: aborts whose NOTIFY was missed (the durable fallback), and
        a re-read of the paused queues before the next claim (likewise)."""
        self.paused.stale = True
        if self.running:
            await self.control.poll_aborts(conn)

    def _record(self, task: Task[Any, Any] | None, job: ClaimedJob, outcome: Outcome) -> None:
        decision = self.reporter.record(task, job, outcome)
        poll = self.app.settings.poll_interval
        if decision.status is JobStatus.QUEUED and 0 < decision.delay < poll:
            # due again before the next poll: wake up for it (a little after, so the outcome
            # has been written and its due time has passed)
            asyncio.get_running_loop().call_later(decision.delay + 0.05, self.more_work.set)

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
        if self._wakeups is not None:
            await self._wakeups.close()
        for t in self._side:
            t.cancel()
        await asyncio.gather(*self._side, return_exceptions=True)
        try:
            conn = await self._connection()
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
