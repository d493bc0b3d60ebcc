"""Tasks with every kind of flow-control limit, for the ``soniq tasks`` tests."""

from __future__ import annotations

from datetime import timedelta

from soniq import RateLimit, Soniq

app = Soniq()  # SONIQ_DATABASE_URL / SONIQ_SCHEMA come from the test's environment

PAYMENTS = RateLimit(100, 60, name="payments-api")  # one budget, shared by two tasks


@app.job(
    name="pay.charge",
    max_concurrency=3,
    max_concurrency_per_key=1,
    rate_limit=[PAYMENTS, RateLimit(5, 1)],
    execution_window="* 9-17 * * 1-5",
    timezone="Europe/Berlin",
)
async def charge(order: int) -> None: ...


@app.job(name="pay.refund", rate_limit=PAYMENTS)
async def refund(order: int) -> None: ...


@app.job(name="pay.report", rate_limit=RateLimit(2, timedelta(minutes=5)))
async def report() -> None: ...


@app.periodic(
    cron="0 8 * * *",
    timezone="America/New_York",
    name="pay.nightly",
    max_concurrency=1,
    execution_window="* 6-22 * * *",
)
async def settle() -> None: ...


@app.job(name="pay.plain")
async def plain() -> None: ...
