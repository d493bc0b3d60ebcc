"""Periodic schedules: parse ``cron`` / ``every`` and compute tick instants. Pure, no I/O.

Ticks are aware UTC instants, computed the same way by every scheduler process, so the
unique key (schedule name, tick) in the database can stop a tick from firing twice.

- ``every``: ticks are the multiples of the interval since the Unix epoch (UTC), so
  ``every=60`` fires at each full minute and ``every=timedelta(hours=1)`` at each full UTC hour.
  ``timezone`` does not change them; use ``cron`` for wall-clock times.
- ``cron``: evaluated on the wall clock of ``timezone``. A wall-clock time that does not exist
  (the hour skipped in spring) fires once, shifted forward by the gap: 02:30 fires at 03:30.
  A wall-clock time that happens twice (the hour repeated in autumn) fires once, at its first
  occurrence, except in schedules whose hour field is ``*``: those run through every hour of
  real time, so they fire in both occurrences (the rule of Vixie cron and cronie).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from functools import cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from soniq.errors import SCHEDULE_INVALID, SoniqError
from soniq.jobs import dump_json
from soniq.settings import NAME_RE

UTC = timezone.utc
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
# No zone moves its clock by more than _DST_MARGIN at once, nor twice within _STEP.
_DST_MARGIN = timedelta(hours=3)
_STEP = timedelta(hours=6)
_ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}


def every(
    *, seconds: float = 0, minutes: float = 0, hours: float = 0, days: float = 0
) -> timedelta:
    """An interval for ``@app.periodic(every=...)``: ``every(minutes=5)``."""
    interval = timedelta(seconds=seconds, minutes=minutes, hours=hours, days=days)
    if interval.total_seconds() < 1:
        raise SoniqError(SCHEDULE_INVALID, f"every(...) must be at least 1 second, got {interval}")
    return interval


def cron(expression: str) -> str:
    """A validated cron expression for ``@app.periodic(cron=...)``."""
    _parse_cron(expression, "cron(...)")
    return expression


@cache
def _split(expression: str) -> tuple[str, bool, bool]:
    """(normalised expression, has a seconds field, hour field is ``*``)."""
    text = " ".join(expression.split())
    text = _ALIASES.get(text.lower(), text)
    fields = text.split(" ")
    seconds = len(fields) == 6
    hour = fields[2 if seconds else 1] if len(fields) > 2 else ""
    return text, seconds, hour in ("*", "*/1")


def _parse_cron(expression: object, where: str) -> str:
    """The normalised expression, or SoniqError naming ``where``."""
    if not isinstance(expression, str):
        raise SoniqError(
            SCHEDULE_INVALID, f"{where}: cron must be a string, not {type(expression).__name__}"
        )
    text, seconds, _ = _split(expression)
    fields = text.split(" ")
    if len(fields) not in (5, 6):
        raise SoniqError(
            SCHEDULE_INVALID,
            f"{where}: cron {expression!r} has {len(fields)} fields; use 5 "
            "(minute hour day month weekday) or 6 with seconds first "
            "(second minute hour day month weekday)",
        )
    try:
        croniter(text, datetime(2000, 1, 1), second_at_beginning=seconds).get_next(datetime)
    except Exception as exc:  # croniter raises several unrelated types for bad input
        raise SoniqError(
            SCHEDULE_INVALID, f"{where}: invalid cron expression {expression!r}: {exc}"
        ) from None
    return text


def _zone(name: object, where: str) -> ZoneInfo:
    if not isinstance(name, str) or not name:
        raise SoniqError(SCHEDULE_INVALID, f"{where}: timezone must be an IANA name like 'UTC'")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise SoniqError(
            SCHEDULE_INVALID,
            f"{where}: unknown time zone {name!r}; use an IANA name such as 'UTC' or "
            "'Europe/Berlin'",
        ) from None


def _interval(value: object, where: str) -> timedelta:
    if isinstance(value, timedelta):
        interval = value
    elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        interval = timedelta(seconds=float(value))
    else:
        raise SoniqError(
            SCHEDULE_INVALID, f"{where}: every= must be a timedelta or a number of seconds"
        )
    if interval < timedelta(seconds=1):
        raise SoniqError(SCHEDULE_INVALID, f"{where}: every= must be at least 1 second")
    return interval


@dataclass(frozen=True)
class Schedule:
    """One periodic schedule: which task to enqueue, when, with which arguments."""

    name: str
    job_name: str
    cron: str | None
    every: timedelta | None
    timezone: str
    args: dict[str, Any] = field(default_factory=dict)
    args_json: str = "{}"

    @classmethod
    def create(
        cls,
        *,
        name: str,
        job_name: str,
        cron: str | None,
        every: timedelta | float | None,
        timezone: str,
        args: dict[str, Any],
    ) -> Schedule:
        """A validated schedule; bad input raises ``SoniqError`` naming the schedule."""
        where = f"schedule {name!r}"
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise SoniqError(SCHEDULE_INVALID, f"{where}: name must match {NAME_RE.pattern}")
        if (cron is None) == (every is None):
            raise SoniqError(SCHEDULE_INVALID, f"{where}: give exactly one of cron= or every=")
        _zone(timezone, where)
        interval = None if every is None else _interval(every, where)
        expression = None if cron is None else _parse_cron(cron, where)
        if not isinstance(args, dict):
            raise SoniqError(SCHEDULE_INVALID, f"{where}: args= must be a dict")
        args_json = dump_json(args, f"args of {where}", SCHEDULE_INVALID)
        return cls(name, job_name, expression, interval, timezone, dict(args), args_json)

    @property
    def spec(self) -> str:
        """What fires it, as stored in ``soniq_schedules.spec``: ``cron:...`` or ``every:...``."""
        if self.cron is not None:
            return f"cron:{self.cron}"
        assert self.every is not None
        seconds = self.every.total_seconds()
        return f"every:{int(seconds)}" if seconds.is_integer() else f"every:{seconds!r}"

    def next_after(self, after: datetime) -> datetime:
        """The first tick strictly after ``after`` (an aware datetime), in UTC."""
        after = _aware(after)
        if self.every is not None:
            step = _micros(self.every)
            n = _micros(after - _EPOCH) // step + 1
            return _EPOCH + timedelta(microseconds=n * step)
        assert self.cron is not None
        return _cron_next(self.cron, ZoneInfo(self.timezone), after + _US)

    def latest_at_or_before(self, now: datetime) -> datetime:
        """The last tick at or before ``now`` (an aware datetime), in UTC."""
        now = _aware(now)
        if self.every is not None:
            step = _micros(self.every)
            n = _micros(now - _EPOCH) // step
            return _EPOCH + timedelta(microseconds=n * step)
        assert self.cron is not None
        return _cron_prev(self.cron, ZoneInfo(self.timezone), now)

    def ticks(self, after: datetime, until: datetime) -> Iterator[datetime]:
        """Every tick in ``(after, until]``, in order (for tests and previews)."""
        t = self.next_after(after)
        while t <= until:
            yield t
            t = self.next_after(t)


def _aware(t: datetime) -> datetime:
    if t.tzinfo is None or t.utcoffset() is None:
        raise ValueError("schedule times must be aware datetimes")
    return t.astimezone(UTC)


def _micros(delta: timedelta) -> int:
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


Transition = tuple[datetime, timedelta, timedelta]  # instant, offset before, offset after


def _offset(t: datetime, tz: ZoneInfo) -> timedelta:
    off = t.astimezone(tz).utcoffset()
    assert off is not None
    return off


def _transition(a: datetime, b: datetime, tz: ZoneInfo, *, last: bool = False) -> Transition | None:
    """The first (or last) instant T in ``(a, b]`` where the UTC offset changes."""
    if b <= a:
        return None
    # Offsets are probed every _STEP: zones change offset at most twice a year.
    if last:
        y, oy = b, _offset(b, tz)
        while y > a:
            x = max(y - _STEP, a)
            ox = _offset(x, tz)
            if ox != oy:
                return _bisect(x, y, ox, oy, tz)
            y, oy = x, ox
    else:
        x, ox = a, _offset(a, tz)
        while x < b:
            y = min(x + _STEP, b)
            oy = _offset(y, tz)
            if oy != ox:
                return _bisect(x, y, ox, oy, tz)
            x, ox = y, oy
    return None


def _bisect(
    lo: datetime, hi: datetime, before: timedelta, after: timedelta, tz: ZoneInfo
) -> Transition:
    while hi - lo > _US:
        mid = lo + (hi - lo) // 2
        if _offset(mid, tz) == before:
            lo = mid
        else:
            hi = mid
    return hi, before, after


def _wall(t: datetime, offset: timedelta) -> datetime:
    """Naive wall-clock time of instant ``t`` at ``offset``."""
    return (t + offset).replace(tzinfo=None)


def _instant(wall: datetime, offset: timedelta) -> datetime:
    return (wall - offset).replace(tzinfo=UTC)


@cache
def _walker(expression: str) -> tuple[croniter, threading.Lock]:
    """One parsed croniter per expression (parsing costs more than stepping)."""
    text, seconds, _ = _split(expression)
    return croniter(text, datetime(2000, 1, 1), second_at_beginning=seconds), threading.Lock()


def _step(expression: str, wall: datetime, *, forward: bool) -> datetime:
    """The next cron match strictly after (or the previous strictly before) naive ``wall``."""
    walk, lock = _walker(expression)
    with lock:
        walk.set_current(wall, force=True)
        result: datetime = walk.get_next(datetime) if forward else walk.get_prev(datetime)
    return result


def _skipped(
    expression: str, tr: Transition, lo: datetime | None, hi: datetime | None
) -> datetime | None:
    """The earliest (``lo`` given) or latest (``hi`` given) tick of a wall-clock time skipped
    by the forward transition ``tr``; such a time fires shifted by the gap (old offset)."""
    t, before, after = tr
    gap_start, gap_end = _wall(t, before), _wall(t, after)
    if lo is not None:
        wall = _step(expression, max(_wall(lo, before), gap_start) - _US, forward=True)
        return _instant(wall, before) if wall < gap_end else None
    assert hi is not None
    wall = _step(expression, min(_wall(hi, before), gap_end - _US) + _US, forward=False)
    return _instant(wall, before) if wall >= gap_start else None


def _cron_next(expression: str, tz: ZoneInfo, lo: datetime) -> datetime:
    """The first tick at or after ``lo``.

    Walks one stretch of constant UTC offset at a time; at each transition adds the skipped
    wall-clock times (spring) or drops the repeated ones (autumn) as the module docstring says.
    """
    hour_wild = _split(expression)[2]
    best: datetime | None = None
    prev = _transition(lo - _DST_MARGIN, lo, tz, last=True)
    if prev is not None and prev[2] > prev[1]:
        best = _skipped(expression, prev, lo, None)
    while True:
        offset = _offset(lo, tz)
        wall = _step(expression, _wall(lo, offset) - _US, forward=True)
        instant = _instant(wall, offset)
        tr = _transition(lo, instant, tz)
        if tr is not None:  # no tick before tr under the old offset; go on from tr
            if best is not None and best < tr[0]:
                return best
            if tr[2] > tr[1]:
                best = _min(best, _skipped(expression, tr, lo, None))
            lo = tr[0]
            continue
        near = _transition(instant - _DST_MARGIN, instant, tz, last=True)
        if near is not None:
            t, before, after = near
            if after > before:
                best = _min(best, _skipped(expression, near, lo, None))
            elif not hour_wild and wall < _wall(t, before):  # a repeated time: fired already
                lo = t + (before - after)
                continue
        return instant if best is None else min(best, instant)


def _cron_prev(expression: str, tz: ZoneInfo, hi: datetime) -> datetime:
    """The last tick at or before ``hi`` (the mirror of :func:`_cron_next`)."""
    hour_wild = _split(expression)[2]
    while True:
        offset = _offset(hi, tz)
        wall = _step(expression, _wall(hi, offset) + _US, forward=False)
        instant = _instant(wall, offset)
        tr = _transition(instant, hi, tz, last=True)
        if tr is not None:  # no tick after tr under the new offset, but maybe a skipped time
            if tr[2] > tr[1]:
                skipped = _skipped(expression, tr, None, hi)
                if skipped is not None:
                    return skipped
            hi = tr[0] - _US
            continue
        near = _transition(instant - _DST_MARGIN, instant, tz, last=True)
        if near is not None:
            t, before, after = near
            if after > before:
                skipped = _skipped(expression, near, None, hi)
                if skipped is not None and skipped > instant:
                    return skipped
            elif not hour_wild and wall < _wall(t, before):  # a repeated time: not a tick
                hi = t - _US
                continue
        return instant


def _min(a: datetime | None, b: datetime | None) -> datetime | None:
    if a is None:
        return b
    return a if b is None else min(a, b)
