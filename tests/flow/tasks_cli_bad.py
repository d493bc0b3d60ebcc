"""A jobs module whose two tasks name one rate limit with different numbers (refused)."""

from __future__ import annotations

from soniq import RateLimit, Soniq

app = Soniq()


@app.job(name="bad.first", rate_limit=RateLimit(10, 1, name="shared"))
async def first() -> None: ...


@app.job(name="bad.second", rate_limit=RateLimit(20, 1, name="shared"))
async def second() -> None: ...
