"""Handlers for the browser test's `soniq worker` and `soniq dashboard` processes."""

from __future__ import annotations

import asyncio

from soniq import Soniq

app = Soniq()  # SONIQ_DATABASE_URL / SONIQ_SCHEMA come from the test's environment

RELEASE_TABLE = "CREATE TABLE IF NOT EXISTS {schema}.test_release (key text PRIMARY KEY)"


@app.job(name="dash.ok")
async def ok(n: int) -> dict[str, int]:
    return {"double": n * 2}


@app.job(name="dash.bad", queue="critical", retries=0)
async def bad(text: str) -> None:
    raise RuntimeError(f"bad {text}")


@app.job(name="dash.hold")
async def hold(key: str) -> str:
    """Run until the test inserts ``key`` into test_release (at most 60 s)."""
    for _ in range(1200):
        async with app.backend.acquire() as conn:
            if await conn.fetchval(
                f'SELECT 1 FROM "{app.schema}".test_release WHERE key = $1', key
            ):
                return key
        await asyncio.sleep(0.05)
    raise TimeoutError(f"{key} was never released")


@app.periodic(cron="*/5 * * * *", name="dash.report-every-5-min")
async def report() -> None:
    """A periodic job, for the schedules page."""
