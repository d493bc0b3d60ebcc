"""The enqueue hot path's wake-ups: NOTIFY shared by concurrent enqueues, never lost.

Concurrent enqueues to one queue share one NOTIFY (PostgreSQL serialises the commits of
notifying transactions). These tests pin the rule that makes sharing safe: after every
committed job, a NOTIFY commits before the enqueue that settles it returns.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from soniq import Soniq
from soniq.db import Database
from soniq.enqueue import NewJob
from tests.conftest import wait_for

MakeApp = Callable[..., Awaitable[Soniq]]


class _Pool:
    def get_max_size(self) -> int:
        return 10


class ScriptedLanes:
    """Stands in for the connections of ``Database.lanes`` (its NOTIFY sharing runs as
    shipped): each statement waits until the test releases it."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []  # (query name, job id or queue)
        self.gates: dict[str, asyncio.Future[None]] = {}

    def _name(self, db: Database, query: str) -> str:
        return next(k for k, v in db.q.items() if v == query)

    async def _run(self, query: str, key: str) -> None:
        name = self._name(self.db, query)
        self.calls.append((name, key))
        gate = self.gates.setdefault(key, asyncio.get_running_loop().create_future())
        await gate

    async def fetchval(self, query: str, *args: Any) -> Any:
        await self._run(query, str(args[0]) if "wake" not in self._name(self.db, query) else "wake")
        return None

    async def execute(self, query: str, *args: Any) -> str:
        await self._run(query, str(args[0]))
        return "INSERT 0 1"

    def release(self, key: str, exc: BaseException | None = None) -> None:
        gate = self.gates.setdefault(key, asyncio.get_running_loop().create_future())
        if exc is None:
            gate.set_result(None)
        else:
            gate.set_exception(exc)


def scripted() -> tuple[Database, ScriptedLanes]:
    db = Database(_Pool(), "public")  # type: ignore[arg-type]
    lanes = ScriptedLanes()
    lanes.db = db  # type: ignore[attr-defined]
    db.lanes.fetchval = lanes.fetchval  # type: ignore[method-assign]
    db.lanes.execute = lanes.execute  # type: ignore[method-assign]
    return db, lanes


def insert(db: Database, job_id: str) -> asyncio.Task[Any]:
    return asyncio.create_task(
        db.job_insert(None, NewJob(job_id, "t", "default", 100, "{}", 1, None, None))
    )


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_one_enqueue_at_a_time_notifies_in_its_own_statement() -> None:
    db, lanes = scripted()
    for job_id in ("a", "b"):
        task = insert(db, job_id)
        await settle()
        lanes.release(job_id)
        await task
    assert lanes.calls == [("job_insert_plain", "a"), ("job_insert_plain", "b")]


async def test_concurrent_enqueues_share_the_notify_and_the_last_one_out_sends_it() -> None:
    db, lanes = scripted()
    a, b, c = insert(db, "a"), insert(db, "b"), insert(db, "c")
    await settle()
    # only the first carries the NOTIFY; the others are bare INSERTs
    assert lanes.calls == [
        ("job_insert_plain", "a"),
        ("job_insert_quiet", "b"),
        ("job_insert_quiet", "c"),
    ]
    lanes.release("a")  # the notifier commits first: b and c may commit after its NOTIFY
    await a
    lanes.release("b")
    await b  # c still in flight: it settles
    assert ("job_insert_wake", "wake") not in lanes.calls
    lanes.release("c")
    await settle()
    assert lanes.calls[-1] == ("job_insert_wake", "wake")  # c's enqueue sends it...
    assert not c.done()  # ...before it returns
    lanes.release("wake")
    await c
    assert lanes.calls.count(("job_insert_wake", "wake")) == 1


async def test_an_enqueue_started_after_a_quiet_commit_carries_the_notify_for_it() -> None:
    db, lanes = scripted()
    a, b = insert(db, "a"), insert(db, "b")
    await settle()
    lanes.release("b")  # quiet b commits while a (the notifier) is in flight
    await b
    lanes.release("a")
    await settle()
    # a's NOTIFY may have committed before b did: a NOTIFY is owed and sent
    assert lanes.calls[-1] == ("job_insert_wake", "wake")
    lanes.release("wake")
    await a
    d = insert(db, "d")  # nothing owed any more: d notifies in its own statement, alone
    await settle()
    lanes.release("d")
    await d
    assert lanes.calls[-1] == ("job_insert_plain", "d")
    assert lanes.calls.count(("job_insert_wake", "wake")) == 1


async def test_a_failed_notifier_leaves_the_wake_up_owed() -> None:
    db, lanes = scripted()
    a, b = insert(db, "a"), insert(db, "b")
    await settle()
    lanes.release("b")
    await b
    lanes.release("a", ConnectionResetError("gone"))
    try:
        await a
    except ConnectionResetError:
        pass
    await settle()
    assert lanes.calls[-1] == ("job_insert_wake", "wake")  # sent in the background
    lanes.release("wake")
    await settle()


async def test_bursts_of_concurrent_enqueues_all_wake_an_idle_worker(make_app: MakeApp) -> None:
    """End to end: with a 60 s poll, only NOTIFYs can get these jobs run within seconds."""
    producer = await make_app(poll_interval=60, pool_max_size=40)
    worker_app = await make_app(poll_interval=60)

    @producer.job(name="t.wake")
    async def job(n: int) -> None: ...

    @worker_app.job(name="t.wake")
    async def job_w(n: int) -> None: ...

    async def done() -> int:
        return (await producer.get_queue_stats())["done"]

    stop = asyncio.Event()
    worker = asyncio.create_task(worker_app.run_worker(concurrency=10, shutdown_event=stop))
    try:
        await job.enqueue(n=-1)  # type: ignore[attr-defined]
        await wait_for(lambda: _eq(done, 1), timeout=10, message="the first job")
        total = 1

        async def in_sequence(count: int) -> None:
            for i in range(count):
                await job.enqueue(n=i)  # type: ignore[attr-defined]

        async def all_at_once(count: int) -> None:
            await asyncio.gather(*(job.enqueue(n=i) for i in range(count)))  # type: ignore[attr-defined]

        for burst in range(6):
            per = 3 + burst * 5  # bursts of different shapes: 20 producers, in turn
            shape = in_sequence if burst % 2 else all_at_once
            await asyncio.gather(*(shape(per) for _ in range(20)))
            total += 20 * per
            await wait_for(
                lambda t=total: _eq(done, t), timeout=10, message=f"burst {burst} to run"
            )
    finally:
        stop.set()
        await asyncio.wait_for(worker, 15)


async def _eq(count: Callable[[], Awaitable[int]], expected: int) -> bool:
    return await count() == expected
