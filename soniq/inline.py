"""Jobs in memory, for ``Soniq(testing="inline")`` and ``Soniq(testing="manual")``.

No database: the app's enqueue, query and worker methods are replaced on the instance by
the methods below. Jobs are built by the same rules as a real enqueue (``soniq.enqueue``),
run by the worker's own :class:`~soniq.runner.Runner` and their outcomes decided by the
worker's own :class:`~soniq.outcomes.Reporter` (retry delays, snoozes, dead letters), then
applied here the way the outcome statement applies them in PostgreSQL.

``inline`` runs a due job (and its immediate retries) before ``enqueue`` returns;
``manual`` only records it, for ``soniq.testing.drain`` to run later.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from soniq.enqueue import NewJob, new_jobs
from soniq.errors import ENQUEUE_INVALID, SoniqError
from soniq.outcomes import Reporter
from soniq.runner import ClaimedJob, Runner
from soniq.states import JobStatus, Outcome

if TYPE_CHECKING:
    from soniq.app import Soniq

MODES = ("inline", "manual")
MAX_DEPTH = 20  # jobs enqueued by jobs enqueued by ... in inline mode
MAX_RUNS = 1000  # attempts one enqueue (or one drain pass per job) may run: a snooze loop ends
INLINE_DEPTH_EXCEEDED = "SONIQ_INLINE_DEPTH_EXCEEDED"
WORKER_ID = "inline"
STORE_ATTR = "_soniq_inline"  # where install() leaves the store on the app
TERMINAL = (JobStatus.DONE, JobStatus.DEAD_LETTER, JobStatus.CANCELLED)
ACTIVE = (JobStatus.QUEUED, JobStatus.PROCESSING)

_depth: contextvars.ContextVar[int] = contextvars.ContextVar("soniq_inline_depth", default=0)


def _now() -> datetime:
    return datetime.now(timezone.utc)


class InlineJobs:
    """The jobs of one app in testing mode, keyed by id, in enqueue order."""

    def __init__(self, app: Soniq, mode: str) -> None:
        if mode not in MODES:
            raise SoniqError(
                "SONIQ_SETTINGS_INVALID",
                f"testing={mode!r} is not a testing mode; use 'inline' or 'manual'",
            )
        self.app = app
        self.mode = mode
        self.jobs: dict[str, dict[str, Any]] = {}
        self._executor: ThreadPoolExecutor | None = None
        self._runner: Runner | None = None
        self._reporter: Reporter | None = None

    METHODS = (
        "enqueue_job",
        "enqueue_many",
        "get_job",
        "get_result",
        "list_jobs",
        "cancel_job",
        "delete_job",
        "retry_job",
        "get_queue_stats",
        "run_worker",
        "ensure_initialized",
        "setup",
        "close",
    )

    def install(self) -> None:
        """Replace the app's database-backed methods by this store's (on the instance)."""
        for name in self.METHODS:
            setattr(self.app, name, getattr(self, name))
        self.app.__dict__[STORE_ATTR] = self

    def uninstall(self) -> None:
        """Give the app its own methods back."""
        for name in (*self.METHODS, STORE_ATTR):
            self.app.__dict__.pop(name, None)

    # -- enqueue ---------------------------------------------------------------------------

    async def enqueue_job(self, job: NewJob, *, connection: Any = None) -> str:
        """Record ``job`` (``connection=`` is accepted and ignored: there is no database);
        in inline mode, run it now if it is due."""
        if job.dedup_key is not None:
            for rec in self.jobs.values():
                if rec["dedup_key"] == job.dedup_key and rec["status"] in ACTIVE:
                    return str(rec["id"])
        due = job.scheduled_at is None or job.scheduled_at <= _now()
        run_now = self.mode == "inline" and due
        depth = _depth.get()
        if run_now and depth >= MAX_DEPTH:
            raise SoniqError(
                INLINE_DEPTH_EXCEEDED,
                f"inline mode: {job.job_name} was enqueued by a job nested {depth} deep "
                f"(limit {MAX_DEPTH}); a handler probably enqueues itself without end. "
                "Fix the handler, or use Soniq(testing='manual') and soniq.testing.drain().",
            )
        self._add(job.id, job, json.loads(job.args))
        for observer in self.app.observers:
            observer.job_enqueued(job.queue, job.job_name, 1)
        if run_now:
            token = _depth.set(depth + 1)
            try:
                await self._settle(job.id)
            finally:
                _depth.reset(token)
        return job.id

    async def enqueue_many(
        self,
        target: Any,
        args_list: Any,
        *,
        queue: Any = None,
        priority: Any = None,
        scheduled_at: Any = None,
        connection: Any = None,
    ) -> list[str]:
        app = self.app
        jobs = new_jobs(
            app.registry, app.settings, target, args_list, queue, priority, scheduled_at
        )
        if jobs is None:
            return []
        ids = []
        for job_id, args in zip(jobs.ids, json.loads(jobs.args), strict=True):
            job = NewJob(
                job_id,
                jobs.job_name,
                jobs.queue,
                jobs.priority,
                json.dumps(args),
                jobs.max_attempts,
                jobs.scheduled_at,
                None,
            )
            ids.append(await self.enqueue_job(job))
        return ids

    def _add(self, job_id: str, job: NewJob, args: dict[str, Any]) -> None:
        now = _now()
        self.jobs[job_id] = {
            "id": job_id,
            "job_name": job.job_name,
            "queue": job.queue,
            "priority": job.priority,
            "args": args,
            "status": JobStatus.QUEUED,
            "attempts": 0,
            "max_attempts": job.max_attempts,
            "created_at": now,
            "scheduled_at": job.scheduled_at or now,
            "started_at": None,
            "finished_at": None,
            "last_error": None,
            "worker_id": None,
            "dedup_key": job.dedup_key,
            "errors": None,
            "dead_reason": None,
            "dead_lettered_at": None,
            "resurrection_count": 0,
            "result": None,
        }

    # -- running ---------------------------------------------------------------------------

    def _tools(self) -> tuple[Runner, Reporter]:
        if self._runner is None or self._reporter is None:
            settings = self.app.settings
            # sync handlers that enqueue nest threads: room for the depth limit to speak first
            self._executor = ThreadPoolExecutor(
                max(settings.sync_handler_pool_size, MAX_DEPTH + 2),
                thread_name_prefix="soniq-inline",
            )
            self._runner = Runner(
                self.app.registry, settings, WORKER_ID, self._executor, self._late
            )
            self._reporter = Reporter(asyncio.Event(), self.app.observers)
        return self._runner, self._reporter

    def _due(self, rec: dict[str, Any], with_scheduled: bool) -> bool:
        return rec["status"] is JobStatus.QUEUED and (
            with_scheduled or rec["scheduled_at"] <= _now()
        )

    async def _settle(self, job_id: str) -> None:
        """Run one job until it ends or waits (a retry or snooze with a delay)."""
        rec = self.jobs[job_id]
        for _ in range(MAX_RUNS):
            if not self._due(rec, False):
                return
            await self._run(rec)

    async def _run(self, rec: dict[str, Any]) -> None:
        """One attempt, as a worker's claim, run and outcome write make it."""
        runner, _ = self._tools()
        rec.update(
            status=JobStatus.PROCESSING,
            attempts=rec["attempts"] + 1,
            started_at=_now(),
            worker_id=WORKER_ID,
        )
        claimed = ClaimedJob({**rec, "id": uuid.UUID(rec["id"]), "args": dict(rec["args"])})
        for observer in self.app.observers:
            observer.job_started(claimed.queue, claimed.job_name)
        task, outcome = await runner.run(claimed)
        if outcome is not None:  # else a sync handler outlived its timeout: _late records it
            self._record(task, claimed, outcome)

    def _late(self, task: Any, job: ClaimedJob, outcome: Outcome) -> None:
        self._record(task, job, outcome)

    def _record(self, task: Any, job: ClaimedJob, outcome: Outcome) -> None:
        """Decide as the worker does, then apply what the outcome statement would write."""
        _, reporter = self._tools()
        reporter.record(task, job, outcome)
        batch = reporter.take()
        now = _now()
        for done_id, result in zip(batch.done_ids, batch.done_results, strict=True):
            self.jobs[str(done_id)].update(
                status=JobStatus.DONE,
                finished_at=now,
                result=None if result is None else json.loads(result),
            )
        for row in batch.other:
            rec = self.jobs[str(row.id)]
            queued = row.status == JobStatus.QUEUED.value
            if row.error is not None:
                entry = {"attempt": rec["attempts"], "error": row.error, "at": now}
                rec["errors"] = [*(rec["errors"] or []), {**entry, "worker_id": WORKER_ID}]
                rec["last_error"] = row.error
            rec.update(
                status=JobStatus(row.status),
                scheduled_at=now + timedelta(seconds=row.delay) if queued else rec["scheduled_at"],
                attempts=rec["attempts"] - (1 if row.refund else 0),
                finished_at=None if queued else now,
                dead_reason=row.reason,
                dead_lettered_at=now if row.status == JobStatus.DEAD_LETTER.value else None,
            )

    async def drain(self, *, with_scheduled: bool = False) -> dict[str, int]:
        """Run every runnable job (also those enqueued meanwhile) until none is left."""
        before = {k: r["status"] for k, r in self.jobs.items()}
        for _ in range(MAX_RUNS * 10):
            due = [r for r in self.jobs.values() if self._due(r, with_scheduled)]
            if not due:
                break
            rec = min(due, key=lambda r: (r["priority"], r["scheduled_at"], r["id"]))
            await self._run(rec)
        counts = {s.value: 0 for s in TERMINAL}
        for job_id, rec in self.jobs.items():
            if rec["status"] in TERMINAL and before.get(job_id) != rec["status"]:
                counts[rec["status"].value] += 1
        return counts

    async def run_worker(self, **_options: Any) -> None:
        """A worker over the jobs in memory: runs what is runnable now, then returns."""
        await self.drain()

    # -- queries ---------------------------------------------------------------------------

    def _public(self, rec: dict[str, Any]) -> dict[str, Any]:
        job = {k: v for k, v in rec.items() if k != "result"}
        job["args"] = dict(rec["args"])
        return job

    async def get_job(self, job_id: str) -> dict[str, Any] | None:
        rec = self.jobs.get(str(job_id))
        return None if rec is None else self._public(rec)

    async def get_result(self, job_id: str) -> Any:
        rec = self.jobs.get(str(job_id))
        return rec["result"] if rec is not None and rec["status"] is JobStatus.DONE else None

    async def list_jobs(
        self,
        *,
        status: Any = None,
        queue: str | None = None,
        job_name: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[dict[str, Any]]:
        if status is not None:
            try:
                status = JobStatus(status)
            except ValueError:
                raise SoniqError(ENQUEUE_INVALID, f"unknown status {status!r}") from None
        rows = [
            self._public(r)
            for r in reversed(self.jobs.values())  # newest first, as the database lists them
            if (status is None or r["status"] is status)
            and (queue is None or r["queue"] == queue)
            and (job_name is None or r["job_name"] == job_name)
        ]
        return rows[offset : offset + limit]

    async def cancel_job(self, job_id: str, **_options: Any) -> bool:
        rec = self.jobs.get(str(job_id))
        if rec is None or rec["status"] is not JobStatus.QUEUED:
            return False
        rec.update(status=JobStatus.CANCELLED, finished_at=_now())
        return True

    async def delete_job(self, job_id: str) -> bool:
        rec = self.jobs.get(str(job_id))
        if rec is None or rec["status"] is JobStatus.PROCESSING:
            return False
        del self.jobs[str(job_id)]
        return True

    async def retry_job(self, job_id: str) -> bool:
        rec = self.jobs.get(str(job_id))
        if rec is None or rec["status"] is not JobStatus.DEAD_LETTER:
            return False
        rec.update(
            status=JobStatus.QUEUED,
            max_attempts=max(rec["max_attempts"], rec["attempts"] + 1),
            scheduled_at=_now(),
            finished_at=None,
            dead_reason=None,
            dead_lettered_at=None,
        )
        if self.mode == "inline":
            await self._settle(rec["id"])
        return True

    async def get_queue_stats(self) -> dict[str, int]:
        stats = {s.value: 0 for s in JobStatus}
        for rec in self.jobs.values():
            stats[rec["status"].value] += 1
        return {"total": sum(stats.values()), **stats}

    # -- lifecycle -------------------------------------------------------------------------

    async def ensure_initialized(self) -> None:
        """Nothing to open: there is no database."""

    async def setup(self) -> int:
        return 0

    async def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False)
        self._executor = self._runner = self._reporter = None
