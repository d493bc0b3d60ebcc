"""Handlers for the flow-control process tests: each start and end is recorded in the
test's schema with the database clock."""

from __future__ import annotations

import asyncio

from soniq import JobContext, Soniq

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
