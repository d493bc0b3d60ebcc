"""Handlers for the workflow process tests (a `soniq worker` imports this module)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid

from soniq import JobContext, Soniq

app = Soniq()  # SONIQ_DATABASE_URL / SONIQ_SCHEMA come from the test's environment

EFFECTS_TABLE = """
CREATE TABLE IF NOT EXISTS {schema}.test_effects (
    job_id uuid NOT NULL, attempt integer NOT NULL, pid integer NOT NULL, results jsonb
)
"""


async def _record(ctx: JobContext) -> None:
    import json

    async with app.backend.acquire() as conn:
        await conn.execute(
            f'INSERT INTO "{app.schema}".test_effects VALUES ($1, $2, $3, $4::jsonb)',
            uuid.UUID(ctx.job_id),
            ctx.attempt,
            os.getpid(),
            json.dumps(ctx.parent_results),
        )


@app.job(name="finish_at")
async def finish_at(at: float, value: int) -> int:
    """Return at wall-clock time ``at``, so parents on two workers end together."""
    await asyncio.sleep(max(0.0, at - time.time()))
    return value


@app.job(name="join")
async def join(ctx: JobContext) -> int:
    await _record(ctx)
    return sum(v for v in ctx.parent_results.values() if isinstance(v, int))


@app.job(name="die_first_time", retries=3)
async def die_first_time(ctx: JobContext) -> str:
    """Killed by SIGKILL on its first attempt (the worker dies mid-job); succeeds after."""
    if ctx.attempt == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    return "second time lucky"
