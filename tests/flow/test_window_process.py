"""An execution window with a real worker process: closed, jobs wait (queued, no attempt
spent); at the minute it opens, the worker wakes by itself (the poll is 30 s) and runs them."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

from soniq import Soniq
from tests.conftest import wait_for
from tests.flow.conftest import start_worker
from tests.process.test_worker_process import WorkerProcess

ZONE = "Asia/Kolkata"  # UTC+05:30: the window is read on this zone's wall clock


async def test_jobs_wait_for_the_window_then_run_when_it_opens(
    flow_app: Soniq, flow_workers: list[WorkerProcess], cli_env: dict[str, str], monitor: Any
) -> None:
    app = flow_app
    now = datetime.now(timezone.utc)
    opens = (now + timedelta(minutes=1)).replace(second=0, microsecond=0)
    if (opens - now).total_seconds() < 8:  # leave time to see the jobs wait
        opens += timedelta(minutes=1)
    local = opens.astimezone(ZoneInfo(ZONE))
    window = f"{local.minute} {local.hour} * * *"  # that one minute, on Kolkata's clock
    ids = await app.enqueue_many("windowed", [{} for _ in range(5)])
    start_worker(
        flow_workers, cli_env, "--concurrency", "4",
        SONIQ_POLL_INTERVAL="30", FLOW_TEST_WINDOW=window, FLOW_TEST_TZ=ZONE,
    )  # fmt: skip

    async def registered() -> bool:
        return len(await app.list_workers()) == 1

    await wait_for(registered, timeout=30, message="the worker registered")
    if (opens - datetime.now(timezone.utc)).total_seconds() > 3:
        # the worker is up and claiming; the window is still closed: nothing starts
        await app.enqueue("tick", delay=0.0)  # a plain job runs meanwhile (and wakes it)
        await wait_for(
            lambda: _count(monitor, app, "done"), timeout=10, message="the plain job ran"
        )
        for job_id in ids:
            job = await app.get_job(job_id)
            assert job is not None and job["status"] == "queued" and job["attempts"] == 0
    await wait_for(
        lambda: _count(monitor, app, "done", 6),
        timeout=(opens - datetime.now(timezone.utc)).total_seconds() + 20,
        message="the windowed jobs ran once the window opened",
    )
    starts = await monitor.fetch(
        f'SELECT r.started_at FROM "{app.schema}".flow_runs r '
        f"JOIN \"{app.schema}\".soniq_jobs j ON j.id = r.job_id WHERE j.job_name = 'windowed'"
    )
    first = min(r["started_at"] for r in starts)
    late = (first - opens).total_seconds()
    print(f"window {window!r} in {ZONE} opened at {opens:%H:%M:%S} UTC; first start +{late:.2f} s")
    assert len(starts) == 5
    assert all(r["started_at"] >= opens for r in starts)  # none before the window
    assert late < 3.0  # woken by its own timer, not by the 30 s poll


async def _count(monitor: Any, app: Soniq, status: str, n: int = 1) -> bool:
    sql = f'SELECT count(*) FROM "{app.schema}".soniq_jobs WHERE status = $1'
    return int(await monitor.fetchval(sql, status)) >= n
