"""Handlers for the CLI tests (imported via SONIQ_JOBS_MODULES=cli_jobs; configured by env)."""

from __future__ import annotations

import asyncio
import logging

from soniq import Soniq

app = Soniq()
log = logging.getLogger("cli_jobs")


@app.job(name="cli.add")
async def add(x: int, y: int) -> int:
    log.info("adding %s and %s", x, y)
    return x + y


@app.job(name="cli.fail", queue="critical", retries=1)
async def fail(message: str = "boom") -> None:
    raise RuntimeError(message)


@app.job(name="cli.slow")
async def slow(seconds: float = 0.01) -> None:
    await asyncio.sleep(seconds)


@app.job(name="cli.email", queue="emails", retries=5, timeout=30, priority=10)
def send_email(to: str) -> str:
    return f"sent to {to}"


@app.periodic(every=3600, name="cli.hourly")
async def hourly() -> None:
    return None
