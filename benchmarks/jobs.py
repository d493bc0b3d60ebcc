"""Handlers the benchmark worker runs (``SONIQ_JOBS_MODULES=benchmarks.jobs``).

The worker's settings come from its environment; the benchmark process registers the same
handlers on its own instances with ``register``.
"""

from __future__ import annotations

import asyncio
import time

from soniq import Soniq


def register(app: Soniq) -> None:
    """Register the benchmark handlers on ``app``."""

    @app.job(name="bench.noop")
    async def noop(n: int = 0) -> None:
        """Does nothing: the drain measures soniq, not the handler."""

    @app.job(name="bench.stamp")
    async def stamp(t: float) -> float:
        """Returns the wall-clock time at which it started (``t`` is when it was enqueued)."""
        return time.time()

    @app.job(name="bench.hold")
    async def hold(seconds: float) -> float:
        """Sleeps ``seconds``, then returns the wall-clock time at which it ended."""
        await asyncio.sleep(seconds)
        return time.time()


app = Soniq()
register(app)
