"""A worker's heartbeat: proof of life that rescue reads (``heartbeat_timeout``), and the
worker's maintenance on the same connection.

It runs on a connection of its own: handlers (or enqueues) holding every pool connection
must not make a live worker look dead. A worker declared dead while it was only slow
registers again. Maintenance (rescue, prune, the VACUUM check) runs right after each beat on
this connection, so it costs the worker no connection of its own (a worker holds three: this
one, the claim loop's and the LISTEN connection); each round of maintenance is bounded by
``heartbeat_timeout - 2 * heartbeat_interval``, so the beat after it is never late enough for
rescue to take this worker for dead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from soniq.connection import application_name
from soniq.maintenance import Maintenance
from soniq.outage import Outage, is_outage

if TYPE_CHECKING:
    from soniq.app import Soniq

log = logging.getLogger("soniq.worker")


def maintenance_budget(heartbeat_interval: float, heartbeat_timeout: float) -> float:
    """Seconds one round of maintenance may hold the heartbeat's connection."""
    return max(heartbeat_interval, heartbeat_timeout - 2 * heartbeat_interval)


class Heartbeat:
    """Every ``heartbeat_interval``: record the worker alive with its jobs in flight, then
    run the maintenance passes that are due (when given ``on_rescued``: the worker's
    callback for jobs put back in the queue)."""

    def __init__(
        self,
        app: Soniq,
        worker_id: str,
        in_flight: Callable[[], int],
        register: Callable[[Any], Awaitable[None]],
        maintain: bool = False,
        on_rescued: Callable[[], None] | None = None,
        after: Callable[[Any], Awaitable[None]] | None = None,
    ) -> None:
        """``after(conn)`` runs after each beat (the worker re-reads pending aborts)."""
        self.app = app
        self.after = after
        self.worker_id = worker_id
        self.in_flight = in_flight
        self.register = register
        self.conn: Any = None
        settings = app.settings
        self.maintenance = (
            Maintenance(
                app,
                on_rescued=on_rescued,
                acquire=self._borrow,
                budget=maintenance_budget(settings.heartbeat_interval, settings.heartbeat_timeout),
            )
            if maintain
            else None
        )

    @asynccontextmanager
    async def _borrow(self) -> AsyncIterator[Any]:
        if self.conn is None or self.conn.is_closed():
            raise ConnectionError("the heartbeat connection is down")
        yield self.conn

    async def run(self) -> None:
        interval = self.app.settings.heartbeat_interval
        db = await self.app.database()
        outage = Outage(f"worker {self.worker_id} heartbeat", log)
        try:
            while True:
                try:
                    if self.conn is None or self.conn.is_closed():
                        self.conn = await self.app.connect(
                            application_name=application_name(self.app.schema, "heartbeat")
                        )
                    if not await db.worker_heartbeat(self.conn, self.worker_id, self.in_flight()):
                        log.warning(
                            "worker %s was declared dead (silent too long); registering again",
                            self.worker_id,
                        )
                        await self.register(self.conn)
                    if self.after is not None:
                        await self.after(self.conn)
                except Exception as exc:  # a dead heartbeat loop would get this worker rescued
                    if is_outage(exc):
                        outage.failed(exc, interval)
                    else:
                        log.warning("heartbeat failed: %s", exc, exc_info=True)
                    self._drop()
                else:
                    outage.ok()
                    if self.maintenance is not None:
                        await self.maintenance.run_due()
                await asyncio.sleep(interval)
        finally:
            self._drop()

    def _drop(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):
                self.conn.terminate()
        self.conn = None
