"""Continuations: enqueue(after=...), continue_with, the release trigger, cascades, bad input."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from soniq import JobContext, JobStatus, Soniq, SoniqError

pytestmark = pytest.mark.asyncio


@pytest.fixture
async def app(make_app: Any) -> Soniq:
    return await make_app(enqueue_validation="none")  # tasks by name, no handlers needed


async def jobs_table(app: Soniq) -> list[Any]:
    async with app.backend.acquire() as conn:
        return list(
            await conn.fetch(
                "SELECT id, status, has_dependents, pending_parents "
                f'FROM "{app.schema}".soniq_jobs ORDER BY id'
            )
        )


async def finish(app: Soniq, job_id: str, status: str, result: Any = None) -> None:
    """Record a parent's outcome as a worker's statement would (the trigger fires on any path)."""
    async with app.backend.acquire() as conn:
        await conn.execute(
            f'UPDATE "{app.schema}".soniq_jobs SET status = $2, result = $3::jsonb, '
            "finished_at = now() WHERE id = $1",
            uuid.UUID(job_id),
            status,
            None if result is None else __import__("json").dumps(result),
        )


async def status(app: Soniq, job_id: str) -> JobStatus:
    job = await app.get_job(job_id)
    assert job is not None
    return job["status"]


async def test_child_waits_then_queued_with_parent_result(app: Soniq) -> None:
    parent = await app.enqueue("work", n=1)
    child = await app.enqueue("next", after=parent)
    job = await app.get_job(child)
    assert job is not None
    assert job["status"] == JobStatus.WAITING
    assert job["after"] == [parent]
    assert (await app.get_queue_stats())["waiting"] == 1
    assert [q["waiting"] for q in await app.list_queues()] == [1]
    await finish(app, parent, "done", {"ok": 7})
    assert await status(app, child) == JobStatus.QUEUED
    async with app.backend.acquire() as conn:
        results = await conn.fetchval(
            f'SELECT parent_results FROM "{app.schema}".soniq_jobs WHERE id = $1', uuid.UUID(child)
        )
    assert results == {parent: {"ok": 7}}


async def test_parent_already_ended_is_handled_at_once(app: Soniq) -> None:
    done, dead, cancelled = [await app.enqueue("p") for _ in range(3)]
    await finish(app, done, "done", 1)
    await finish(app, dead, "dead_letter")
    assert await app.cancel_job(cancelled)
    assert await status(app, await app.enqueue("c", after=[done])) == JobStatus.QUEUED
    j1 = await app.get_job(await app.enqueue("c", after=[done, dead]))
    assert j1 is not None and (j1["status"], j1["cancel_reason"]) == ("cancelled", "parent_failed")
    j2 = await app.get_job(await app.continue_with(cancelled, "c"))
    assert j2 is not None
    assert (j2["status"], j2["cancel_reason"]) == ("cancelled", "parent_cancelled")


async def test_two_parents_fan_in(app: Soniq) -> None:
    a, b = await app.enqueue("p"), await app.enqueue("p")
    child = await app.enqueue("join", after=[a, b])
    await finish(app, a, "done", "A")
    assert await status(app, child) == JobStatus.WAITING
    await finish(app, b, "done", "B")
    assert await status(app, child) == JobStatus.QUEUED


async def test_retry_keeps_children_waiting(app: Soniq) -> None:
    parent = await app.enqueue("p")
    child = await app.enqueue("c", after=parent)
    async with app.backend.acquire() as conn:  # a failed attempt puts the parent back to queued
        await conn.execute(
            f"UPDATE \"{app.schema}\".soniq_jobs SET status = 'processing' WHERE id = $1",
            uuid.UUID(parent),
        )
        await conn.execute(
            f"UPDATE \"{app.schema}\".soniq_jobs SET status = 'queued' WHERE id = $1",
            uuid.UUID(parent),
        )
    assert await status(app, child) == JobStatus.WAITING


async def test_chain_of_50_cascades_and_retry_does_not_revive(app: Soniq) -> None:
    ids = [await app.enqueue("p")]
    for _ in range(50):
        ids.append(await app.enqueue("c", after=ids[-1]))
    await finish(app, ids[0], "dead_letter")
    for jid in ids[1:]:
        job = await app.get_job(jid)
        assert job is not None
        assert (job["status"], job["cancel_reason"]) == ("cancelled", "parent_failed")
    assert await app.retry_job(ids[0])
    assert await status(app, ids[1]) == JobStatus.CANCELLED


async def test_fan_out_of_1000_cancelled_by_parent_cancel(app: Soniq) -> None:
    root = await app.enqueue("p")
    wf = app.workflow()
    for i in range(1000):
        wf.add("c", name=f"c{i}", after=[root])
    await wf.enqueue()
    assert (await app.get_queue_stats())["waiting"] == 1000
    assert await app.cancel_job(root)
    stats = await app.get_queue_stats()
    assert stats["waiting"] == 0 and stats["cancelled"] == 1001
    async with app.backend.acquire() as conn:
        reasons = await conn.fetch(
            f'SELECT DISTINCT cancel_reason FROM "{app.schema}".soniq_jobs WHERE id <> $1',
            uuid.UUID(root),
        )
    assert [r[0] for r in reasons] == ["parent_cancelled"]


async def test_deleted_parent_cancels_children(app: Soniq) -> None:
    parent = await app.enqueue("p")
    child = await app.enqueue("c", after=parent)
    assert await app.delete_job(parent)
    assert await status(app, child) == JobStatus.CANCELLED


@pytest.mark.parametrize(
    "after",
    [
        "not-a-uuid",
        ["0190f6f0-0000-7000-8000-000000000000"],  # well formed, no such job
        [str(uuid.uuid4()) for _ in range(1001)],
        [],
        42,
    ],
)
async def test_bad_parents_write_nothing(app: Soniq, after: Any) -> None:
    parent = await app.enqueue("p")
    before = await jobs_table(app)
    with pytest.raises(SoniqError) as err:
        await app.enqueue(
            "c",
            after=[parent, *after]
            if isinstance(after, list) and after and len(after) == 1
            else after,
        )
    assert err.value.error_code == "SONIQ_ENQUEUE_INVALID"
    assert await jobs_table(app) == before


async def test_parent_results_reach_the_handler(app: Soniq) -> None:
    seen: dict[str, Any] = {}

    @app.job(name="make")
    async def make(n: int) -> int:
        return n * 10

    @app.job(name="sum_up")
    async def sum_up(ctx: JobContext) -> int:
        seen.update(ctx.parent_results)
        return sum(ctx.parent_results.values())

    a, b = await app.enqueue(make, n=1), await app.enqueue(make, n=2)
    c = await app.enqueue(sum_up, after=[a, b])
    await app.run_worker(run_once=True)
    assert seen == {a: 10, b: 20}
    assert await app.get_result(c) == 30


async def test_snoozed_and_retried_parent_keeps_child_waiting(app: Soniq) -> None:
    from soniq import Snooze

    seen: list[str] = []
    child_id: list[str] = []

    @app.job(name="moody", retries=2, retry_delay=0)
    async def moody(ctx: JobContext) -> Snooze | str:
        job = await app.get_job(child_id[0])
        seen.append(str(job["status"]) if job else "?")
        if len(seen) == 1:
            return Snooze(0)  # back to queued, no attempt spent
        if len(seen) == 2:
            raise RuntimeError("fails once")  # back to queued for a retry
        return "finally"

    @app.job(name="after_moody")
    async def after_moody(ctx: JobContext) -> dict[str, Any]:
        return ctx.parent_results

    parent = await app.enqueue(moody)
    child_id.append(await app.enqueue(after_moody, after=parent))
    await app.run_worker(run_once=True, queues=["default"])
    assert seen == ["waiting", "waiting", "waiting"]
    assert await app.get_result(parent) == "finally"
    assert await app.get_result(child_id[0]) == {parent: "finally"}


async def test_enqueue_racing_the_parents_end_never_strands_the_child(app: Soniq) -> None:
    """Both orders of the race: the child's statement and the parent's outcome serialise on
    the parent's row, and the later one sees the earlier one's commit."""
    import asyncio

    table = f'"{app.schema}".soniq_jobs'
    db = await app.database()
    # 1. the parent's outcome is open when the child is enqueued
    parent = await app.enqueue("p")
    async with db.acquire() as c1:
        tx = c1.transaction()
        await tx.start()
        await c1.execute(f"UPDATE {table} SET status = 'done' WHERE id = $1", uuid.UUID(parent))
        child = asyncio.ensure_future(app.enqueue("c", after=parent))
        await asyncio.sleep(0.2)
        assert not child.done()  # waits on the parent's row
        await tx.commit()
        assert await status(app, await asyncio.wait_for(child, 10)) == JobStatus.QUEUED
    # 2. the child's enqueue is open (caller's transaction) when the parent ends
    parent = await app.enqueue("p")
    async with db.acquire() as c1, db.acquire() as c2:
        tx = c1.transaction()
        await tx.start()
        child_id = await app.enqueue("c", after=parent, connection=c1)
        ending = asyncio.ensure_future(
            c2.execute(f"UPDATE {table} SET status = 'done' WHERE id = $1", uuid.UUID(parent))
        )
        await asyncio.sleep(0.2)
        assert not ending.done()
        await tx.commit()
        await asyncio.wait_for(ending, 10)
    assert await status(app, child_id) == JobStatus.QUEUED


async def test_pruning_a_finished_child_drops_its_edges(app: Soniq) -> None:
    from soniq import maintenance

    parent = await app.enqueue("p")
    child = await app.enqueue("c", after=parent)
    await finish(app, parent, "done", 1)
    await finish(app, child, "done", 2)
    app.settings.result_ttl = 0
    assert (await maintenance.prune(app))[0] == 2
    async with app.backend.acquire() as conn:
        edges = await conn.fetchval(f'SELECT count(*) FROM "{app.schema}".soniq_job_deps')
    assert edges == 0
