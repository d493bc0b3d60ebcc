"""Handlers for the job control process tests (a `soniq worker` imports this module)."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid

from soniq import JobContext, Soniq

app = Soniq()  # SONIQ_DATABASE_URL / SONIQ_SCHEMA come from the test's environment

EFFECTS_TABLE = """
CREATE TABLE IF NOT EXISTS {schema}.test_effects (
    job_id uuid NOT NULL, attempt integer NOT NULL, pid integer NOT NULL
)
"""


@app.job(name="complete_then_die", retries=3)
async def complete_then_die(ctx: JobContext) -> str:
    """Insert a row and complete the job in one transaction, then die by SIGKILL at once."""
    async with app.backend.acquire() as conn:
        async with conn.transaction():
            await conn.execute(
                f'INSERT INTO "{app.schema}".test_effects VALUES ($1, $2, $3)',
                uuid.UUID(ctx.job_id),
                ctx.attempt,
                os.getpid(),
            )
            await ctx.complete(conn, {"charged": True})
        os.kill(os.getpid(), signal.SIGKILL)
    return "never returned"


@app.job(name="long_task", retries=3)
async def long_task(ctx: JobContext) -> str:
    await asyncio.sleep(120)
    return "ran to the end"
