"""Periodic jobs: a worker that also runs the scheduler, for a few seconds.

    python examples/periodic.py

In production run ``soniq scheduler`` (any number of them: one leads) next to your
``soniq worker`` processes, or ``soniq worker --with-scheduler`` when one process kind is
enough. Here the same happens in-process with ``run_worker(with_scheduler=True)``.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timezone
from typing import Any
from zoneinfo import ZoneInfo

from soniq import JobContext, JobStatus, Soniq, cron, every

app = Soniq()  # settings come from SONIQ_* environment variables, else the defaults


@app.periodic(every=every(seconds=1), name="periodic.heartbeat")
async def heartbeat(ctx: JobContext) -> str:
    # each firing is its own job; scheduled_at is the tick it belongs to
    assert ctx.scheduled_at is not None
    return f"heartbeat for {ctx.scheduled_at:%H:%M:%S}"


@app.periodic(cron=cron("0 9 * * 1-5"), timezone="Europe/Berlin", name="periodic.standup")
async def standup() -> None:
    print("time for stand-up")


async def main() -> int:
    async with app:
        await app.setup()
        started = datetime.now(timezone.utc)
        stop = asyncio.Event()
        worker = asyncio.create_task(app.run_worker(shutdown_event=stop, with_scheduler=True))
        deadline = time.monotonic() + 20
        task_name = app.schedules["periodic.heartbeat"].job_name  # name= names the schedule
        done: list[dict[str, Any]] = []
        while len(done) < 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            jobs = await app.list_jobs(job_name=task_name, status="done")
            done = [j for j in jobs if j["created_at"] >= started]  # this run's only
        stop.set()
        await worker

        for schedule in await app.list_schedules():
            what = f"cron {schedule['cron']}" if schedule["cron"] else f"every {schedule['every']}s"
            print(
                f"{schedule['name']:<19} {what:<20} {schedule['timezone']:<14} "
                f"next {schedule['next_run_at'].astimezone(ZoneInfo(schedule['timezone'])):%c %Z}"
            )
        for job in sorted(done, key=lambda j: j["scheduled_at"]):
            print(f"{job['status']:<5} {await app.get_result(job['id'])}")
        if len(done) < 3 or any(j["status"] is not JobStatus.DONE for j in done):
            print(f"FAILED: {len(done)} heartbeat(s) ran")
            return 1
    print(f"OK: {len(done)} heartbeats, one a second")
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
