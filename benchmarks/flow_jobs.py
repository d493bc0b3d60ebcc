"""Limited handlers for the flow-control drains (``SONIQ_JOBS_MODULES=benchmarks.flow_jobs``).

Kept apart from benchmarks.jobs: a worker whose registry has a limited task claims through
the limited statement, and the plain drain must measure the plain one.
"""

from __future__ import annotations

from soniq import RateLimit, Soniq

FLEET_MAX = 10
RATE_MAX = 1_000_000  # per second: never reached, so the drain measures the machinery


def register(app: Soniq) -> None:
    @app.job(name="bench.capped", max_concurrency=FLEET_MAX)
    async def capped(n: int = 0) -> None:
        """A no-op under a fleet-wide limit."""

    @app.job(name="bench.lane", max_concurrency_per_key=1)
    async def lane(n: int = 0) -> None:
        """A no-op, one at a time per key."""

    @app.job(name="bench.rated", rate_limit=RateLimit(RATE_MAX, 1, name="bench"))
    async def rated(n: int = 0) -> None:
        """A no-op under a rate limit it never reaches (each start takes a slot in its row)."""


app = Soniq()
register(app)
