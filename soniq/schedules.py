"""Periodic schedules: parse cron / every, compute ticks. Pure code, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from soniq.errors import SCHEDULE_INVALID, SoniqError


def every(
    *, seconds: float = 0, minutes: float = 0, hours: float = 0, days: float = 0
) -> timedelta:
    """An interval for ``@app.periodic(every=...)``: ``every(minutes=5)``."""
    interval = timedelta(seconds=seconds, minutes=minutes, hours=hours, days=days)
    if interval.total_seconds() < 1:
        raise SoniqError(SCHEDULE_INVALID, "every(...) must be at least 1 second")
    return interval


def cron(expression: str) -> str:
    """A validated cron expression for ``@app.periodic(cron=...)``."""
    from croniter import croniter

    if not isinstance(expression, str) or not croniter.is_valid(expression):
        raise SoniqError(SCHEDULE_INVALID, f"invalid cron expression {expression!r}")
    return expression


@dataclass(frozen=True)
class Schedule:
    """One periodic schedule."""

    name: str
    job_name: str
    cron: str | None
    every: timedelta | None
    timezone: str
    args: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def create(
        cls, *, name: str, job_name: str, cron: str | None, every: timedelta | float | None,
        timezone: str, args: dict[str, Any],
    ) -> Schedule:
        if (cron is None) == (every is None):
            raise SoniqError(
                SCHEDULE_INVALID, f"schedule {name}: give exactly one of cron= or every="
            )
        interval = None
        if every is not None:
            interval = every if isinstance(every, timedelta) else timedelta(seconds=float(every))
        return cls(name, job_name, cron, interval, timezone, dict(args))

    def next_after(self, after: datetime) -> datetime:
        """The first tick strictly after ``after`` (aware datetimes)."""
        raise NotImplementedError("scheduler work in progress")
