"""Wake-up flags for the claim loop: many conditions, one ``asyncio.Event`` to wait on.

The loop waits for any of several conditions (new work, a free slot, outcomes to write,
stop). Waiting on one shared event costs no task per wait, where ``asyncio.wait`` over
several events would create one per event per cycle (measured: about 15% of the worker's
CPU per job in a drain; docs/internals.md, "hot path").
"""

from __future__ import annotations

import asyncio


class WakeFlag:
    """A named condition that wakes whoever waits on the shared event when set."""

    __slots__ = ("_flag", "_wake")

    def __init__(self, wake: asyncio.Event) -> None:
        self._flag = False
        self._wake = wake

    def set(self) -> None:
        self._flag = True
        self._wake.set()

    def clear(self) -> None:
        self._flag = False

    def is_set(self) -> bool:
        return self._flag


async def wait_any(
    wake: asyncio.Event, stop: asyncio.Event, flags: tuple[WakeFlag, ...], timeout: float
) -> None:
    """Wait until ``stop`` or one of ``flags`` is set, or ``timeout`` passes.

    ``wake`` is the event every flag (and a watcher of ``stop``) sets.
    """
    if stop.is_set() or any(f.is_set() for f in flags):
        return  # without asking for the loop (a getpid() system call on Python 3.11)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not (stop.is_set() or any(f.is_set() for f in flags)):
        remaining = deadline - loop.time()
        if remaining <= 0:
            return
        wake.clear()
        timer = loop.call_later(remaining, wake.set)
        try:
            await wake.wait()
        finally:
            timer.cancel()
