"""Two Soniq instances in one jobs module: one `soniq worker` process runs both."""

from __future__ import annotations

import asyncio

from soniq import JobContext, Soniq

app_a = Soniq(queues=["a"])
app_b = Soniq(queues=["b"])


@app_a.job(name="two.sleep_a", queue="a")
async def sleep_a(ctx: JobContext, seconds: float) -> None:
    await asyncio.sleep(seconds)


@app_b.job(name="two.sleep_b", queue="b")
async def sleep_b(ctx: JobContext, seconds: float) -> None:
    await asyncio.sleep(seconds)
