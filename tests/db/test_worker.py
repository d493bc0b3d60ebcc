"""Worker semantics, in process: order, queues, retries, timeouts, poison handlers, hooks."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import asyncpg
import pytest

from soniq import JobContext, JobStatus, Snooze, Soniq
from tests.conftest import wait_for


async def run_until(app: Soniq, predicate: Any, timeout: float = 20.0, **worker: Any) -> None:
    """Run a worker until ``predicate()`` is truthy (or fail after ``timeout``)."""
    stop = asyncio.Event()
    task = asyncio.create_task(app.run_worker(shutdown_event=stop, **worker))
    try:
        await wait_for(predicate, timeout=timeout)
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


async def status_of(app: Soniq, job_id: str) -> JobStatus:
    job = await app.get_job(job_id)
    assert job is not None
    return job["status"]  # type: ignore[no-any-return]


async def test_priority_then_fifo_by_due_time(app: Soniq) -> None:
    order: list[str] = []

    @app.job(name="rec")
    async def rec(tag: str) -> None:
        order.append(tag)

    await rec.enqueue(tag="p100-first")
    await rec.enqueue(tag="p100-second")
    await app.enqueue(rec, tag="p5", priority=5)
    # due a minute ago: became due before every other priority-100 job
    past = datetime.now(timezone.utc) - timedelta(minutes=1)
    await app.enqueue(rec, tag="p100-due-earlier", scheduled_at=past)
    await app.enqueue(rec, tag="p200", priority=200)
    await app.run_worker(run_once=True, concurrency=1)
    assert order == ["p5", "p100-due-earlier", "p100-first", "p100-second", "p200"]


async def test_worker_takes_only_its_queues(app: Soniq) -> None:
    ran: list[str] = []

    @app.job(name="q.a", queue="a")
    async def in_a() -> None:
        ran.append("a")

    @app.job(name="q.b", queue="b")
    async def in_b() -> None:
        ran.append("b")

    await in_a.enqueue()
    b_id = await in_b.enqueue()
    await app.enqueue(in_b, queue="c")
    await app.run_worker(run_once=True, queues=["a", "c"])
    assert sorted(ran) == ["a", "b"]  # the b job sent to queue c ran, queue b did not
    assert await status_of(app, b_id) is JobStatus.QUEUED


async def test_scheduled_job_not_started_early(app: Soniq) -> None:
    started: dict[str, float] = {}

    @app.job(name="later")
    async def later() -> None:
        started["at"] = time.time()

    t0 = time.time()
    job_id = await app.schedule(later, 1.0)
    await run_until(app, lambda: _done(app, job_id))
    assert started["at"] >= t0 + 1.0 - 0.05  # clock granularity only


async def _done(app: Soniq, job_id: str) -> bool:
    return await status_of(app, job_id) in (JobStatus.DONE, JobStatus.DEAD_LETTER)


async def test_results_and_context(app: Soniq) -> None:
    seen: list[JobContext] = []

    @app.job(name="ctx", retries=2)
    async def ctx_job(x: int, ctx: JobContext) -> dict[str, int]:
        seen.append(ctx)
        return {"double": x * 2}

    job_id = await ctx_job.enqueue(x=21)
    await app.run_worker(run_once=True)
    assert await app.get_result(job_id) == {"double": 42}
    (ctx,) = seen
    assert ctx.job_id == job_id and ctx.job_name == "ctx" and ctx.queue == "default"
    assert ctx.attempt == 1 and ctx.max_attempts == 3
    assert ctx.worker_id and ctx.created_at is not None and ctx.created_at.tzinfo is not None


async def test_sync_handler_runs_in_thread(app: Soniq) -> None:
    main_thread = threading.get_ident()
    threads: list[int] = []

    @app.job(name="sync")
    def sync_job(n: int) -> int:
        threads.append(threading.get_ident())
        return n + 1

    job_id = await sync_job.enqueue(n=1)
    await app.run_worker(run_once=True)
    assert await app.get_result(job_id) == 2
    assert threads and threads[0] != main_thread


async def test_retry_fixed_delay_then_dead_letter(app: Soniq) -> None:
    attempts: list[float] = []

    @app.job(name="flaky", retries=2, retry_delay=0.4)
    async def flaky() -> None:
        attempts.append(time.monotonic())
        raise RuntimeError("nope")

    job_id = await flaky.enqueue()
    await run_until(app, lambda: _done(app, job_id))
    assert len(attempts) == 3
    assert attempts[1] - attempts[0] >= 0.4 - 0.05
    assert attempts[2] - attempts[1] >= 0.4 - 0.05
    job = await app.get_job(job_id)
    assert job is not None
    assert job["status"] is JobStatus.DEAD_LETTER and job["attempts"] == 3
    dead = await app.dead_letter.get_dead_letter_job(job_id)
    assert dead is not None and dead.reason == "max_retries_exceeded"
    assert "nope" in (dead.last_error or "")


async def test_retry_delay_list_and_backoff(app: Soniq) -> None:
    times: dict[str, list[float]] = {"list": [], "backoff": []}

    @app.job(name="listdelay", retries=2, retry_delay=[0.2, 0.6])
    async def list_delay() -> None:
        times["list"].append(time.monotonic())
        raise RuntimeError("x")

    @app.job(name="backoff", retries=2, retry_delay=0.2, retry_backoff=True, retry_jitter=False)
    async def backoff() -> None:
        times["backoff"].append(time.monotonic())
        raise RuntimeError("y")

    a = await list_delay.enqueue()
    b = await backoff.enqueue()
    await run_until(app, lambda: _all_done(app, [a, b]))
    la, lb = times["list"], times["backoff"]
    assert len(la) == 3 and len(lb) == 3
    assert 0.2 - 0.05 <= la[1] - la[0] < 0.6
    assert la[2] - la[1] >= 0.6 - 0.05
    assert lb[1] - lb[0] >= 0.2 - 0.05
    assert lb[2] - lb[1] >= 0.4 - 0.05  # doubled


async def _all_done(app: Soniq, ids: list[str]) -> bool:
    return all([await _done(app, i) for i in ids])


async def test_immediate_retry_within_run_once(app: Soniq) -> None:
    calls: list[int] = []

    @app.job(name="twice", retries=3)
    async def twice(ctx: JobContext) -> str:
        calls.append(ctx.attempt)
        if ctx.attempt < 2:
            raise RuntimeError("first time fails")
        return "ok"

    job_id = await twice.enqueue()
    await app.run_worker(run_once=True)
    assert calls == [1, 2]
    assert await app.get_result(job_id) == "ok"


async def test_snooze_spends_no_attempt(app: Soniq) -> None:
    runs: list[int] = []

    @app.job(name="snoozer", retries=0)
    async def snoozer(ctx: JobContext) -> Any:
        runs.append(ctx.attempt)
        if len(runs) < 3:
            return Snooze(0.1, reason="not yet")
        return "finally"

    job_id = await snoozer.enqueue()
    await run_until(app, lambda: _done(app, job_id))
    assert runs == [1, 1, 1]  # never spent its only attempt
    assert await app.get_result(job_id) == "finally"


async def test_poison_handlers_do_not_stop_healthy_jobs(make_app: Any) -> None:
    app = await make_app(enqueue_validation="none")

    @app.job(name="healthy")
    async def healthy(i: int) -> int:
        return i

    @app.job(name="raises", retries=1)
    async def raises() -> None:
        raise ValueError("bad input")

    @app.job(name="exits", retries=0)
    async def exits() -> None:
        sys.exit(2)

    @app.job(name="sync_exits", retries=0)
    def sync_exits() -> None:
        raise SystemExit(5)

    @app.job(name="base_exc", retries=0)
    async def base_exc() -> None:
        raise KeyboardInterrupt

    @app.job(name="hangs", retries=0, timeout=0.3)
    async def hangs() -> None:
        await asyncio.sleep(60)

    @app.job(name="non_json", retries=0)
    async def non_json() -> object:
        return object()

    healthy_ids = [await healthy.enqueue(i=i) for i in range(30)]
    poison = {
        "raises": await raises.enqueue(),
        "exits": await exits.enqueue(),
        "sync_exits": await sync_exits.enqueue(),
        "base_exc": await base_exc.enqueue(),
        "hangs": await hangs.enqueue(),
        "non_json": await non_json.enqueue(),
        "unknown": await app.enqueue("nobody.handles.this", args={"a": 1}),
    }
    await run_until(app, lambda: _all_done(app, healthy_ids + list(poison.values())))
    for i, job_id in enumerate(healthy_ids):
        assert await app.get_result(job_id) == i
    expected = {
        "raises": "max_retries_exceeded",
        "exits": "max_retries_exceeded",
        "sync_exits": "max_retries_exceeded",
        "base_exc": "max_retries_exceeded",
        "hangs": "timeout",
        "non_json": "max_retries_exceeded",
        "unknown": "job_not_found",
    }
    for name, job_id in poison.items():
        dead = await app.dead_letter.get_dead_letter_job(job_id)
        assert dead is not None, name
        assert dead.reason == expected[name], name
    unknown = await app.dead_letter.get_dead_letter_job(poison["unknown"])
    assert unknown is not None and "not registered" in (unknown.last_error or "")
    raised = await app.get_job(poison["raises"])
    assert raised is not None and raised["attempts"] == 2
    stats = await app.dead_letter.get_dead_letter_stats()
    assert stats.total_count == 7
    assert stats.by_reason == {"max_retries_exceeded": 5, "timeout": 1, "job_not_found": 1}


@pytest.mark.parametrize("with_middleware", [False, True], ids=["plain", "middleware"])
async def test_sync_timeout_not_rerun_while_thread_runs(app: Soniq, with_middleware: bool) -> None:
    """A timed-out thread blocks its job's retry until it ends (middleware wraps sync too)."""
    release = threading.Event()
    running = threading.Event()
    overlaps: list[bool] = []

    if with_middleware:

        @app.middleware
        async def passthrough(ctx: JobContext, call_next: Any) -> Any:
            return await call_next()

    @app.job(name="stuck", retries=1, timeout=0.2)
    def stuck() -> None:
        overlaps.append(running.is_set())
        running.set()
        try:
            release.wait(10)
        finally:
            running.clear()

    job_id = await stuck.enqueue()
    stop = asyncio.Event()
    task = asyncio.create_task(app.run_worker(shutdown_event=stop))
    try:
        await wait_for(lambda: _flag(running), message="thread started")
        await asyncio.sleep(0.6)  # well past the timeout: the job must not start again
        assert await status_of(app, job_id) is JobStatus.PROCESSING
        assert len(overlaps) == 1
        release.set()
        await wait_for(lambda: _attempts_at_least(app, job_id, 2), message="second attempt")
        await wait_for(lambda: _done(app, job_id), message="end state")
    finally:
        release.set()
        stop.set()
        await asyncio.wait_for(task, 15)
    assert overlaps == [False, False]  # the two attempts never ran at once
    job = await app.get_job(job_id)
    assert job is not None  # attempt 1 timed out; attempt 2 found the event set and finished
    assert job["status"] is JobStatus.DONE and job["attempts"] == 2
    assert "timed out" in (job["last_error"] or "")


