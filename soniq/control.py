"""Job control while a job runs: abort, progress, completing in the handler's transaction,
and waiting for / watching a job from anywhere.

Every signal has a durable flag, a push and a poll fallback (docs/internals.md):

- abort: ``cancel_requested_at`` on the row, a NOTIFY on the workers' wake-up channel
  (payload ``!abort:<id>:<name>``), and the heartbeat re-reads pending aborts;
- wait / watch: a waiter marks the row ``watched``; a trigger then NOTIFYs the instance's
  one LISTEN connection (``soniq.notifier``) on every change of status or progress; waiters
  re-read rows after every (re)connect and every ``poll_interval``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncGenerator, Callable
from typing import TYPE_CHECKING, Any

from soniq.db import parse_uuid
from soniq.errors import (
    DB_ERRORS,
    ENQUEUE_INVALID,
    IDEMPOTENCY_CONFLICT,
    JOB_LOST,
    JOB_NOT_FOUND,
    PROGRESS_INVALID,
    SoniqError,
)
from soniq.jobs import dump_json
from soniq.states import JobStatus

if TYPE_CHECKING:
    from soniq.app import Soniq
    from soniq.db import Database
    from soniq.enqueue import JobExtras, NewJob
    from soniq.notifier import Subscription
    from soniq.runner import ClaimedJob

log = logging.getLogger("soniq.control")

ABORT_PREFIX = "!abort:"  # never a queue name (QUEUE_RE), so wake-up subscribers tell them apart
PROGRESS_INTERVAL = 0.1  # at most ten progress writes a second per job
PROGRESS_MESSAGE_MAX = 500
TERMINAL = frozenset({JobStatus.DONE, JobStatus.CANCELLED, JobStatus.DEAD_LETTER})


# -- in the worker ---------------------------------------------------------------------------


class WorkerControl:
    """One worker's side of job control: which running jobs were asked to stop, and the
    progress writers of its running jobs."""

    def __init__(self, db: Database, worker_id: str, abort: Callable[[uuid.UUID, str], None]):
        self.db = db
        self.worker_id = worker_id
        self.aborted: set[uuid.UUID] = set()
        self.progress: dict[uuid.UUID, Progress] = {}
        self._abort = abort

    def on_message(self, payload: str) -> None:
        """A control NOTIFY on the wake-up channel."""
        if payload.startswith(ABORT_PREFIX):
            rest = payload[len(ABORT_PREFIX) :]
            uid = parse_uuid(rest[:36])
            if uid is not None:
                self._abort(uid, rest[37:])

    async def poll_aborts(self, conn: Any) -> None:
        """The heartbeat's fallback: aborts asked while a NOTIFY could be missed."""
        for row in await self.db.job_abort_pending(conn, self.worker_id):
            self._abort(row["id"], row["job_name"])

    def job_control(self, job: ClaimedJob) -> JobControl:
        return JobControl(self, job)

    async def finish(self, job_id: uuid.UUID, flush: bool) -> None:
        """Before a job's outcome is recorded: its last progress lands (with ``flush``)."""
        writer = self.progress.pop(job_id, None)
        if writer is None:
            return
        if flush:
            await writer.flush()
        elif writer.task is not None:
            writer.task.cancel()


class JobControl:
    """What ``JobContext`` delegates to for one running job."""

    __slots__ = ("job", "owner")

    def __init__(self, owner: WorkerControl, job: ClaimedJob) -> None:
        self.owner = owner
        self.job = job

    @property
    def cancel_requested(self) -> bool:
        return self.job.id in self.owner.aborted

    async def set_progress(self, fraction: float, message: str | None) -> None:
        if (
            isinstance(fraction, bool)
            or not isinstance(fraction, (int, float))
            or not 0.0 <= fraction <= 1.0
        ):
            raise SoniqError(
                PROGRESS_INVALID,
                f"progress must be a number from 0 to 1 (a fraction, e.g. 0.4 for 40%), "
                f"got {fraction!r}",
            )
        if message is not None and not isinstance(message, str):
            raise SoniqError(PROGRESS_INVALID, "the progress message must be a string or None")
        if message is not None and len(message) > PROGRESS_MESSAGE_MAX:
            message = message[:PROGRESS_MESSAGE_MAX]
        writer = self.owner.progress.get(self.job.id)
        if writer is None:
            writer = self.owner.progress[self.job.id] = Progress(self.owner, self.job)
        writer.set(float(fraction), message)

    async def complete(self, conn: Any, result: Any) -> None:
        job = self.job
        result_json = None if result is None else dump_json(result, "ctx.complete(result=...)")
        done = await self.owner.db.job_complete(
            conn, job.id, self.owner.worker_id, job.attempt, result_json
        )
        if not done:
            raise SoniqError(
                JOB_LOST,
                f"job {job.id} is no longer run by this worker (it was rescued, aborted or "
                "handed to another worker): roll back this transaction; its writes must "
                "not happen twice",
            )


