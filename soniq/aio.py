"""Small asyncio helpers shared by the long-running loops (worker, scheduler, notifier)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any


def retry_delay(failures: int) -> float:
    """Seconds to wait before trying again after ``failures`` faults in a row (0.1 s to 5 s)."""
    return float(min(5.0, 0.1 * 2 ** min(failures, 6)))


async def wait_event(event: asyncio.Event, seconds: float) -> None:
    """Sleep ``seconds``, or less if ``event`` is set meanwhile."""
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(event.wait(), seconds)


async def cancel_and_wait(task: asyncio.Task[Any] | None) -> None:
    """Cancel ``task`` (if it is still running) and wait until it has ended."""
    if task is not None and not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
