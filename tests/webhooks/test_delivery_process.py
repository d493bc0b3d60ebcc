"""Webhook delivery by real `soniq worker` processes: a worker SIGKILLed mid-delivery, and
backends terminated during a drain (outcome writes that fail are retried; each committed
outcome has exactly one event, delivered)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from soniq import Soniq
from soniq.webhooks import verify
from tests.conftest import wait_for
from tests.process.test_worker_process import WorkerProcess, start
from tests.process.worker_jobs import RUNS_TABLE
from tests.webhooks.receiver import Receiver


@pytest.fixture
async def app(make_app: Any) -> AsyncIterator[Soniq]:
    app = await make_app()
    from tests.process import worker_jobs

    app.tasks["record"] = worker_jobs.app.tasks["record"]
    async with app.backend.acquire() as conn:
        await conn.execute(RUNS_TABLE.format(schema=f'"{app.schema}"'))
    yield app


async def _sql(app: Soniq, sql: str) -> Any:
    async with app.backend.acquire() as conn:
        return await conn.fetchval(sql.replace("{s}", f'"{app.schema}"'))


async def test_worker_killed_mid_delivery_is_rescued_and_delivers(
    app: Soniq, workers: list[WorkerProcess], cli_env: dict[str, str], receiver: Receiver
) -> None:
    hook = await app.webhooks.add(receiver.url, events=["job.succeeded"])
    receiver.holding = True  # the first POST is left hanging
    job_id = await app.enqueue("record", args={})
    victim = start(workers, cli_env, "--concurrency", "2")

    async def held() -> bool:
        return len(receiver.requests) == 1

    await wait_for(held, timeout=30, message="a delivery in flight")
    victim.proc.kill()  # SIGKILL mid-delivery
    await victim.wait(10)
    receiver.holding = False
    start(workers, cli_env, "--concurrency", "2")

    async def delivered() -> bool:
        return len(receiver.requests) >= 2 and bool(await app.webhooks.deliveries())

    await wait_for(delivered, timeout=60, message="the rescued delivery")
    first, second = receiver.requests[:2]
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    body = verify(second.body, second.headers, hook["secret"])
    assert body["type"] == "job.succeeded" and body["data"]["id"] == job_id

    async def recorded() -> Any:  # the outcome is written just after the handler returns
        job = await app.get_job(second.headers["webhook-id"])
        return job if job is not None and job["status"] == "done" else None

    delivery = await wait_for(recorded, timeout=20, message="the delivery job done")
    assert delivery["attempts"] >= 2  # (a loaded machine may rescue the survivor's try too)
    assert "stopped heartbeating" in (delivery["errors"][0]["error"] + delivery["last_error"])
    attempts = await app.webhooks.deliveries()
    assert attempts[0]["attempt"] == delivery["attempts"] and attempts[0]["status_code"] == 200
    assert {r.headers["webhook-id"] for r in receiver.requests} == {first.headers["webhook-id"]}
    # the rescue of a delivery job is no event of its own
    assert (
        await _sql(app, "SELECT count(*) FROM {s}.soniq_jobs WHERE queue = 'soniq.webhooks'") == 1
    )


async def test_terminated_backends_during_drain_each_outcome_one_event(
    app: Soniq,
    workers: list[WorkerProcess],
    cli_env: dict[str, str],
    receiver: Receiver,
    pg_url: str,
) -> None:
    hook = await app.webhooks.add(receiver.url, events=["job.succeeded"])
    total = 600
    ids = await app.enqueue_many("record", [{} for _ in range(total)])
    start(workers, cli_env, "--concurrency", "4")
    monitor = await asyncpg.connect(pg_url)
    done_sql = f"""SELECT count(*) FROM "{app.schema}".soniq_jobs
                   WHERE queue <> 'soniq.webhooks' AND status = 'done'"""
    try:

        async def some_done() -> bool:
            return int(await monitor.fetchval(done_sql)) > 100

        # both waits together stay inside pytest-timeout's 120 s (the test takes ~5 s alone)
        await wait_for(some_done, timeout=30, message="drain under way")
        killed = await monitor.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name LIKE $1",
            f"soniq:{app.schema}%",
        )
        assert killed >= 2
        assert int(await monitor.fetchval(done_sql)) < total, "the fault came too late"

        async def all_received() -> bool:
            return len(set(receiver.ids())) >= total

        await wait_for(all_received, timeout=80, interval=0.2, message="every event received")
        per_job = await monitor.fetch(
            f"""SELECT args->'job'->>'id' AS job_id, count(*) AS n FROM "{app.schema}".soniq_jobs
                WHERE queue = 'soniq.webhooks' GROUP BY 1"""
        )
    finally:
        await monitor.close()
    assert {r["job_id"] for r in per_job} == set(ids)
    assert all(r["n"] == 1 for r in per_job), "an outcome recorded more than one event"
    seen = Counter(receiver.ids())
    duplicates = sum(n - 1 for n in seen.values())
    print(f"terminate: {total} events, {duplicates} duplicate deliveries (at-least-once)")
    jobs = {verify(r.body, r.headers, hook["secret"])["data"]["id"] for r in receiver.requests}
    assert jobs == set(ids)
    await asyncio.sleep(0)
