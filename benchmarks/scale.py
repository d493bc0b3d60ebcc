"""Scale-out: the same drain by 1, 2, 4 and 8 worker processes, and many small workers.

Each run fills a fresh schema with no-op jobs, starts the workers, and measures from the
moment the last of them registered to the last job's ``finished_at`` (jobs finished while
workers were still starting are left out of both the count and the time). Every job must be
done exactly once. During the many-workers run, what the workers' sessions wait on in
PostgreSQL is sampled from pg_stat_activity: a lock convoy on the claim would show up as
``Lock`` / ``LWLock`` waits dominating.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import asyncpg

from benchmarks.common import Result, drop_schema, timed_rate
from benchmarks.drain import CONCURRENCY, WorkerProcess, _fill, _verify


async def _sample_waits(url: str, schema: str, seen: Counter[str]) -> None:
    conn = await asyncpg.connect(url)
    try:
        while True:
            rows = await conn.fetch(
                "SELECT state, wait_event_type AS t, wait_event AS e FROM pg_stat_activity "
                "WHERE application_name LIKE $1 AND pid <> pg_backend_pid()",
                f"soniq:{schema}%",
            )
            for r in rows:
                if r["state"] == "active":
                    seen[f"{r['t']}:{r['e']}" if r["e"] else "CPU (no wait)"] += 1
            await asyncio.sleep(0.01)
    finally:
        await conn.close()


async def drain_by(
    url: str, n: int, workers: int, concurrency: int = CONCURRENCY, waits: bool = False
) -> Result:
    """``n`` queued no-op jobs drained by ``workers`` worker processes."""
    schema = f"bench_scale_{workers}x{concurrency}"
    await _fill(url, schema, n)
    # no-op handlers borrow no connection: each worker holds its 3 own (32 workers: 96)
    procs = [
        WorkerProcess(
            url,
            schema,
            concurrency=concurrency,
            tag=f"-{i}",
            extra_env={"SONIQ_POOL_MIN_SIZE": "0"},
        )
        for i in range(workers)
    ]
    conn = await asyncpg.connect(url)
    seen: Counter[str] = Counter()
    sampler = asyncio.create_task(_sample_waits(url, schema, seen)) if waits else None
    try:
        for p in procs:
            p.start()
        deadline = time.monotonic() + 120
        while await conn.fetchval(f"SELECT count(*) FROM {schema}.soniq_workers") < workers:
            for p in procs:
                p.sample()
            if time.monotonic() > deadline:
                raise RuntimeError(f"{workers} workers did not all start within 120 s")
            await asyncio.sleep(0.02)
        all_up = await conn.fetchval(f"SELECT max(started_at) FROM {schema}.soniq_workers")
        while await conn.fetchval(
            f"SELECT count(*) FROM {schema}.soniq_jobs WHERE status IN ('queued', 'processing')"
        ):
            if time.monotonic() > deadline + 600:
                raise RuntimeError(f"the drain by {workers} workers did not end in 600 s")
            await asyncio.sleep(0.25)
        row = await _verify(conn, schema, n)
        measured = await conn.fetchval(
            f"SELECT count(*) FROM {schema}.soniq_jobs WHERE finished_at >= $1", all_up
        )
    finally:
        if sampler is not None:
            sampler.cancel()
            await asyncio.gather(sampler, return_exceptions=True)
        for p in procs:
            p.stop()
        await conn.close()
        await drop_schema(url, schema)
    seconds = (row["last_finished"] - all_up).total_seconds()
    extra: dict[str, Any] = {"measured_jobs": int(measured)}
    if waits:
        total = sum(seen.values()) or 1
        extra["active_session_samples"] = {
            k: f"{100 * v / total:.0f}%" for k, v in seen.most_common(6)
        }
    return Result(
        f"soniq.scale_{workers}x{concurrency}",
        f"drain {n:,} no-op jobs, {workers} worker process(es) x concurrency {concurrency}",
        int(measured),
        seconds,
        timed_rate(int(measured), seconds),
        extra=extra,
    )


async def scale(url: str, n: int, many: tuple[int, int]) -> list[Result]:
    """1, 2, 4 and 8 workers of concurrency 10 (ratios to one worker), then ``many``
    workers x concurrency with the wait events sampled."""
    rows = [await drain_by(url, n, k) for k in (1, 2, 4, 8)]
    base = rows[0].rate or 1.0
    for r in rows:
        r.ceiling = rows[0].key
        r.ratio = (r.rate or 0.0) / base
    rows.append(await drain_by(url, n, many[0], many[1], waits=True))
    rows[-1].ceiling = rows[0].key
    rows[-1].ratio = (rows[-1].rate or 0.0) / base
    return rows
