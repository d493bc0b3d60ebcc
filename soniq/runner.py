"""Run one claimed job and say how it ended: the handler with its context, hooks,
middleware, timeout and thread, reduced to an :class:`~soniq.states.Outcome`.

Nothing a handler does (raise, ``sys.exit``, hang, return something odd) escapes as anything
but an outcome. There are two ways through: the general one below, and a measured shortcut
for plain async handlers (no timeout, hooks, middleware or context parameter) that awaits the
handler's coroutine directly (docs/internals.md, "hot path").
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from typing import TYPE_CHECKING, Any

from soniq import otel
from soniq.jobs import Hook, JobContext, Snooze, Task
from soniq.registry import Registry
from soniq.settings import Settings
from soniq.states import Kind, Outcome

if TYPE_CHECKING:
    from soniq.control import WorkerControl

log = logging.getLogger("soniq.worker")

CANCEL_GRACE = 1.0  # seconds an async handler gets to honour cancellation
_SUCCESS_NONE = Outcome(Kind.SUCCESS)

Call = Callable[[], Awaitable[Any]]
LateOutcome = Callable[[Task[Any, Any], "ClaimedJob", Outcome], None]


class ClaimedJob:
    """A claimed job while this worker holds it (built from the claim's row)."""

    __slots__ = (
        "args",
        "attempt",
        "created_at",
        "id",
        "job_name",
        "max_attempts",
        "parent_results",
        "queue",
        "scheduled_at",
        "started",
        "trace_context",
    )

    def __init__(self, row: Any) -> None:
        self.id: uuid.UUID = row["id"]
        self.job_name: str = row["job_name"]
        self.queue: str = row["queue"]
        self.args: dict[str, Any] = row["args"]
        self.attempt: int = row["attempts"]
        self.max_attempts: int = row["max_attempts"]
        self.scheduled_at = row["scheduled_at"]
        self.created_at = row["created_at"]
        self.started = time.monotonic()
        self.trace_context = row.get("trace_context")  # W3C context stored at enqueue (otel)
        self.parent_results = row.get("parent_results")  # copied in by the parents (workflows)


class Runner:
    """Runs claimed jobs for one worker.

    A sync handler whose thread outlives its timeout cannot be killed: its slot is freed,
    it is listed in ``lingering``, and ``on_late`` records its outcome when the thread ends,
    so the job is not run again while it still runs.
    """

    def __init__(
        self,
        registry: Registry,
        settings: Settings,
        worker_id: str,
        executor: Executor,
        on_late: LateOutcome,
    ) -> None:
        self.registry = registry
        self.settings = settings
        self.worker_id = worker_id
        self.executor = executor
        self.on_late = on_late
        self.lingering: dict[uuid.UUID, asyncio.Future[Any]] = {}
        self.control: WorkerControl | None = None  # set by the worker (soniq.control)

    async def run(self, job: ClaimedJob) -> tuple[Task[Any, Any] | None, Outcome | None]:
        """(the job's task, its outcome); the outcome is None when ``on_late`` will give it."""
        if otel.active():  # a dictionary look-up while no tracer provider is set
            with otel.consumer(job) as span:
                task, outcome = await self._run(job)
                otel.finish(span, outcome)
                return task, outcome
        return await self._run(job)

    async def _run(self, job: ClaimedJob) -> tuple[Task[Any, Any] | None, Outcome | None]:
        task = self.registry.tasks.get(job.job_name)
        if task is None:
            return None, Outcome(
                Kind.NOT_FOUND,
                error=f"task {job.job_name!r} is not registered in worker {self.worker_id} "
                "(import its module via SONIQ_JOBS_MODULES)",
            )
        try:
            return task, await self._execute(task, job)
        except _Lingering:
            return task, None

    def context(self, job: ClaimedJob) -> JobContext:
        return JobContext(
            job_id=str(job.id),
            job_name=job.job_name,
            queue=job.queue,
            attempt=job.attempt,
            max_attempts=job.max_attempts,
            worker_id=self.worker_id,
            scheduled_at=job.scheduled_at,
            created_at=job.created_at,
            _control=None if self.control is None else self.control.job_control(job),
            parent_results=dict(job.parent_results or {}),
        )

    async def _execute(self, task: Task[Any, Any], job: ClaimedJob) -> Outcome:
        reg = self.registry
        kwargs = job.args
        try:
            if task.validate is not None:
                kwargs = task.check_args(kwargs)
        except Exception as exc:
            return Outcome(Kind.ERROR, error=str(exc), result=exc)
        # the context is built only when something takes it (most handlers do not)
        ctx = (
            self.context(job)
            if task.context_params or reg.before_job_hooks or reg.after_job_hooks or reg.middlewares
            else None
        )
        for name in task.context_params:
            kwargs[name] = ctx
        for hook in reg.before_job_hooks:
            await _hook(hook, ctx)

        timeout = task.timeout if task.timeout is not None else self.settings.job_timeout
        if task.is_async and timeout is None and ctx is None:
            # the measured shortcut: the handler's own coroutine, without the wrappers
            try:
                value = await task.fn(**kwargs)
            except asyncio.CancelledError:
                raise
            except BaseException as exc:  # SystemExit too: it must not stop the worker
                outcome = self._outcome(False, exc)
            else:
                outcome = _SUCCESS_NONE if value is None else self._outcome(True, value)
        else:
            outcome = await self._call(task, job, ctx, kwargs, timeout)

        if outcome.kind is Kind.SUCCESS:
            for hook in reg.after_job_hooks:
                await _hook(hook, ctx, outcome.result)
        elif outcome.kind in (Kind.ERROR, Kind.TIMEOUT) and reg.on_error_hooks:
            exc_obj = outcome.result if isinstance(outcome.result, BaseException) else None
            ctx = ctx if ctx is not None else self.context(job)
            for hook in reg.on_error_hooks:
                await _hook(hook, ctx, exc_obj or RuntimeError(outcome.error))
        return outcome

    async def _call(
        self,
        task: Task[Any, Any],
        job: ClaimedJob,
        ctx: JobContext | None,
        kwargs: dict[str, Any],
        timeout: float | None,
    ) -> Outcome:
        """The general way: handler (in a thread if sync) <- middleware <- timeout."""
        thread: _ThreadCall | None = None
        if task.is_async:
            call: Call = lambda: task.fn(**kwargs)  # noqa: E731
        else:
            thread = _ThreadCall(task.fn, kwargs, self.executor)
            call = thread.run
        if self.registry.middlewares:
            assert ctx is not None  # built whenever there is middleware
            for mw in reversed(self.registry.middlewares):
                call = (lambda m, nxt: lambda: m(ctx, nxt))(mw, call)
        outcome = await self._guarded(call, timeout)
        if outcome.kind is Kind.TIMEOUT and thread is not None and thread.still_running():
            fut = thread.future
            assert fut is not None
            self.lingering[job.id] = fut
            late = Outcome(Kind.TIMEOUT, error=f"timed out after {timeout}s (thread still running)")
            fut.add_done_callback(lambda _f: self._lingering_done(task, job, late))
            raise _Lingering
        return outcome

    async def _guarded(self, call: Call, timeout: float | None) -> Outcome:
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
            try:
                done, _ = await asyncio.wait({inner}, timeout=timeout)
            except asyncio.CancelledError:  # an abort (or shutdown) reaches the handler too
                inner.cancel()
                raise
            if not done:
                inner.cancel()
                await asyncio.wait({inner}, timeout=CANCEL_GRACE)
                return Outcome(Kind.TIMEOUT, error=f"timed out after {timeout}s")
            ok, value = inner.result()
        return self._outcome(ok, value)

    def _lingering_done(self, task: Task[Any, Any], job: ClaimedJob, outcome: Outcome) -> None:
        if self.lingering.pop(job.id, None) is not None:
            self.on_late(task, job, outcome)

    def _outcome(self, ok: bool, value: Any) -> Outcome:
        if not ok:
            exc: BaseException = value
            text = f"{type(exc).__name__}: {exc}"
            return Outcome(Kind.ERROR, error=text, result=exc)
        if isinstance(value, Snooze):
            seconds = min(float(value.seconds), self.settings.snooze_max_seconds)
            return Outcome(Kind.SNOOZE, snooze_seconds=seconds, error=None)
        return Outcome(Kind.SUCCESS, result=value)


class _ThreadCall:
    """A sync handler in the thread pool. An attempt given up before its thread started
    never starts it; one given up after can ask whether the thread still runs."""

    def __init__(self, fn: Callable[..., Any], kwargs: dict[str, Any], executor: Executor):
        self.fn = fn
        self.kwargs = kwargs
        self.executor = executor
        self.future: asyncio.Future[tuple[bool, Any]] | None = None
        self._gate = threading.Lock()
        self._started = False
        self._abandoned = False

    def _body(self) -> tuple[bool, Any]:
        with self._gate:
            if self._abandoned:
                return False, None
            self._started = True
        try:
            return True, self.fn(**self.kwargs)
        except BaseException as exc:
            return False, exc

    async def run(self) -> Any:
        loop = asyncio.get_running_loop()
        fut = loop.run_in_executor(self.executor, contextvars.copy_context().run, self._body)
        if self.future is None:
            self.future = fut
        try:
            ok, value = await asyncio.shield(fut)
        except asyncio.CancelledError:
            self._abandon()
            raise
        if not ok:
            raise value
        return value

    def _abandon(self) -> None:
        with self._gate:
            self._abandoned = not self._started

    def still_running(self) -> bool:
        """After a timeout: True if the thread started and has not ended."""
        self._abandon()  # one that has not started never will
        return self._started and self.future is not None and not self.future.done()


async def _hook(hook: Hook, *args: Any) -> None:
    try:
        await hook(*args)
    except Exception:
        log.exception("hook %r failed", getattr(hook, "__name__", hook))


class _Lingering(Exception):
    """Raised out of a job whose sync thread outlived its timeout (outcome recorded later)."""
