"""Workflow fan-out/fan-in: 1 root -> N children -> 1 join, drained by one `soniq worker`.

Figures: the time to enqueue the whole workflow (one statement), the time from the root's
end to the last child's start (the release of N children by the root's outcome, then their
claims), and the time from the last child's end to the join's start (the fan-in release).
All times are the database's own timestamps (finished_at, started_at) of the same server.
"""

from __future__ import annotations

import asyncio
import time

import asyncpg

from benchmarks.common import Result, drop_schema
from benchmarks.drain import WorkerProcess
from soniq import Soniq

SCHEMA = "bench_workflows"


async def fan_out_fan_in(url: str, children: int = 1000) -> Result:
    await drop_schema(url, SCHEMA)
    app = Soniq(database_url=url, schema=SCHEMA, enqueue_validation="none")
    await app.setup()
    worker = WorkerProcess(url, SCHEMA)
    conn = await asyncpg.connect(url)
    try:
        wf = app.workflow(name="bench")
        root = wf.add("bench.noop", name="root")
        kids = [wf.add("bench.noop", name=f"c{i}", after=[root], n=i) for i in range(children)]
        wf.add("bench.noop", name="join", after=kids)
        t0 = time.perf_counter()
        await wf.enqueue()
        enqueue_s = time.perf_counter() - t0
        worker.start()
        deadline = time.monotonic() + 300
        done = f"SELECT status FROM {SCHEMA}.soniq_jobs WHERE workflow_id = $1 AND step = 'join'"
        while await conn.fetchval(done, wf.id) != "done":
            if time.monotonic() > deadline:
                raise RuntimeError(f"the workflow did not end in 300 s; see {worker.log_path}")
            await asyncio.sleep(0.1)
        row = await conn.fetchrow(
            f"""SELECT
                EXTRACT(EPOCH FROM max(started_at) FILTER (WHERE step LIKE 'c%')
                                 - max(finished_at) FILTER (WHERE step = 'root')) AS release,
                EXTRACT(EPOCH FROM max(started_at) FILTER (WHERE step = 'join')
                                 - max(finished_at) FILTER (WHERE step LIKE 'c%')) AS join,
                EXTRACT(EPOCH FROM max(finished_at) - min(started_at)) AS total
            FROM {SCHEMA}.soniq_jobs WHERE workflow_id = $1""",
            wf.id,
        )
    finally:
        worker.stop()
        await conn.close()
        await app.close()
        await drop_schema(url, SCHEMA)
    steps = children + 2
    return Result(
        "soniq.workflow_fan",
        f"workflow 1 -> {children:,} -> 1 (one worker)",
        steps,
        float(row["total"]),
        steps / float(row["total"]),
        extra={
            "enqueue_ms": round(enqueue_s * 1000, 1),
            "root_end_to_last_child_start_ms": round(float(row["release"]) * 1000, 1),
            "last_child_end_to_join_start_ms": round(float(row["join"]) * 1000, 1),
        },
    )
