"""Handlers for the flow-control process tests: each start and end is recorded in the
test's schema with the database clock."""

from __future__ import annotations

import asyncio
import os

from soniq import JobContext, RateLimit, Soniq

app = Soniq()  # SONIQ_DATABASE_URL / SONIQ_SCHEMA come from the test's environment

RUNS_TABLE = """
CREATE TABLE IF NOT EXISTS {schema}.flow_runs (
    job_id uuid NOT NULL, queue text NOT NULL, key text,
    started_at timestamptz NOT NULL, ended_at timestamptz
)
"""


async def _run(ctx: JobContext, key: str | None, delay: float) -> None:
    table = f'"{app.schema}".flow_runs'
    async with app.backend.acquire() as conn:
        await conn.execute(
            f"INSERT INTO {table} (job_id, queue, key, started_at) "
            "VALUES ($1, $2, $3, clock_timestamp())",
            ctx.job_id, ctx.queue, key,
        )  # fmt: skip
    await asyncio.sleep(delay)
    async with app.backend.acquire() as conn:
        await conn.execute(
            f"UPDATE {table} SET ended_at = clock_timestamp() WHERE job_id = $1", ctx.job_id
        )


@app.job(name="tick")
async def tick(ctx: JobContext, delay: float = 0.02, key: str | None = None) -> None:
    """Record the run's start and end (database clock)."""
    await _run(ctx, key, delay)


@app.job(name="capped", max_concurrency=3, retries=0)
async def capped(ctx: JobContext, delay: float = 0.02) -> None:
    """At most 3 at once across the fleet."""
    await _run(ctx, None, delay)


@app.job(name="lane", max_concurrency_per_key=1, retries=0)
async def lane(ctx: JobContext, key: str, delay: float = 0.02) -> None:
    """One at a time per key."""
    await _run(ctx, key, delay)


@app.job(name="capped_hang", max_concurrency=2, retries=3)
async def capped_hang(ctx: JobContext, seconds: float = 60.0) -> None:
    """First attempt hangs (to be killed), later ones finish."""
    await _run(ctx, None, seconds if ctx.attempt == 1 else 0.0)


# -- rate limits and windows (tests/flow/test_rate_fleet.py, test_window_process.py) --------


@app.job(name="rated", rate_limit=RateLimit(10, 1), retries=0)
async def rated(ctx: JobContext, delay: float = 0.01) -> None:
    """At most 10 starts in any second, fleet-wide."""
    await _run(ctx, None, delay)


@app.job(name="api_a", rate_limit=RateLimit(10, 1, name="api"), retries=0)
async def api_a(ctx: JobContext, delay: float = 0.01) -> None:
    """One budget ("api") shared with api_b."""
    await _run(ctx, "a", delay)


@app.job(name="api_b", rate_limit=RateLimit(10, 1, name="api"), retries=0)
async def api_b(ctx: JobContext, delay: float = 0.01) -> None:
    """One budget ("api") shared with api_a."""
    await _run(ctx, "b", delay)


@app.job(name="rated_key", rate_limit=RateLimit(5, 1), retries=0)
async def rated_key(ctx: JobContext, key: str, delay: float = 0.01) -> None:
    """5 starts per second per rate_limit_key."""
    await _run(ctx, key, delay)


@app.job(name="combo", max_concurrency=3, max_concurrency_per_key=1, retries=0)
async def combo(ctx: JobContext, key: str, delay: float = 0.05) -> None:
    """One at a time per key and at most 3 at once overall."""
    await _run(ctx, key, delay)


# The test sets FLOW_TEST_WINDOW to a minute ahead; the default never opens in a test run.
@app.job(
    name="windowed",
    execution_window=os.environ.get("FLOW_TEST_WINDOW", "0 0 1 1 *"),
    timezone=os.environ.get("FLOW_TEST_TZ", "UTC"),
    retries=0,
)
async def windowed(ctx: JobContext) -> None:
    """Starts only inside its execution window."""
    await _run(ctx, None, 0.0)
