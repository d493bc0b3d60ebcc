"""Drains of limited tasks (flow control), compared with the plain drain of the same run."""

from __future__ import annotations

import time

from benchmarks.common import Result, fresh_schema, timed_rate
from benchmarks.drain import CONCURRENCY, drain_filled
from benchmarks.flow_jobs import FLEET_MAX, RATE_MAX, register
from soniq import Soniq

RATED = -1  # ``keys`` value: jobs of bench.rated (a rate limit) instead


async def _fill(url: str, schema: str, n: int, keys: int) -> None:
    """``n`` queued jobs: of bench.capped (keys=0), bench.rated (keys=RATED) or of bench.lane
    over ``keys`` keys."""
    await fresh_schema(url, schema)
    app = Soniq(database_url=url, schema=schema)
    register(app)
    try:
        await app.setup()
        if keys <= 0:
            name = "bench.capped" if keys == 0 else "bench.rated"
            for start in range(0, n, 1000):
                batch = [{"n": i} for i in range(start, min(start + 1000, n))]
                await app.enqueue_many(name, batch)
        else:
            per_key = n // keys
            for k in range(keys):
                batch = [{"n": i} for i in range(per_key)]
                await app.enqueue_many("bench.lane", batch, concurrency_key=f"key-{k}")
    finally:
        await app.close()


async def drain_limited(url: str, n: int, keys: int) -> Result:
    """``n`` limited no-op jobs drained by one fresh worker process (concurrency 10)."""
    schema = "bench_flow"
    await _fill(url, schema, n, keys)
    seconds = (await drain_filled(url, schema, n, jobs_module="benchmarks.flow_jobs")).seconds
    if keys == 0:
        key, what = "soniq.drain_max_concurrency", f"max_concurrency={FLEET_MAX}"
    elif keys == RATED:
        key, what = "soniq.drain_rate_limited", f"RateLimit({RATE_MAX:,}, 1) (never full)"
    else:
        key, what = "soniq.drain_per_key", f"max_concurrency_per_key=1 over {keys} keys"
    return Result(
        key,
        f"drain {n:,} no-op jobs, {what}, 1 worker, concurrency {CONCURRENCY}",
        n,
        seconds,
        timed_rate(n, seconds),
        extra={"measured_at": time.time()},
    )
