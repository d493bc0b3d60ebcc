"""Drains of limited tasks (flow control), compared with the plain drain of the same run."""

from __future__ import annotations

import statistics
import time

from benchmarks.common import Result, fresh_schema, timed_rate
from benchmarks.drain import CONCURRENCY, drain_filled, drain_plain, fill_plain
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


SCHEMA = "bench_flow"


async def _drain_filled_limited(url: str, n: int, keys: int) -> Result:
    """The limited no-op jobs ``_fill`` queued, drained by one fresh worker process
    (concurrency 10)."""
    seconds = (await drain_filled(url, SCHEMA, n, jobs_module="benchmarks.flow_jobs")).seconds
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


def _median_row(rows: list[Result]) -> Result:
    """The round with the median rate, carrying every round's rate."""
    ordered = sorted(rows, key=lambda r: r.rate or 0.0)
    row = ordered[len(ordered) // 2]
    row.extra["round_rates"] = [round(r.rate or 0) for r in rows]
    if len(rows) > 1:
        row.what += f" (median of {len(rows)} rounds)"
    return row


async def drain_rounds(url: str, n: int, rounds: int) -> tuple[Result, Result, Result, Result]:
    """Each limited drain paired with a plain drain, ``rounds`` times: both of a pair are
    queued first and then drained back to back (which goes first alternates by round), so
    the two meet the same weather on a shared machine. A row's rate is its median round; a
    limited row's ratio is the median of its pairs' ratios."""
    runs: dict[str, list[Result]] = {"plain": [], "fleet": [], "lanes": [], "rated": []}
    pairs: dict[str, list[float]] = {"fleet": [], "lanes": [], "rated": []}
    for r in range(rounds):
        for i, (name, keys) in enumerate((("fleet", 0), ("lanes", 100), ("rated", RATED))):
            await fill_plain(url, n)
            await _fill(url, SCHEMA, n, keys)
            if (r + i) % 2 == 0:
                plain = await drain_plain(url, n)
                limited = await _drain_filled_limited(url, n, keys)
            else:
                limited = await _drain_filled_limited(url, n, keys)
                plain = await drain_plain(url, n)
            plain.key = "soniq.drain(flow ref)"
            runs["plain"].append(plain)
            runs[name].append(limited)
            pairs[name].append((limited.rate or 0) / (plain.rate or 1))
    plain_row = _median_row(runs["plain"])
    out = [plain_row]
    for name in ("fleet", "lanes", "rated"):
        row = _median_row(runs[name])
        row.extra["round_ratios"] = [round(x, 3) for x in pairs[name]]
        row.ceiling = plain_row.key
        row.ratio = statistics.median(pairs[name])
        out.append(row)
    return out[0], out[1], out[2], out[3]
