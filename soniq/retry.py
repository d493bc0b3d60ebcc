"""Retry delays as pure functions; randomness is injected."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from soniq.errors import TASK_INVALID, SoniqError


@dataclass(frozen=True)
class RetryPolicy:
    """How long to wait before attempt ``n + 1`` after attempt ``n`` failed."""

    delay: float | tuple[float, ...] = 0.0
    backoff: bool = False
    max_delay: float | None = None
    jitter: bool = True

    @classmethod
    def build(
        cls,
        delay: float | Sequence[float],
        backoff: bool,
        max_delay: float | None,
        jitter: bool,
    ) -> RetryPolicy:
        """Validate the decorator's retry options."""
        if isinstance(delay, bool):
            raise SoniqError(TASK_INVALID, "retry_delay must be seconds, not a bool")
        if isinstance(delay, (int, float)):
            if delay < 0:
                raise SoniqError(TASK_INVALID, "retry_delay must be >= 0 seconds")
            value: float | tuple[float, ...] = float(delay)
        else:
            try:
                value = tuple(float(d) for d in delay)
            except (TypeError, ValueError):
                raise SoniqError(
                    TASK_INVALID, "retry_delay must be seconds or a list of seconds per attempt"
                ) from None
            if not value or any(d < 0 for d in value):
                raise SoniqError(TASK_INVALID, "retry_delay list must be non-empty and >= 0")
        if max_delay is not None and max_delay < 0:
            raise SoniqError(TASK_INVALID, "retry_max_delay must be >= 0 seconds")
        return cls(value, backoff, max_delay, jitter)

    def delay_for(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        """Seconds before the next try, after failed attempt number ``attempt`` (from 1)."""
        if isinstance(self.delay, tuple):
            base = self.delay[min(attempt, len(self.delay)) - 1]
        else:
            base = self.delay
        if self.backoff:
            base = base * (2 ** (attempt - 1)) if base > 0 else float(2 ** (attempt - 1))
        if self.max_delay is not None:
            base = min(base, self.max_delay)
        if self.jitter and self.backoff and base > 0:
            # "equal jitter": keep at least half the delay, spread the rest
            base = base / 2 + rand() * base / 2
        return base
