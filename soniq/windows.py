"""Execution windows: ``@app.job(execution_window="* 9-17 * * 1-5", timezone=...)``.

A window is a 5-field cron expression read as a set of wall-clock minutes in ``timezone``:
a job of the task may start at an instant whose local minute matches. Local time is taken
from the instant with the zone's rules, so the window follows DST: ``* 9-17 * * *`` in
``Europe/Berlin`` opens at 09:00 Berlin time in winter and in summer; a local minute that does
not exist (the hour skipped in spring) never opens, and one that happens twice (the hour
repeated in autumn) is open both times. Evaluated by the worker on its clock, before each
claim; a worker wakes by itself when a window of its tasks opens.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, croniter

from soniq.errors import SETTINGS_INVALID, SoniqError

UTC = timezone.utc
_MINUTE = timedelta(minutes=1)
_HORIZON = 2000  # cron matches looked at for the next opening (skipped local minutes aside)


class ExecutionWindow:
    """When jobs of one task may start."""

    def __init__(self, expression: str, tz: str, where: str) -> None:
        if not isinstance(expression, str) or len(expression.split()) != 5:
            raise SoniqError(
                SETTINGS_INVALID,
                f"{where}: execution_window must be a 5-field cron expression (minute hour "
                f'day month weekday), e.g. "* 9-17 * * 1-5" (got {expression!r})',
            )
        self.expression = " ".join(expression.split())
        if not croniter.is_valid(self.expression):
            raise SoniqError(
                SETTINGS_INVALID,
                f"{where}: execution_window {expression!r} is not a valid cron expression; "
                'write e.g. "* 9-17 * * 1-5" (every minute from 09:00 to 17:59, Monday-Friday)',
            )
        if not isinstance(tz, str) or not tz:
            raise SoniqError(SETTINGS_INVALID, f"{where}: timezone must be an IANA name like 'UTC'")
        try:
            self.tz = ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            raise SoniqError(
                SETTINGS_INVALID,
                f"{where}: unknown time zone {tz!r}; use an IANA name such as 'UTC' or "
                "'Europe/Berlin'",
            ) from None
        self.timezone = tz
        if self.next_open(datetime(2000, 1, 1, tzinfo=UTC), horizon=10 * _HORIZON) is None:
            raise SoniqError(
                SETTINGS_INVALID,
                f"{where}: execution_window {expression!r} never matches a minute; "
                "jobs of this task would never start",
            )

    def __repr__(self) -> str:
        return f"ExecutionWindow({self.expression!r}, {self.timezone!r})"

    def is_open(self, at: datetime) -> bool:
        """True if a job may start at the aware instant ``at``."""
        local = at.astimezone(self.tz).replace(tzinfo=None, second=0, microsecond=0)
        return bool(croniter.match(self.expression, local))

    def next_open(self, after: datetime, *, horizon: int = _HORIZON) -> datetime | None:
        """The first instant at or after ``after`` (aware) when the window is open, or None
        if no matching minute comes within ``horizon`` cron matches."""
        if self.is_open(after):
            return after
        here = after.astimezone(self.tz)
        local = here.replace(tzinfo=None)
        # in the first pass of a repeated (autumn) hour, the local minutes of that hour already
        # behind `after` come again later, in the second pass: search from that much earlier
        repeat = timedelta(0)
        if here.fold == 0:
            first = local.replace(tzinfo=self.tz, fold=0).utcoffset() or timedelta(0)
            second = local.replace(tzinfo=self.tz, fold=1).utcoffset() or timedelta(0)
            repeat = max(first - second, timedelta(0))
        it = croniter(self.expression, local - repeat)
        best: datetime | None = None
        for _ in range(horizon):
            try:
                candidate: datetime = it.get_next(datetime)
            except CroniterBadDateError:  # croniter found no match (e.g. "* * 31 2 *")
                return None
            if best is not None and (not repeat or candidate > local + repeat):
                break  # later local minutes only give later instants
            for fold in (0, 1):  # a repeated local time has two instants; a skipped one none
                inst = candidate.replace(tzinfo=self.tz, fold=fold).astimezone(UTC)
                if inst.astimezone(self.tz).replace(tzinfo=None) != candidate:
                    continue
                if inst >= after and (best is None or inst < best):  # compared in UTC
                    best = inst
        return best

    def seconds_until_open(self, now: datetime) -> float | None:
        """0 if open at ``now``, else seconds until it opens (None: not in sight)."""
        t = self.next_open(now)
        return None if t is None else max(0.0, (t - now).total_seconds())
