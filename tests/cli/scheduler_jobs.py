"""A periodic job for the scheduler CLI tests (imported via SONIQ_JOBS_MODULES)."""

from __future__ import annotations

from soniq import JobContext, Soniq

app = Soniq()  # SONIQ_DATABASE_URL / SONIQ_SCHEMA come from the test's environment


@app.periodic(every=1, name="sched.tick")
async def tick(ctx: JobContext) -> str:
    return f"tick at {ctx.scheduled_at.isoformat() if ctx.scheduled_at else '?'}"
