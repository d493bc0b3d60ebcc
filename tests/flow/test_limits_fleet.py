"""Concurrency limits across real worker processes (the issue's proof tests)."""

from __future__ import annotations

import signal
from typing import Any

from soniq import Soniq
from tests.conftest import wait_for
from tests.flow.conftest import start_worker
from tests.process.test_worker_process import WorkerProcess

# A long poll: held jobs must be started by the finishing worker's NOTIFY, not by polling.
SLOW_POLL = {"SONIQ_POLL_INTERVAL": "30"}


async def _done(monitor: Any, app: Soniq, n: int) -> bool:
    sql = f"SELECT count(*) FROM \"{app.schema}\".soniq_jobs WHERE status = 'done'"
    return int(await monitor.fetchval(sql)) == n


async def _max_overlap(monitor: Any, app: Soniq, by_key: bool) -> dict[str | None, int]:
    """Highest number of runs in progress at once (from the handlers' start/end records),
    overall or per key."""
    rows = await monitor.fetch(f'SELECT key, started_at, ended_at FROM "{app.schema}".flow_runs')
    events: list[tuple[Any, int, str | None]] = []
    for r in rows:
        k = r["key"] if by_key else None
        events += [(r["started_at"], 1, k), (r["ended_at"], -1, k)]
    events.sort(key=lambda e: (e[0], e[1]))  # an end at the same instant counts first
    now: dict[str | None, int] = {}
    peak: dict[str | None, int] = {}
    for _, step, k in events:
        now[k] = now.get(k, 0) + step
        peak[k] = max(peak.get(k, 0), now[k])
    return peak


async def _check_once(monitor: Any, app: Soniq, n: int) -> None:
    rows = await monitor.fetch(f'SELECT job_id, ended_at FROM "{app.schema}".flow_runs')
    assert len(rows) == n and len({r["job_id"] for r in rows}) == n  # none twice
    assert all(r["ended_at"] is not None for r in rows)


async def test_max_concurrency_holds_across_four_workers(
    flow_app: Soniq, flow_workers: list[WorkerProcess], cli_env: dict[str, str], monitor: Any
) -> None:
    app = flow_app
    await app.enqueue_many("capped", [{"delay": 0.02} for _ in range(400)])
    for _ in range(4):
        start_worker(flow_workers, cli_env, "--concurrency", "10", **SLOW_POLL)
    # ~7 s alone (PostgreSQL 15 over TCP and 18); inside pytest-timeout's 120 s so that a
    # stall fails here, with its message
    await wait_for(lambda: _done(monitor, app, 400), timeout=90, message="400 jobs done")
    await _check_once(monitor, app, 400)
    peak = await _max_overlap(monitor, app, by_key=False)
    print(f"max_concurrency=3: measured peak {peak[None]}")
    assert peak[None] == 3
    limits = await (await app.database()).limit_list()
    assert [(r["max"], r["running"]) for r in limits] == [(3, 0)]


async def test_per_key_lanes_across_four_workers(
    flow_app: Soniq, flow_workers: list[WorkerProcess], cli_env: dict[str, str], monitor: Any
) -> None:
    app = flow_app
    for k in range(20):
        key = f"tenant-{k:02d}"
        await app.enqueue_many(
            "lane", [{"key": key, "delay": 0.02} for _ in range(20)], concurrency_key=key
        )
    for _ in range(4):
        start_worker(flow_workers, cli_env, "--concurrency", "10", **SLOW_POLL)
    await wait_for(lambda: _done(monitor, app, 400), timeout=90, message="400 jobs done")
    await _check_once(monitor, app, 400)
    per_key = await _max_overlap(monitor, app, by_key=True)
    overall = await _max_overlap(monitor, app, by_key=False)
    print(f"per key=1 over 20 keys: per-key peak {max(per_key.values())}, overall {overall}")
    assert set(per_key.values()) == {1} and len(per_key) == 20
    assert overall[None] > 1  # keys progress in parallel


async def test_slots_of_a_killed_worker_are_given_back_by_rescue(
    flow_app: Soniq, flow_workers: list[WorkerProcess], cli_env: dict[str, str], monitor: Any
) -> None:
    app = flow_app
    await app.enqueue_many("capped_hang", [{"seconds": 60} for _ in range(2)])
    victim = start_worker(flow_workers, cli_env, "--concurrency", "4")
    db = await app.database()

    async def holding() -> bool:
        return [r["running"] for r in await db.limit_list()] == [2]

    await wait_for(holding, timeout=30, message="the worker holds both slots")
    await app.enqueue_many("capped_hang", [{"seconds": 0} for _ in range(3)])  # held back
    victim.signal(signal.SIGKILL)
    await victim.wait(10)
    start_worker(flow_workers, cli_env, "--concurrency", "4")  # its heartbeat rescues
    await wait_for(lambda: _done(monitor, app, 5), timeout=60, message="all 5 done after rescue")
    assert [r["running"] for r in await db.limit_list()] == [0]
