"""Test helpers, and a pytest plugin (``-p soniq.testing`` or
``pytest_plugins = ["soniq.testing"]``; never loaded automatically).

They work on two kinds of app:

- ``Soniq(testing="inline")`` (no database; each due job runs before ``enqueue`` returns)
  or ``Soniq(testing="manual")`` (no database; jobs wait for :func:`drain`);
- an ordinary, database-backed app: :func:`drain` runs a worker in this process until
  nothing is runnable, and the assertions look at the jobs that are ``queued``.

:func:`enqueued` and the assertions see, for an inline app, every job enqueued (they have
already run); for a manual or database app, the jobs still ``queued``.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from typing import TYPE_CHECKING, Any

from soniq.enqueue import check_handler_args, encode_args
from soniq.errors import ENQUEUE_INVALID, SoniqError
from soniq.ids import _IDS
from soniq.inline import STORE_ATTR, InlineJobs
from soniq.jobs import TaskRef
from soniq.runner import ClaimedJob, Runner
from soniq.states import JobStatus, Kind

if TYPE_CHECKING:
    from soniq.app import Soniq

__all__ = [
    "assert_enqueued",
    "drain",
    "enqueued",
    "perform_job",
    "refute_enqueued",
    "testing_mode",
]

_PAGE = 1000
_SHOWN = 20  # jobs listed in a failed assertion's message


def _store(app: Soniq) -> InlineJobs | None:
    store = app.__dict__.get(STORE_ATTR)
    return store if isinstance(store, InlineJobs) else None


def _task_name(target: Any) -> str:
    if isinstance(target, str):
        return target
    if isinstance(target, TaskRef):
        return target.name
    task = getattr(target, "__soniq_task__", None)
    if task is None:
        raise SoniqError(
            ENQUEUE_INVALID,
            f"{target!r} is not a task: pass a function decorated with @app.job(...), a task "
            "name, or a task_ref(...)",
        )
    return str(task.name)


async def drain(app: Soniq, *, with_scheduled: bool = False) -> dict[str, int]:
    """Run every runnable job now, also those the jobs enqueue, until none is left; returns
    how many ended in each end status (``done``, ``dead_letter``, ``cancelled``).

    ``with_scheduled=True`` (testing apps only) also runs jobs due later: those enqueued with
    ``scheduled_at``, and retries and snoozes waiting out a delay.
    """
    store = _store(app)
    if store is not None:
        return await store.drain(with_scheduled=with_scheduled)
    if with_scheduled:
        raise SoniqError(
            ENQUEUE_INVALID,
            "drain(with_scheduled=True) needs Soniq(testing='inline' or 'manual'); a database "
            "app runs jobs when they are due",
        )
    counter = _Counter()
    app.observers.append(counter)
    try:
        await app.run_worker(run_once=True)
    finally:
        app.observers.remove(counter)
    return counter.counts


class _Counter:
    """An observer counting end statuses while :func:`drain` runs a worker."""

    _ENDS = {"succeeded": "done", "dead_lettered": "dead_letter", "cancelled": "cancelled"}

    def __init__(self) -> None:
        self.counts = {"done": 0, "dead_letter": 0, "cancelled": 0}

    def job_ended(self, queue: str, task: str, outcome: str, duration: float) -> None:
        end = self._ENDS.get(outcome)
        if end is not None:
            self.counts[end] += 1

    def job_enqueued(self, queue: str, task: str, n: int) -> None:
        pass

    def job_started(self, queue: str, task: str) -> None:
        pass

    def worker_in_flight(self, worker_id: str, n: int) -> None:
        pass


async def enqueued(app: Soniq, target: Any = None) -> list[dict[str, Any]]:
    """The jobs enqueued (of ``target``'s task, if given), oldest first: for an inline app
    every job enqueued; otherwise the jobs still ``queued``."""
    name = None if target is None else _task_name(target)
    store = _store(app)
    if store is not None and store.mode == "inline":
        jobs = [await store.get_job(k) for k in store.jobs]
        return [j for j in jobs if j is not None and (name is None or j["job_name"] == name)]
    out: list[dict[str, Any]] = []
    while True:
        page = await app.list_jobs(
            status=JobStatus.QUEUED, job_name=name, limit=_PAGE, offset=len(out)
        )
        out.extend(page)
        if len(page) < _PAGE:
            return out[::-1]


def _matches(job: dict[str, Any], args: dict[str, Any] | None, queue: str | None) -> bool:
    if queue is not None and job["queue"] != queue:
        return False
    return args is None or all(k in job["args"] and job["args"][k] == v for k, v in args.items())


def _describe(jobs: list[dict[str, Any]]) -> str:
    if not jobs:
        return "nothing was enqueued"
    lines = [
        f"  - {j['job_name']} queue={j['queue']} args={j['args']} status={j['status']}"
        for j in jobs[:_SHOWN]
    ]
    if len(jobs) > _SHOWN:
        lines.append(f"  ... and {len(jobs) - _SHOWN} more")
    return "enqueued:\n" + "\n".join(lines)


def _wanted(name: str, args: dict[str, Any] | None, queue: str | None) -> str:
    parts = [name]
    if args is not None:
        parts.append(f"args matching {args}")
    if queue is not None:
        parts.append(f"in queue {queue!r}")
    return " ".join(parts)


async def assert_enqueued(
    app: Soniq,
    target: Any,
    *,
    args: dict[str, Any] | None = None,
    queue: str | None = None,
    count: int | None = None,
) -> list[dict[str, Any]]:
    """Fail unless a job of ``target`` is enqueued (exactly ``count`` of them, if given)
    whose arguments include every key of ``args`` with that value; returns the matches."""
    name = _task_name(target)
    every = await enqueued(app)
    found = [j for j in every if j["job_name"] == name and _matches(j, args, queue)]
    if (count is None and not found) or (count is not None and len(found) != count):
        expected = "a job" if count is None else f"{count} job(s)"
        raise AssertionError(
            f"expected {expected} of {_wanted(name, args, queue)}, found {len(found)}; "
            + _describe(every)
        )
    return found


async def refute_enqueued(
    app: Soniq, target: Any, *, args: dict[str, Any] | None = None, queue: str | None = None
) -> None:
    """Fail if a job of ``target`` matching ``args`` (a subset) and ``queue`` is enqueued."""
    name = _task_name(target)
    every = await enqueued(app)
    found = [j for j in every if j["job_name"] == name and _matches(j, args, queue)]
    if found:
        raise AssertionError(
            f"expected no job of {_wanted(name, args, queue)}, found {len(found)}; "
            + _describe(every)
        )


async def perform_job(target: Any, **kwargs: Any) -> Any:
    """Run ``target``'s handler once with ``kwargs``, a real ``JobContext`` and the app's
    hooks and middleware, without a database; returns what it returns (a ``Snooze`` too)
    and raises what it raises (``TimeoutError`` past its timeout). Arguments are checked
    as ``enqueue`` checks them."""
    task = getattr(target, "__soniq_task__", None)
    app = getattr(target, "__soniq_app__", None)
    if task is None or app is None:
        raise SoniqError(
            ENQUEUE_INVALID, f"perform_job needs a function decorated with @app.job, not {target!r}"
        )
    args = check_handler_args(task, kwargs)
    encode_args(args, task.name)  # the same JSON rule as enqueue
    row = {
        "id": uuid.UUID(_IDS.text(_IDS.take())),
        "job_name": task.name,
        "queue": task.queue,
        "args": dict(args),
        "attempts": 1,
        "max_attempts": (task.retries if task.retries is not None else app.settings.max_retries)
        + 1,
        "scheduled_at": None,
        "created_at": None,
    }
    late: list[Any] = []
    pool = ThreadPoolExecutor(1, thread_name_prefix="soniq-perform")
    try:
        runner = Runner(app.registry, app.settings, "perform_job", pool, lambda *a: late.append(a))
        _, outcome = await runner.run(ClaimedJob(row))
    finally:
        pool.shutdown(wait=False)  # a sync handler past its timeout must not block the loop
    if outcome is None or outcome.kind is Kind.TIMEOUT:
        raise TimeoutError(f"{task.name} timed out after {task.timeout}s")
    if outcome.kind is Kind.ERROR:
        if isinstance(outcome.result, BaseException):
            raise outcome.result
        raise SoniqError(ENQUEUE_INVALID, outcome.error or "the job failed")
    if outcome.kind is Kind.SNOOZE:
        return _snooze_of(outcome.snooze_seconds)
    return outcome.result


def _snooze_of(seconds: float) -> Any:
    from soniq.jobs import Snooze

    return Snooze(seconds)


@contextmanager
def testing_mode(app: Soniq, mode: str = "inline") -> Iterator[Soniq]:
    """Switch an existing app (say, your project's module-level ``app``) to a testing mode
    for the block, with no database; its previous behaviour comes back afterwards."""
    if app.testing is not None:
        raise SoniqError(
            "SONIQ_SETTINGS_INVALID", f"this app is already in testing mode {app.testing!r}"
        )
    store = InlineJobs(app, mode)
    store.install()
    app.testing = mode
    try:
        yield app
    finally:
        app.testing = None
        store.uninstall()


# -- pytest plugin ---------------------------------------------------------------------------


def _fixture() -> Any:
    import pytest

    @pytest.fixture
    def soniq_testing() -> Iterator[Callable[..., Soniq]]:
        """``soniq_testing(app, mode="inline")`` switches ``app`` to a testing mode for the
        test (see ``testing_mode``); it is switched back at teardown."""
        stack = ExitStack()

        def switch(app: Soniq, mode: str = "inline") -> Soniq:
            return stack.enter_context(testing_mode(app, mode))

        with stack:
            yield switch

    return soniq_testing


soniq_testing = _fixture() if "pytest" in sys.modules else None

testing_mode.__test__ = False  # type: ignore[attr-defined]  # not a test, for pytest
