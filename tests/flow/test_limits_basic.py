"""Concurrency limits in one process: admission, release, bad input."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from soniq import RateLimit, Soniq, SoniqError, task_ref


async def _limits(app: Soniq) -> dict[tuple[str, str], tuple[int, int]]:
    rows = await (await app.database()).limit_list()
    return {(r["scope"], r["key"]): (r["max"], r["running"]) for r in rows}


async def test_max_concurrency_holds_in_one_worker_and_frees_slots(app: Soniq) -> None:
    running = 0
    peak = 0

    @app.job(name="lim.one", max_concurrency=2)
    async def one() -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.05)
        running -= 1

    @app.job(name="lim.free")
    async def free() -> None:
        await asyncio.sleep(0.05)

    await app.enqueue_many("lim.one", [{} for _ in range(10)])
    for _ in range(5):
        await app.enqueue("lim.free")
    await app.run_worker(run_once=True, concurrency=8)
    assert peak == 2
    counts = await app.get_queue_stats()
    assert counts["done"] == 15
    assert await _limits(app) == {("task:lim.one", ""): (2, 0)}  # every slot given back


async def test_per_key_needs_a_key_and_limits_each_key(app: Soniq) -> None:
    running: dict[str, int] = {}
    peak: dict[str, int] = {}

    @app.job(name="lim.key", max_concurrency_per_key=1)
    async def per_key(tenant: str) -> None:
        running[tenant] = running.get(tenant, 0) + 1
        peak[tenant] = max(peak.get(tenant, 0), running[tenant])
        await asyncio.sleep(0.03)
        running[tenant] -= 1

    with pytest.raises(SoniqError) as err:
        await app.enqueue("lim.key", tenant="a")
    assert err.value.error_code == "SONIQ_ENQUEUE_INVALID" and "concurrency_key" in str(err.value)
    with pytest.raises(SoniqError):
        await app.enqueue_many("lim.key", [{"tenant": "a"}])
    assert (await app.get_queue_stats())["total"] == 0  # nothing written
    for tenant in ("a", "b", "c"):
        for _ in range(4):
            await app.enqueue("lim.key", tenant=tenant, concurrency_key=tenant)
    await app.enqueue_many("lim.key", [{"tenant": "d"}] * 3, concurrency_key="d")
    await app.run_worker(run_once=True, concurrency=10)
    assert peak == {"a": 1, "b": 1, "c": 1, "d": 1}
    assert (await app.get_queue_stats())["done"] == 15
    assert all(r == 0 for _, r in (await _limits(app)).values())


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"max_concurrency": 0}, "max_concurrency"),
        ({"max_concurrency": "3"}, "max_concurrency"),
        ({"max_concurrency_per_key": -1}, "max_concurrency_per_key"),
        ({"rate_limit": 10}, "RateLimit"),
        ({"rate_limit": [RateLimit(1, 1), RateLimit(1, 1)]}, "twice"),
        ({"execution_window": "* 9-17 * *"}, "5-field"),
        ({"execution_window": "* 25 * * *"}, "not a valid cron"),
        ({"execution_window": "* * 31 2 *"}, "never matches"),
        ({"execution_window": "* * * * *", "timezone": "Mars/Olympus"}, "unknown time zone"),
        ({"timezone": "Nowhere/At_all"}, "unknown time zone"),
    ],
)
def test_bad_limits_are_refused_at_registration(
    app: Soniq, options: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(SoniqError) as err:

        @app.job(name="lim.bad", **options)
        async def bad() -> None: ...

    assert err.value.error_code == "SONIQ_SETTINGS_INVALID" and fragment in str(err.value)
    assert "lim.bad" not in app.tasks


async def test_concurrency_key_on_an_unlimited_task_is_refused(app: Soniq) -> None:
    @app.job(name="lim.none")
    async def none() -> None: ...

    with pytest.raises(SoniqError) as err:
        await app.enqueue("lim.none", concurrency_key="x")
    assert err.value.error_code == "SONIQ_ENQUEUE_INVALID"
    assert (await app.get_queue_stats())["total"] == 0


async def test_limited_jobs_with_tags_or_dedup_keep_their_limit(app: Soniq) -> None:
    @app.job(name="lim.tagged", max_concurrency_per_key=1)
    async def tagged(n: int) -> None: ...

    await app.enqueue("lim.tagged", n=1, concurrency_key="k", tags={"team": "a"})
    await app.enqueue("lim.tagged", n=2, concurrency_key="k", dedup_key="once")
    same = await app.enqueue("lim.tagged", n=3, concurrency_key="k", dedup_key="once")
    async with app.backend.acquire() as conn:
        rows = await conn.fetch(
            f'SELECT limit_scope, limit_key FROM "{app.schema}".soniq_jobs ORDER BY id'
        )
    assert [tuple(r) for r in rows] == [("key:lim.tagged", "k")] * 2
    assert same is not None
    await app.run_worker(run_once=True, concurrency=4)
    assert (await app.get_queue_stats())["done"] == 2


async def test_jobs_of_a_limit_no_longer_declared_are_not_stranded(
    app: Soniq, make_app: Any
) -> None:
    @app.job(name="lim.changed", max_concurrency=1)
    async def before() -> None: ...

    await app.enqueue_many("lim.changed", [{} for _ in range(3)])
    later = await make_app()  # the next deploy: the task lost its limit

    @later.job(name="lim.changed")
    async def after() -> None: ...

    await later.run_worker(run_once=True, concurrency=4)
    assert (await later.get_queue_stats())["done"] == 3


async def test_limited_tasks_refuse_after_and_workflow_steps(app: Soniq) -> None:
    @app.job(name="flow.capped", max_concurrency=2)
    async def capped() -> None: ...

    parent = await app.enqueue(task_ref("flow.other"), args={})
    with pytest.raises(SoniqError) as info:
        await app.enqueue(capped, after=parent)
    assert info.value.error_code == "SONIQ_ENQUEUE_INVALID"
    assert "flow-control limits" in info.value.message
    wf = app.workflow()
    with pytest.raises(SoniqError) as info:
        wf.add(capped)
    assert "flow-control limits" in info.value.message
    assert len(await app.list_jobs()) == 1  # only the parent
