"""A jobs module shared by the integration tests' processes (Django, FastAPI, OTel):
the app reads SONIQ_DATABASE_URL and SONIQ_SCHEMA from the environment."""

from __future__ import annotations

from soniq import Soniq

app = Soniq()


@app.job(name="ship")
async def ship(order_id: int) -> str:
    return f"shipped {order_id}"


@app.job(name="flaky", retries=1)
async def flaky(order_id: int) -> None:
    raise ValueError(f"flaky {order_id}")


@app.job(name="slow")
async def slow(seconds: float) -> str:
    import asyncio

    await asyncio.sleep(seconds)
    return "finished"
