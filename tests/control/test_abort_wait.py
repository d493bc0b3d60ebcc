"""Job control in process on the real database: abort, wait, watch, progress."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from soniq import JobContext, JobStatus, Soniq, SoniqError
from tests.conftest import wait_for


async def worker(app: Soniq, **opts: Any) -> tuple[asyncio.Event, asyncio.Task[None]]:
    stop = asyncio.Event()
    return stop, asyncio.create_task(app.run_worker(shutdown_event=stop, **opts))


async def stop_worker(stop: asyncio.Event, task: asyncio.Task[None]) -> None:
    stop.set()
    await asyncio.wait_for(task, 15)


async def status_is(app: Soniq, job_id: str, status: JobStatus) -> bool:
    job = await app.get_job(job_id)
    return job is not None and job["status"] == status


async def test_abort_cancels_an_async_handler_and_its_finally_runs(make_app: Any) -> None:
    # a slow heartbeat: an abort that arrives in well under its interval came by NOTIFY
    app = await make_app(heartbeat_interval=5, heartbeat_timeout=30)
    started, cleaned = asyncio.Event(), asyncio.Event()

    @app.job(name="slow", retries=3)
    async def slow() -> str:
        started.set()
        try:
            await asyncio.sleep(60)
        finally:
            cleaned.set()
        return "never"

    job_id = await slow.enqueue()
    stop, task = await worker(app)
    try:
        await asyncio.wait_for(started.wait(), 10)
        t0 = time.monotonic()
        assert await app.cancel_job(job_id, abort=True) is True
        job = await app.wait(job_id, timeout=10)
        assert time.monotonic() - t0 < 2.0  # the NOTIFY, not the heartbeat (5 s)
        assert cleaned.is_set()
        assert job["status"] == JobStatus.CANCELLED
        assert job["cancel_reason"] == "aborted"
        assert job["attempts"] == 1  # not retried
    finally:
        await stop_worker(stop, task)
    assert (await app.get_job(job_id))["status"] == JobStatus.CANCELLED  # type: ignore[index]


async def test_abort_of_a_sync_handler_sets_the_flag_and_ends_cancelled(app: Soniq) -> None:
    seen = threading.Event()

    @app.job(name="sync_loop")
    def sync_loop(ctx: JobContext) -> str:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if ctx.cancel_requested:
                seen.set()
                return "stopped politely"  # whatever it returns, the job ends cancelled
            time.sleep(0.01)
        return "ran out"

    job_id = await sync_loop.enqueue()
    stop, task = await worker(app)
    try:
        await wait_for(lambda: status_is(app, job_id, JobStatus.PROCESSING), timeout=10)
        assert await app.cancel_job(job_id, abort=True)
        job = await app.wait(job_id, timeout=10)
        assert seen.is_set()
        assert job["status"] == JobStatus.CANCELLED and job["cancel_reason"] == "aborted"
        assert await app.get_result(job_id) is None
    finally:
        await stop_worker(stop, task)


async def test_abort_without_the_notify_arrives_by_heartbeat(make_app: Any) -> None:
    """The NOTIFY is never sent (the flag is written by hand, as when the notifier was down):
    the heartbeat's re-read delivers the abort."""
    app = await make_app(heartbeat_interval=0.3)
    started = asyncio.Event()

    @app.job(name="slow2")
    async def slow2() -> None:
        started.set()
        await asyncio.sleep(60)

    job_id = await slow2.enqueue()
    stop, task = await worker(app)
    try:
        await asyncio.wait_for(started.wait(), 10)
        async with app.backend.acquire() as conn:
            await conn.execute(
                f'UPDATE "{app.schema}".soniq_jobs SET cancel_requested_at = now() WHERE id = $1',
                __import__("uuid").UUID(job_id),
            )
        job = await app.wait(job_id, timeout=10)
        assert job["status"] == JobStatus.CANCELLED and job["cancel_reason"] == "aborted"
    finally:
        await stop_worker(stop, task)


async def test_abort_states(app: Soniq) -> None:
    @app.job(name="noop")
    async def noop() -> None: ...

    queued = await noop.enqueue()
    assert await app.cancel_job(queued, abort=True) is True  # a queued job is just cancelled
    job = await app.get_job(queued)
    assert job is not None and job["cancel_reason"] == "cancelled"
    assert await app.cancel_job(queued, abort=True) is False  # already ended
    assert await app.cancel_job("not-a-uuid", abort=True) is False
    done = await noop.enqueue()
    await app.run_worker(run_once=True)
    assert await app.cancel_job(done, abort=True) is False
    assert (await app.get_job(done))["status"] == JobStatus.DONE  # type: ignore[index]


async def test_an_end_recorded_before_the_abort_is_kept(app: Soniq) -> None:
    @app.job(name="quick")
    async def quick() -> int:
        return 7

    job_id = await quick.enqueue()
    await app.run_worker(run_once=True)
    assert await app.cancel_job(job_id, abort=True) is False
    assert await app.get_result(job_id) == 7


