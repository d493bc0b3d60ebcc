"""Handlers for the worker-process tests: each run is recorded in the test's schema."""

from __future__ import annotations

import asyncio
import os

from soniq import JobContext, Soniq

app = Soniq()  # SONIQ_DATABASE_URL / SONIQ_SCHEMA come from the test's environment

_in_flight = 0

RUNS_TABLE = """
CREATE TABLE IF NOT EXISTS {schema}.test_runs (
    job_id uuid NOT NULL, pid integer NOT NULL, attempt integer NOT NULL,
    in_flight integer NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp()
)
"""


async def _record(ctx: JobContext) -> None:
    async with app.backend.acquire() as conn:
        await conn.execute(
            f'INSERT INTO "{app.schema}".test_runs (job_id, pid, attempt, in_flight) '
            "VALUES ($1, $2, $3, $4)",
            ctx.job_id,
            os.getpid(),
            ctx.attempt,
            _in_flight,
        )


@app.job(name="record", retries=30, retry_delay=0.2)
async def record(ctx: JobContext, delay: float = 0.0) -> None:
    """Record the run (with how many jobs this process was running), then wait ``delay``."""
    global _in_flight
    _in_flight += 1
    try:
        await _record(ctx)
        if delay:
            await asyncio.sleep(delay)
    finally:
        _in_flight -= 1


@app.job(name="hang_first", retries=3)
async def hang_first(ctx: JobContext, seconds: float = 60.0) -> str:
    """The first attempt records itself and hangs; later attempts finish at once."""
    await _record(ctx)
    if ctx.attempt == 1:
        await asyncio.sleep(seconds)
    return f"attempt {ctx.attempt}"


@app.job(name="sleeper", retries=3)
async def sleeper(ctx: JobContext, seconds: float) -> str:
    await _record(ctx)
    await asyncio.sleep(seconds)
    return "slept"


@app.job(name="kills_process", retries=1)
async def kills_process(ctx: JobContext) -> None:
    """A handler that kills its own process, every attempt."""
    await _record(ctx)
    os._exit(9)


@app.job(name="finish_then_die", retries=2)
async def finish_then_die(ctx: JobContext) -> str:
    """Finishes normally; on attempt 1 an after_job hook then kills the process before the
    outcome reaches the database (the window between running a job and recording it)."""
    await _record(ctx)
    return f"finished attempt {ctx.attempt}"


@app.after_job
async def _die_after_first_finish(ctx: JobContext, result: object) -> None:
    if ctx.job_name == "finish_then_die" and ctx.attempt == 1:
        os.kill(os.getpid(), 9)