class Progress:
    """Coalesces one job's progress writes: the first at once, then at most one per
    PROGRESS_INTERVAL; the last value is written by ``flush`` when the job ends."""

    def __init__(self, owner: WorkerControl, job: ClaimedJob) -> None:
        self.owner = owner
        self.job = job
        self.pending: tuple[float, str | None] | None = None
        self.task: asyncio.Task[None] | None = None
        self.last = -PROGRESS_INTERVAL  # monotonic time of the last write
        self.hurry = asyncio.Event()  # set by flush: write now, do not wait out the interval

    def set(self, fraction: float, message: str | None) -> None:
        self.pending = (fraction, message)
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self._run(), name=f"soniq-progress-{self.job.id}")

    async def _run(self) -> None:
        while self.pending is not None:
            wait = self.last + PROGRESS_INTERVAL - time.monotonic()
            if wait > 0 and not self.hurry.is_set():
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self.hurry.wait(), wait)
            self.last = time.monotonic()
            await self._write()

    async def _write(self) -> None:
        value, self.pending = self.pending, None
        if value is None:
            return
        job = self.job
        try:
            async with self.owner.db.acquire() as conn:
                await self.owner.db.job_progress(
                    conn, job.id, self.owner.worker_id, job.attempt, value[0], value[1]
                )
        except DB_ERRORS as exc:  # progress is advisory: a lost write is not an error
            log.warning("could not record progress of job %s: %s", job.id, exc)

    async def flush(self) -> None:
        self.hurry.set()
        if self.task is not None:
            with contextlib.suppress(Exception):
                await self.task
        await self._write()


# -- anywhere: cancel, wait, watch -----------------------------------------------------------


async def cancel_job(app: Soniq, job_id: str, abort: bool) -> bool:
    """``app.cancel_job``: a queued job becomes cancelled; with ``abort`` a processing job is
    asked to stop (its end is recorded by its worker, or by rescue)."""
    uid = parse_uuid(job_id)
    if uid is None:
        return False
    db = await app.database()
    if await db.job_cancel(uid):
        return True
    return abort and await db.job_abort(uid)


