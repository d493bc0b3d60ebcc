"""Rate limits across real worker processes (the issue's proof tests).

A "start" is the admission of a job by the claim; the handler records its own start (with
the database clock) right after, a few milliseconds later and not always in admission order.
A rate limit counts each start for its window plus a guard (a tenth, at most 50 ms) so that
the handlers' records, checked here in exact windows, hold the limit too; the run's length
shows the rate: 60 starts at 10 per second need 5 s at least, and finish in about 6 s when
nothing waits for a poll.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from soniq import Soniq
from tests.conftest import wait_for
from tests.flow.conftest import start_worker
from tests.process.test_worker_process import WorkerProcess

# A long poll: held jobs must be started by the workers' own timers, not by polling.
SLOW_POLL = {"SONIQ_POLL_INTERVAL": "30"}
SECOND = timedelta(seconds=1)


async def _done(monitor: Any, app: Soniq, n: int) -> bool:
    sql = f"SELECT count(*) FROM \"{app.schema}\".soniq_jobs WHERE status = 'done'"
    return int(await monitor.fetchval(sql)) == n


async def _starts(monitor: Any, app: Soniq) -> list[tuple[Any, str | None]]:
    rows = await monitor.fetch(
        f'SELECT started_at, key FROM "{app.schema}".flow_runs ORDER BY started_at'
    )
    return [(r["started_at"], r["key"]) for r in rows]


def _busiest(starts: list[Any], window: timedelta) -> int:
    """The most starts in any window of length ``window`` (each start opens one)."""
    best = 0
    j = 0
    for i, t in enumerate(starts):
        while starts[j] <= t - window:
            j += 1
        best = max(best, i - j + 1)
    return best


async def test_rate_limit_holds_across_three_workers(
    flow_app: Soniq, flow_workers: list[WorkerProcess], cli_env: dict[str, str], monitor: Any
) -> None:
    app = flow_app
    await app.enqueue_many("rated", [{} for _ in range(60)])
    for _ in range(3):
        start_worker(flow_workers, cli_env, "--concurrency", "10", **SLOW_POLL)
    await wait_for(lambda: _done(monitor, app, 60), timeout=60, message="60 jobs done")
    starts = [t for t, _ in await _starts(monitor, app)]
    assert len(starts) == 60
    span = (starts[-1] - starts[0]).total_seconds()
    busiest = _busiest(starts, SECOND)
    print(f"RateLimit(10, 1): 60 starts over {span:.2f} s; busiest 1 s window: {busiest}")
    assert busiest <= 10
    assert 4.9 <= span <= 9.0  # ~10 per second: not faster, and not waiting for the poll


async def test_named_limit_is_one_budget_for_two_tasks(
    flow_app: Soniq, flow_workers: list[WorkerProcess], cli_env: dict[str, str], monitor: Any
) -> None:
    app = flow_app
    await app.enqueue_many("api_a", [{} for _ in range(20)])
    await app.enqueue_many("api_b", [{} for _ in range(20)])
    for _ in range(2):
        start_worker(flow_workers, cli_env, "--concurrency", "10", **SLOW_POLL)
    await wait_for(lambda: _done(monitor, app, 40), timeout=60, message="40 jobs done")
    runs = await _starts(monitor, app)
    both = [t for t, _ in runs]
    span = (both[-1] - both[0]).total_seconds()
    busiest = _busiest(both, SECOND)
    print(f"named 'api' over two tasks: 40 starts over {span:.2f} s; busiest window {busiest}")
    assert {k for _, k in runs} == {"a", "b"}
    assert busiest <= 10 and span >= 2.9  # one budget of 10/s, not 10/s each


async def test_rate_limit_key_gives_each_key_its_budget(
    flow_app: Soniq, flow_workers: list[WorkerProcess], cli_env: dict[str, str], monitor: Any
) -> None:
    app = flow_app
    for key in ("acme", "globex"):
        await app.enqueue_many("rated_key", [{"key": key} for _ in range(15)], rate_limit_key=key)
    for _ in range(2):
        start_worker(flow_workers, cli_env, "--concurrency", "10", **SLOW_POLL)
    await wait_for(lambda: _done(monitor, app, 30), timeout=60, message="30 jobs done")
    runs = await _starts(monitor, app)
    per_key = {k: _busiest([t for t, kk in runs if kk == k], SECOND) for k in ("acme", "globex")}
    overall = _busiest([t for t, _ in runs], SECOND)
    print(f"RateLimit(5, 1) per key: busiest per key {per_key}, overall {overall}")
    assert max(per_key.values()) <= 5
    assert overall > 5  # the keys' budgets are separate: both run in the same second


async def test_combined_limits_hold_together(
    flow_app: Soniq, flow_workers: list[WorkerProcess], cli_env: dict[str, str], monitor: Any
) -> None:
    from tests.flow.test_limits_fleet import _max_overlap

    app = flow_app
    for k in range(6):
        await app.enqueue_many(
            "combo", [{"key": f"k{k}", "delay": 0.05} for _ in range(10)], concurrency_key=f"k{k}"
        )
    for _ in range(2):
        start_worker(flow_workers, cli_env, "--concurrency", "10", **SLOW_POLL)
    await wait_for(lambda: _done(monitor, app, 60), timeout=90, message="60 jobs done")
    per_key = await _max_overlap(monitor, app, by_key=True)
    overall = await _max_overlap(monitor, app, by_key=False)
    print(f"max_concurrency=3 + per key 1: per-key peak {max(per_key.values())}, overall {overall}")
    assert set(per_key.values()) == {1} and overall[None] == 3
    rows = await (await app.database()).limit_list()
    assert all(r["running"] == 0 for r in rows)
