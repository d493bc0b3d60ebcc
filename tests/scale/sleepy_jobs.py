"""A handler that holds a slot without touching the database (for the connection count)."""

from __future__ import annotations

import asyncio

from soniq import Soniq

app = Soniq()


@app.job(name="sleepy")
async def sleepy(seconds: float) -> None:
    await asyncio.sleep(seconds)
