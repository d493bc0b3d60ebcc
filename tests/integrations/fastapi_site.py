"""A FastAPI service with an in-process soniq worker (run under uvicorn by the tests)."""

from __future__ import annotations

from fastapi import FastAPI

from soniq.contrib.fastapi import lifespan
from tests.integrations.jobs_app import app, ship, slow

web = FastAPI(lifespan=lifespan(app, worker=True, concurrency=2))


@web.post("/orders/{n}")
async def place_order(n: int) -> dict[str, str]:
    return {"job_id": await ship.enqueue(order_id=n)}


@web.post("/slow")
async def start_slow(seconds: float = 1.0) -> dict[str, str]:
    return {"job_id": await slow.enqueue(seconds=seconds)}
