"""ctx.complete: the job's done write joins the handler's own transaction."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from soniq import JobContext, JobStatus, Soniq, SoniqError
from tests.conftest import wait_for


async def make_table(app: Soniq) -> None:
    async with app.backend.acquire() as conn:
        await conn.execute(f'CREATE TABLE "{app.schema}".orders (job_id uuid, attempt int)')


async def orders(app: Soniq) -> list[Any]:
    async with app.backend.acquire() as conn:
        return list(await conn.fetch(f'SELECT * FROM "{app.schema}".orders ORDER BY attempt'))


async def test_complete_commits_with_the_handler_writes(app: Soniq) -> None:
    await make_table(app)

    @app.job(name="order")
    async def order(ctx: JobContext) -> str:
        async with app.backend.acquire() as conn, conn.transaction():
            await conn.execute(
                f'INSERT INTO "{app.schema}".orders VALUES ($1, $2)',
                uuid.UUID(ctx.job_id),
                ctx.attempt,
            )
            await ctx.complete(conn, {"order": 1})
        return "ignored"  # what the handler returns after completing is ignored

    job_id = await order.enqueue()
    await app.run_worker(run_once=True)
    job = await app.get_job(job_id)
    assert job is not None and job["status"] == JobStatus.DONE
    assert await app.get_result(job_id) == {"order": 1}
    assert len(await orders(app)) == 1


async def test_a_rolled_back_complete_leaves_the_job_to_its_normal_outcome(app: Soniq) -> None:
    await make_table(app)

    @app.job(name="undo", retries=0)
    async def undo(ctx: JobContext) -> str:
        async with app.backend.acquire() as conn:
            tr = conn.transaction()
            await tr.start()
            await ctx.complete(conn, "from complete")
            await tr.rollback()
        return "from return"

    job_id = await undo.enqueue()
    await app.run_worker(run_once=True)
    assert await app.get_result(job_id) == "from return"


async def test_ownership_lost_before_commit_rolls_the_writes_back(app: Soniq) -> None:
    """The job is taken from this worker (as a rescue that hands it to another worker
    does) between the handler's insert and its commit: complete raises SONIQ_JOB_LOST and
    the insert is rolled back; the later attempt's insert is the only one."""
    await make_table(app)
    inserted, taken = asyncio.Event(), asyncio.Event()
    errors: list[str] = []

    @app.job(name="guarded", retries=3)
    async def guarded(ctx: JobContext) -> str:
        try:
            async with app.backend.acquire() as conn, conn.transaction():
                await conn.execute(
                    f'INSERT INTO "{app.schema}".orders VALUES ($1, $2)',
                    uuid.UUID(ctx.job_id),
                    ctx.attempt,
                )
                if ctx.attempt == 1:
                    inserted.set()
                    await taken.wait()
                await ctx.complete(conn, {"attempt": ctx.attempt})
        except SoniqError as exc:
            errors.append(exc.error_code)
            raise
        return "done"

    job_id = await guarded.enqueue()
    stop = asyncio.Event()
    worker = asyncio.create_task(app.run_worker(shutdown_event=stop))
    try:
        await asyncio.wait_for(inserted.wait(), 10)
        async with app.backend.acquire() as conn:  # rescue + reclaim by another worker
            await conn.execute(
                f'UPDATE "{app.schema}".soniq_jobs SET status = \'queued\', '
                "worker_id = 'another-worker', attempts = attempts WHERE id = $1",
                uuid.UUID(job_id),
            )
        taken.set()

        async def done() -> bool:
            job = await app.get_job(job_id)
            return job is not None and job["status"] == JobStatus.DONE

        await wait_for(done, timeout=20)
    finally:
        stop.set()
        await asyncio.wait_for(worker, 15)
    assert errors == ["SONIQ_JOB_LOST"]
    rows = await orders(app)
    assert [r["attempt"] for r in rows] == [2]  # attempt 1's insert was rolled back
    assert await app.get_result(job_id) == {"attempt": 2}


async def test_an_abort_rolls_back_the_open_transaction(app: Soniq) -> None:
    await make_table(app)
    started, go = asyncio.Event(), asyncio.Event()

    @app.job(name="late_complete_async")
    async def late_complete_async(ctx: JobContext) -> None:
        started.set()
        async with app.backend.acquire() as conn, conn.transaction():
            await conn.execute(
                f'INSERT INTO "{app.schema}".orders VALUES ($1, 1)', uuid.UUID(ctx.job_id)
            )
            await asyncio.shield(go.wait())
            await ctx.complete(conn)

    job_id = await late_complete_async.enqueue()
    stop = asyncio.Event()
    worker = asyncio.create_task(app.run_worker(shutdown_event=stop))
    try:
        await asyncio.wait_for(started.wait(), 10)
        assert await app.cancel_job(job_id, abort=True)
        go.set()
        job = await app.wait(job_id, timeout=10)
    finally:
        stop.set()
        await asyncio.wait_for(worker, 15)
    assert job["status"] == JobStatus.CANCELLED and job["cancel_reason"] == "aborted"
    assert await orders(app) == []
