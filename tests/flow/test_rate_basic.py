"""Rate limits, combined limits and windows in one process: bad input, rescue, pruning,
periodic ticks."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from soniq import RateLimit, Soniq, SoniqError
from soniq.maintenance import RATE_ROW_IDLE, prune, rescue_stale
from soniq.outcomes import EMPTY_BATCH
from soniq.scheduler import Scheduler
from tests.conftest import wait_for


async def _rows(app: Soniq) -> dict[tuple[str, str], Any]:
    return {(r["scope"], r["key"]): r for r in await (await app.database()).limit_list()}


async def _done(app: Soniq, n: int) -> bool:
    return int((await app.get_queue_stats())["done"]) >= n


async def _starts(app: Soniq) -> int:
    async with app.backend.acquire() as conn:
        return int(await conn.fetchval(f'SELECT count(*) FROM "{app.schema}".soniq_rate_starts'))


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        ((0, 1), "max must be an integer >= 1"),
        ((-3, 1), "max must be an integer >= 1"),
        ((1.5, 1), "max must be an integer >= 1"),
        ((10, 0), "window must be a number of seconds > 0"),
        ((10, -1), "window must be a number of seconds > 0"),
        ((10, float("nan")), "window must be a number of seconds > 0"),
        ((10, "1"), "window must be a number of seconds > 0"),
        ((10, timedelta(0)), "window must be a number of seconds > 0"),
    ],
)
def test_bad_rate_limits_are_refused(args: tuple[Any, Any], fragment: str) -> None:
    with pytest.raises(SoniqError) as err:
        RateLimit(*args)
    assert err.value.error_code == "SONIQ_SETTINGS_INVALID" and fragment in str(err.value)


def test_a_named_limit_must_mean_the_same_everywhere(app: Soniq) -> None:
    @app.job(name="r.one", rate_limit=RateLimit(10, 1, name="api"))
    async def one() -> None: ...

    with pytest.raises(SoniqError) as err:

        @app.job(name="r.two", rate_limit=RateLimit(20, 1, name="api"))
        async def two() -> None: ...

    assert err.value.error_code == "SONIQ_SETTINGS_INVALID"
    assert "'api'" in err.value.message and "r.one" in err.value.message
    assert "r.two" not in app.tasks

    @app.job(name="r.three", rate_limit=[RateLimit(10, 1, name="api"), RateLimit(100, 60)])
    async def three() -> None: ...  # the same numbers, plus a limit of its own: fine


async def test_rate_limit_key_needs_a_rate_limited_task(app: Soniq) -> None:
    @app.job(name="r.plain")
    async def plain() -> None: ...

    @app.job(name="r.rated", rate_limit=RateLimit(5, 1))
    async def rated() -> None: ...

    for call in (
        app.enqueue("r.plain", rate_limit_key="acme"),
        app.enqueue("r.rated", rate_limit_key=""),
        app.enqueue("r.rated", rate_limit_key=7),  # type: ignore[arg-type]
        app.enqueue_many("r.rated", [{}], rate_limit_key="x" * 201),
    ):
        with pytest.raises(SoniqError) as err:
            await call
        assert err.value.error_code == "SONIQ_ENQUEUE_INVALID"
    assert (await app.get_queue_stats())["total"] == 0  # nothing written


@pytest.mark.parametrize(
    "options",
    [
        {"max_concurrency_per_key": 1},
        {"max_concurrency": 2, "max_concurrency_per_key": 1},
    ],
)
def test_periodic_per_key_limits_are_refused(app: Soniq, options: dict[str, Any]) -> None:
    with pytest.raises(SoniqError) as err:

        @app.periodic(every=60, **options)
        async def tick() -> None: ...

    assert err.value.error_code == "SONIQ_SETTINGS_INVALID"
    assert "concurrency_key" in err.value.message and "tick" not in app.tasks


async def test_a_rate_limit_holds_in_one_worker_and_wakes_it(app: Soniq) -> None:
    starts: list[float] = []

    @app.job(name="r.fast", rate_limit=RateLimit(3, 0.5))
    async def fast() -> None:
        starts.append(asyncio.get_running_loop().time())

    await app.enqueue_many("r.fast", [{} for _ in range(9)])
    t0 = asyncio.get_running_loop().time()
    stop = asyncio.Event()
    worker = asyncio.create_task(app.run_worker(concurrency=10, shutdown_event=stop))
    try:
        await wait_for(lambda: _done(app, 9), timeout=20, message="9 rate-limited jobs done")
    finally:
        stop.set()
        await asyncio.wait_for(worker, 30)
    took = max(starts) - t0
    print(f"RateLimit(3, 0.5): 9 jobs in {took:.2f} s")
    assert 0.95 <= took < 5.0  # three windows of 0.5 s; the poll (1 s) is not what woke it


async def test_rescue_gives_back_every_concurrency_slot_of_a_combined_job(app: Soniq) -> None:
    @app.job(
        name="r.combo", max_concurrency=2, max_concurrency_per_key=1, rate_limit=RateLimit(50, 1)
    )
    async def combo() -> None: ...

    await app.enqueue("r.combo", concurrency_key="acme")
    db = await app.database()
    async with app.backend.acquire() as conn:  # a worker claims it, then dies silently
        await conn.execute(
            f'INSERT INTO "{app.schema}".soniq_workers (id, hostname, pid, concurrency, '
            "heartbeat_at) VALUES ('dead', 'h', 1, 1, now() - interval '1 hour')"
        )
        rows = await db.job_report_and_claim_gated(
            conn, "dead", 1, EMPTY_BATCH, ["key:r.combo"], None, [], [], None
        )
    assert len(rows) == 1
    before = await _rows(app)
    assert before[("key:r.combo", "acme")]["running"] == 1
    assert before[("task:r.combo", "")]["running"] == 1
    assert await _starts(app) == 1
    assert await rescue_stale(app) == 1
    after = await _rows(app)
    assert after[("key:r.combo", "acme")]["running"] == 0
    assert after[("task:r.combo", "")]["running"] == 0
    assert await _starts(app) == 1  # a start stays a start: rate rows are not given back


async def test_idle_rate_rows_are_pruned_and_come_back_when_needed(app: Soniq) -> None:
    @app.job(name="r.pruned", rate_limit=RateLimit(2, 1, name="pruned"))
    async def pruned() -> None: ...

    await app.enqueue("r.pruned")
    await app.run_worker(run_once=True)
    assert await _starts(app) == 1
    await app.enqueue("r.pruned")  # queued while its rate row is about to be pruned
    async with app.backend.acquire() as conn:
        await conn.execute(
            f'UPDATE "{app.schema}".soniq_limits SET used_at = now() - $1::float8 * interval '
            "'2 seconds' WHERE window_ms IS NOT NULL",
            RATE_ROW_IDLE,
        )
    await prune(app)
    assert ("rate:pruned", "") not in await _rows(app) and await _starts(app) == 0
    await app.run_worker(run_once=True)  # the row is created again, empty, on admission
    assert (await app.get_queue_stats())["done"] == 2
    assert (await _rows(app))[("rate:pruned", "")]["running"] == 1


async def test_periodic_ticks_carry_their_task_limits_and_window(app: Soniq) -> None:
    closed = datetime.now(timezone.utc) + timedelta(hours=6)

    @app.periodic(
        every=3600,
        name="r.sched",
        max_concurrency=1,
        execution_window=f"{closed.minute} {closed.hour} * * *",
        timezone="UTC",
    )
    async def scheduled() -> None: ...

    task = scheduled.__soniq_task__  # type: ignore[attr-defined]
    assert task.window is not None and task.window.timezone == "UTC"
    tick = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
    job_id = await Scheduler(app).enqueue_tick("r.sched", tick)
    assert job_id is not None
    job = await app.get_job(job_id)
    assert job is not None
    async with app.backend.acquire() as conn:
        lane = await conn.fetchrow(
            f'SELECT limit_scope, limit_key FROM "{app.schema}".soniq_jobs WHERE id = $1',
            uuid.UUID(str(job["id"])),
        )
    assert tuple(lane) == (f"task:{task.name}", "")
    await app.run_worker(run_once=True)  # its window is closed: it waits, queued
    job = await app.get_job(job_id)
    assert job is not None and job["status"] == "queued" and job["attempts"] == 0