async def test_wait_returns_at_once_for_an_ended_job_and_errors(app: Soniq) -> None:
    @app.job(name="w")
    async def w() -> int:
        return 3

    job_id = await w.enqueue()
    await app.run_worker(run_once=True)
    job = await app.wait(job_id)
    assert job["status"] == JobStatus.DONE
    for key in ("progress", "progress_message", "tags", "cancel_reason"):
        assert key in job
    assert (job["workflow_id"], job["step"], job["after"]) == (None, None, [])
    with pytest.raises(SoniqError) as err:
        await app.wait("01890000-0000-0000-0000-000000000000")
    assert err.value.error_code == "SONIQ_JOB_NOT_FOUND"
    with pytest.raises(SoniqError) as err:
        await app.wait("nope")
    assert err.value.error_code == "SONIQ_JOB_NOT_FOUND"
    pending = await w.enqueue()
    with pytest.raises(TimeoutError):
        await app.wait(pending, timeout=0.3)
    assert not app._watchers.queues  # a timed-out waiter leaves nothing behind


async def test_a_thousand_waiters_share_one_listen_connection(make_app: Any) -> None:
    producer = await make_app()
    waiter_app = await make_app()

    @producer.job(name="fan")
    async def fan(n: int) -> int:
        return n

    ids = [await fan.enqueue(n=i % 50) for i in range(50)]
    waits = [asyncio.create_task(waiter_app.wait(ids[i % 50], timeout=60)) for i in range(1000)]
    await wait_for(lambda: _all_watched(waiter_app, ids), timeout=30)
    listening = await _listen_count(waiter_app)
    assert listening == 1, listening
    await producer.run_worker(run_once=True, concurrency=10)
    results = await asyncio.gather(*waits)
    assert len(results) == 1000
    assert all(r["status"] == JobStatus.DONE for r in results)
    assert not waiter_app._watchers.queues


async def _all_watched(app: Soniq, ids: list[str]) -> bool:
    return len(app._watchers.queues) == len(ids) and app.notifier._conn is not None


async def _listen_count(app: Soniq) -> int:
    """Sessions whose last statement was LISTEN on this schema's events channel."""
    channel = f"soniq_{app.schema}_events"
    async with app.backend.acquire() as conn:
        n = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE query = $1", f'LISTEN "{channel}"'
        )
        return int(n)


async def test_wait_rereads_after_the_listener_reconnects(app: Soniq) -> None:
    release = asyncio.Event()

    @app.job(name="held")
    async def held() -> str:
        await release.wait()
        return "ok"

    job_id = await held.enqueue()
    stop, task = await worker(app)
    try:
        await wait_for(lambda: status_is(app, job_id, JobStatus.PROCESSING), timeout=10)
        waiter = asyncio.create_task(app.wait(job_id, timeout=30))
        await wait_for(lambda: _all_watched(app, [job_id]), timeout=10)
        # cut the LISTEN connection, then end the job while it is down
        conn = app.notifier._conn
        assert conn is not None
        conn.terminate()
        release.set()
        job = await waiter
        assert job["status"] == JobStatus.DONE
    finally:
        await stop_worker(stop, task)


async def test_progress_is_coalesced_and_the_last_value_lands(app: Soniq) -> None:
    @app.job(name="prog")
    async def prog(ctx: JobContext) -> None:
        for i in range(1, 2001):
            await ctx.set_progress(i / 2000, f"{i}/2000")
            if i % 200 == 0:
                await asyncio.sleep(0.05)
        with pytest.raises(SoniqError) as err:
            await ctx.set_progress(1.5)
        assert err.value.error_code == "SONIQ_PROGRESS_INVALID"

    job_id = await prog.enqueue()
    seen: list[dict[str, Any]] = []
    stop, task = await worker(app)
    try:
        async for job in app.watch(job_id):
            seen.append(job)
    finally:
        await stop_worker(stop, task)
    final = await app.get_job(job_id)
    assert final is not None and final["status"] == JobStatus.DONE
    assert final["progress"] == 1.0 and final["progress_message"] == "2000/2000"
    # 2000 calls; at most ten writes a second (plus the first and the last) became events
    ran = (final["finished_at"] - final["started_at"]).total_seconds()
    assert 2 <= len(seen) <= 10 * ran + 4, (len(seen), ran)
    assert seen[-1]["status"] == JobStatus.DONE


async def test_waiting_on_a_just_enqueued_job_never_hides_it_from_the_claim(
    make_app: Any,
) -> None:
    """The waiter's first read locks the row for a moment; a claim in that moment skips it
    (SKIP LOCKED), so the waiter wakes the workers: no job waits for the next poll."""
    app = await make_app(poll_interval=30)

    @app.job(name="brief")
    async def brief(n: int) -> int:
        await asyncio.sleep(0.01)
        return n

    stop, task = await worker(app)
    try:
        for n in range(40):
            job_id = await brief.enqueue(n=n)
            try:
                job = await app.wait(job_id, timeout=5)  # the poll is 30 s: only pushes count
            except TimeoutError:
                raise AssertionError(f"job {n}: {await app.get_job(job_id)}") from None
            assert job["status"] == JobStatus.DONE
    finally:
        await stop_worker(stop, task)
