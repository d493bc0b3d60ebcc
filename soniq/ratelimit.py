"""``RateLimit``: at most ``max`` job starts in any sliding ``window`` seconds
(docs/flow-control.md; enforced by the gate claim, soniq/limits.py)."""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

from soniq.errors import SETTINGS_INVALID, SoniqError


class RateLimit:
    """At most ``max`` job starts in any sliding ``window`` seconds. Named: one budget shared
    by every task that names it; unnamed: the task's own."""

    __slots__ = ("max", "name", "window")

    def __init__(self, max: int, window: float | timedelta, *, name: str | None = None) -> None:
        if isinstance(max, bool) or not isinstance(max, int) or max < 1:
            raise SoniqError(
                SETTINGS_INVALID, f"RateLimit max must be an integer >= 1 (got {max!r})"
            )
        seconds = window.total_seconds() if isinstance(window, timedelta) else window
        if (
            isinstance(seconds, bool)
            or not isinstance(seconds, (int, float))
            or not math.isfinite(seconds)
            or seconds < 0.001
        ):
            raise SoniqError(
                SETTINGS_INVALID,
                f"RateLimit window must be a number of seconds > 0 (at least 0.001) or a "
                f"timedelta (got {window!r})",
            )
        if name is not None and (not isinstance(name, str) or not 0 < len(name) <= 100):
            raise SoniqError(
                SETTINGS_INVALID,
                f"RateLimit name must be a non-empty string of at most 100 characters "
                f"(got {name!r}); leave it out for a limit of the task's own",
            )
        self.max = max
        self.window = float(seconds)
        self.name = name

    @property
    def window_ms(self) -> int:
        return max(1, round(self.window * 1000))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RateLimit) and (self.max, self.window_ms, self.name) == (
            other.max,
            other.window_ms,
            other.name,
        )

    def __hash__(self) -> int:
        return hash((self.max, self.window_ms, self.name))

    def __repr__(self) -> str:
        named = f", name={self.name!r}" if self.name is not None else ""
        return f"RateLimit({self.max}, {self.window:g}{named})"

    def scope(self, task_name: str) -> str:
        if self.name is not None:
            return f"rate:{self.name}"
        return f"rate.task:{task_name}:{self.max}/{self.window_ms}ms"

    def describe(self) -> dict[str, Any]:
        return {"max": self.max, "window": self.window, "name": self.name}