async def _flag(event: threading.Event) -> bool:
    return event.is_set()


async def _attempts_at_least(app: Soniq, job_id: str, n: int) -> bool:
    job = await app.get_job(job_id)
    return job is not None and job["attempts"] >= n


async def test_concurrency_limit_in_process(app: Soniq) -> None:
    current = 0
    peak = 0

    @app.job(name="slowish")
    async def slowish() -> None:
        nonlocal current, peak
        current += 1
        peak = max(peak, current)
        await asyncio.sleep(0.02)
        current -= 1

    ids = [await slowish.enqueue() for _ in range(40)]
    await app.run_worker(run_once=True, concurrency=3)
    assert peak == 3
    assert all([await status_of(app, i) is JobStatus.DONE for i in ids])


async def test_hooks_and_middleware_order(app: Soniq) -> None:
    events: list[str] = []

    @app.before_job
    async def before(ctx: JobContext) -> None:
        events.append(f"before:{ctx.job_name}")

    @app.after_job
    async def after(ctx: JobContext, result: Any) -> None:
        events.append(f"after:{result}")

    @app.on_error
    async def on_error(ctx: JobContext, exc: BaseException) -> None:
        events.append(f"error:{exc}")

    @app.middleware
    async def outer(ctx: JobContext, call_next: Any) -> Any:
        events.append("outer-in")
        result = await call_next()
        events.append("outer-out")
        return result

    @app.middleware
    async def inner(ctx: JobContext, call_next: Any) -> Any:
        events.append("inner-in")
        result = await call_next()
        events.append("inner-out")
        return result

    @app.job(name="hooked")
    async def hooked() -> str:
        events.append("handler")
        return "r"

    @app.job(name="hooked_fail", retries=0)
    async def hooked_fail() -> None:
        raise RuntimeError("kaput")

    await hooked.enqueue()
    await app.run_worker(run_once=True)
    assert events == [
        "before:hooked",
        "outer-in",
        "inner-in",
        "handler",
        "inner-out",
        "outer-out",
        "after:r",
    ]
    events.clear()
    await hooked_fail.enqueue()
    await app.run_worker(run_once=True)
    assert events[-1] == "error:kaput"


