"""SIGTERM and SIGINT for every worker of this process that asked for them.

One handler per signal serves them all, so several workers in one process (one per Soniq
instance) all stop gracefully on the first signal and all return their jobs on the second.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from typing import Protocol

log = logging.getLogger("soniq.worker")

_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Stoppable(Protocol):
    """What a signal asks of a worker."""

    @property
    def shutdown_timeout(self) -> float: ...

    def stop_gracefully(self) -> None: ...

    def stop_now(self) -> None: ...


class ShutdownSignals:
    """The process's SIGTERM/SIGINT handlers while at least one worker listens."""

    def __init__(self) -> None:
        self.workers: set[Stoppable] = set()
        self.received = 0

    def add(self, worker: Stoppable) -> None:
        loop = asyncio.get_running_loop()
        if not self.workers:
            self.received = 0
            for signum in _SIGNALS:
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.add_signal_handler(signum, self._handle, signum)
        self.workers.add(worker)

    def discard(self, worker: Stoppable) -> None:
        self.workers.discard(worker)
        if not self.workers:
            loop = asyncio.get_running_loop()
            for signum in _SIGNALS:
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.remove_signal_handler(signum)

    def _handle(self, signum: int) -> None:
        self.received += 1
        name = signal.Signals(signum).name
        if self.received == 1:
            timeout = max(w.shutdown_timeout for w in self.workers)
            log.info(
                "%s: finishing in-flight jobs (up to %ss); send again to stop at once",
                name,
                timeout,
            )
        else:
            log.warning("second %s: returning in-flight jobs now", name)
        for worker in self.workers:
            if self.received == 1:
                worker.stop_gracefully()
            else:
                worker.stop_now()


shutdown_signals = ShutdownSignals()