class Watchers:
    """Every ``wait`` / ``watch`` of one ``Soniq`` instance, fed by its one LISTEN
    connection: a NOTIFY for a watched job re-reads that row once, for all its watchers."""

    def __init__(self, app: Soniq) -> None:
        self.app = app
        self.queues: dict[uuid.UUID, list[asyncio.Queue[dict[str, Any] | None]]] = {}
        self.sub: Subscription | None = None
        self._refreshing: dict[uuid.UUID, bool] = {}  # id -> another NOTIFY came meanwhile
        self._poller: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def watch(self, job_id: str) -> AsyncGenerator[dict[str, Any], None]:
        uid = parse_uuid(job_id)
        if uid is None:
            raise SoniqError(JOB_NOT_FOUND, f"no job with id {job_id!r} (ids are UUIDs)")
        db = await self.app.database()
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self._add(uid, queue, db)  # listening before the row is marked: nothing is missed
        try:
            row = await db.job_watch(uid)
            if row is None:
                raise SoniqError(JOB_NOT_FOUND, f"no job with id {job_id}")
            job = self.app._job_dict(row)
            del job["woke"]
            yield job
            seen = _state(job)
            while job["status"] not in TERMINAL:
                got = await queue.get()
                if got is None:
                    raise SoniqError(JOB_NOT_FOUND, f"job {job_id} was deleted")
                if _state(got) != seen:
                    job, seen = got, _state(got)
                    yield job
        finally:
            self._remove(uid, queue)

    async def wait(self, job_id: str, timeout: float | None) -> dict[str, Any]:
        try:
            return await asyncio.wait_for(self._last(job_id), timeout)
        except asyncio.TimeoutError:
            raise TimeoutError(f"job {job_id} did not end within {timeout}s") from None

    async def _last(self, job_id: str) -> dict[str, Any]:
        last: dict[str, Any] | None = None
        async with contextlib.aclosing(self.watch(job_id)) as events:
            async for job in events:
                last = job
        assert last is not None
        return last

    async def close(self) -> None:
        """``Soniq.close``: stop the fallback poll and the subscription; the next waiter
        subscribes again."""
        poller, self._poller = self._poller, None
        if poller is not None:
            poller.cancel()
        sub, self.sub = self.sub, None
        if sub is not None:
            await sub.close()
        for task in list(self._tasks):
            task.cancel()

    def _add(self, uid: uuid.UUID, queue: Any, db: Database) -> None:
        self.queues.setdefault(uid, []).append(queue)
        if self.sub is None:
            channel = f"{db.channel}_events"
            self.sub = self.app.notifier.subscribe(channel, self._on_notify, self._refresh_all)
        if self._poller is None or self._poller.done():
            self._poller = asyncio.create_task(self._poll(), name="soniq-watch-poll")

    def _remove(self, uid: uuid.UUID, queue: Any) -> None:
        queues = self.queues.get(uid, [])
        if queue in queues:
            queues.remove(queue)
        if not queues:
            self.queues.pop(uid, None)
        # the subscription (and so the LISTEN connection) stays until Soniq.close: a wait
        # after this one must not pay for a new connection

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_notify(self, payload: str) -> None:
        uid = parse_uuid(payload)
        if uid is None or uid not in self.queues:
            return
        if uid in self._refreshing:
            self._refreshing[uid] = True  # read again once the read under way is back
            return
        self._refreshing[uid] = False
        self._spawn(self._refresh(uid))

    async def _refresh(self, uid: uuid.UUID) -> None:
        try:
            while True:
                await self._read([uid])
                if not self._refreshing.get(uid):
                    break
                self._refreshing[uid] = False
        finally:
            self._refreshing.pop(uid, None)

    def _refresh_all(self) -> None:
        """After the LISTEN connection (re)connects: a NOTIFY may have been lost."""
        if self.queues:
            self._spawn(self._read(list(self.queues)))

    async def _poll(self) -> None:
        """The fallback for a lost NOTIFY that no reconnect revealed: re-read every
        watched job each ``poll_interval`` (one query for all of them)."""
        while True:
            await asyncio.sleep(self.app.settings.poll_interval)
            if self.queues:
                await self._read(list(self.queues))

    async def _read(self, ids: list[uuid.UUID]) -> None:
        try:
            db = await self.app.database()
            rows = await db.job_get_many(ids)
        except DB_ERRORS as exc:
            log.warning("could not re-read watched jobs: %s", exc)
            return
        found = {row["id"]: self.app._job_dict(row) for row in rows}
        for uid in ids:
            job = found.get(uid)
            for queue in list(self.queues.get(uid, [])):
                queue.put_nowait(job)


def _state(job: dict[str, Any]) -> tuple[Any, ...]:
    return (job["status"], job["progress"], job["progress_message"])


# -- enqueue with tags, expiry or an idempotency key ------------------------------------------


async def insert_ext(app: Soniq, db: Database, job: NewJob, ext: JobExtras, connection: Any) -> str:
    """Insert ``job`` with its extras; returns its id, the id of the job that holds the same
    idempotency key with the same task and arguments, or that of the active job holding its
    dedup key. The same key with another task or arguments raises (nothing written)."""
    row = await db.job_insert_ext(connection, job, ext)
    if ext.idempotency_key is not None and row["key_job_id"] != uuid.UUID(job.id):
        if row["key_hash"] != ext.request_hash:
            raise SoniqError(
                IDEMPOTENCY_CONFLICT,
                f"idempotency_key {ext.idempotency_key!r} already belongs to job "
                f"{row['key_job_id']}, enqueued for another task or other arguments; pick a "
                "new key for a different request",
            )
        return str(row["key_job_id"])
    if row["id"] is not None:
        for observer in app.observers:
            observer.job_enqueued(job.queue, job.job_name, 1)
        return str(row["id"])
    existing = await db.job_get_active_by_dedup_key(connection, job.dedup_key or "")
    if existing is None:
        raise SoniqError(ENQUEUE_INVALID, f"dedup_key {job.dedup_key!r} changed hands; retry")
    return str(existing)