async def test_validate_model_checked_before_run(app: Soniq) -> None:
    from pydantic import BaseModel

    class Args(BaseModel):
        n: int

    got: list[Any] = []

    @app.job(name="validated", validate=Args)
    async def validated(n: int) -> None:
        got.append(n)

    await validated.enqueue(n=3)
    await app.run_worker(run_once=True)
    assert got == [3]


async def test_shutdown_event_lets_in_flight_finish(app: Soniq) -> None:
    started = asyncio.Event()
    finished: list[str] = []

    @app.job(name="slow")
    async def slow() -> None:
        started.set()
        await asyncio.sleep(0.5)
        finished.append("yes")

    job_id = await slow.enqueue()
    stop = asyncio.Event()
    task = asyncio.create_task(app.run_worker(shutdown_event=stop))
    await asyncio.wait_for(started.wait(), 10)
    stop.set()
    await asyncio.wait_for(task, 10)
    assert finished == ["yes"]
    assert await status_of(app, job_id) is JobStatus.DONE


async def test_shutdown_timeout_returns_unfinished_jobs(make_app: Any) -> None:
    app = await make_app(shutdown_timeout=0.3)
    started = asyncio.Event()

    @app.job(name="forever")
    async def forever() -> None:
        started.set()
        await asyncio.sleep(60)

    job_id = await forever.enqueue()
    stop = asyncio.Event()
    task = asyncio.create_task(app.run_worker(shutdown_event=stop))
    await asyncio.wait_for(started.wait(), 10)
    stop.set()
    await asyncio.wait_for(task, 10)
    job = await app.get_job(job_id)
    assert job is not None
    assert job["status"] is JobStatus.QUEUED and job["attempts"] == 0  # attempt refunded


async def test_notify_wakes_idle_worker_fast(make_app: Any) -> None:
    app = await make_app(poll_interval=30)  # polling alone would take 30 s
    done = asyncio.Event()

    @app.job(name="ping")
    async def ping() -> None:
        done.set()

    stop = asyncio.Event()
    task = asyncio.create_task(app.run_worker(shutdown_event=stop))
    try:
        await wait_for(lambda: _listening(app), message="worker LISTEN")
        t0 = time.monotonic()
        await ping.enqueue()
        await asyncio.wait_for(done.wait(), 5)
        assert time.monotonic() - t0 < 2.0
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def _listening(app: Soniq) -> bool:
    channel = f"soniq_{app.schema}"
    async with app.backend.acquire() as conn:
        n = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE query = $1", f'LISTEN "{channel}"'
        )
    return bool(n)


async def test_worker_on_schema_not_set_up_fails_fast(pg_url: str) -> None:
    from soniq import SoniqError

    app = Soniq(database_url=pg_url, schema="t_never_set_up")
    try:
        with pytest.raises(SoniqError) as err:
            await asyncio.wait_for(app.run_worker(run_once=True), 10)
        assert err.value.error_code == "SONIQ_SCHEMA_MISSING"
        assert "soniq setup" in str(err.value)
    finally:
        await app.close()


async def test_heartbeat_survives_a_starved_pool(make_app: Any) -> None:
    """Handlers holding every pool connection must not stop the worker's heartbeat."""
    app = await make_app(pool_min_size=2, pool_max_size=2, heartbeat_interval=0.2)
    holding = 0
    release = asyncio.Event()

    @app.job(name="hog")
    async def hog() -> None:
        nonlocal holding
        async with app.backend.acquire():
            holding += 1
            await release.wait()

    for _ in range(3):  # two hold the pool's two connections, the third waits for one
        await hog.enqueue()
    stop = asyncio.Event()
    task = asyncio.create_task(app.run_worker(shutdown_event=stop, concurrency=3))
    monitor = await asyncpg.connect(app.settings.database_url)
    try:
        await wait_for(lambda: _at_least(lambda: holding, 2), message="pool exhausted")
        first = await _heartbeat_at(monitor, app)
        await wait_for(
            lambda: _later(monitor, app, first), timeout=5, message="heartbeat while starved"
        )
    finally:
        release.set()
        stop.set()
        await asyncio.wait_for(task, 15)
        await monitor.close()


async def _at_least(value: Any, n: int) -> bool:
    return bool(value() >= n)


async def _heartbeat_at(conn: Any, app: Soniq) -> Any:
    return await conn.fetchval(f'SELECT max(heartbeat_at) FROM "{app.schema}".soniq_workers')


async def _later(conn: Any, app: Soniq, first: Any) -> bool:
    return bool(await _heartbeat_at(conn, app) > first)
