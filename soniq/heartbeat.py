"""A worker's heartbeat: proof of life that rescue reads (``heartbeat_timeout``).

It runs on a connection of its own: handlers (or enqueues) holding every pool connection
must not make a live worker look dead. A worker declared dead while it was only slow
registers again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from soniq.errors import DB_ERRORS

if TYPE_CHECKING:
    from soniq.app import Soniq

log = logging.getLogger("soniq.worker")


class Heartbeat:
    """Every ``heartbeat_interval``: record the worker alive with its jobs in flight."""

    def __init__(
        self,
        app: Soniq,
        worker_id: str,
        in_flight: Callable[[], int],
        register: Callable[[Any], Awaitable[None]],
        after: Callable[[Any], Awaitable[None]] | None = None,
    ) -> None:
        """``after(conn)`` runs after each beat (the worker re-reads pending aborts)."""
        self.app = app
        self.after = after
        self.worker_id = worker_id
        self.in_flight = in_flight
        self.register = register

    async def run(self) -> None:
        interval = self.app.settings.heartbeat_interval
        db = await self.app.database()
        conn: Any = None
        try:
            while True:
                await asyncio.sleep(interval)
                try:
                    if conn is None or conn.is_closed():
                        conn = await self.app.connect()
                    if not await db.worker_heartbeat(conn, self.worker_id, self.in_flight()):
                        log.warning(
                            "worker %s was declared dead (silent too long); registering again",
                            self.worker_id,
                        )
                        await self.register(conn)
                    if self.after is not None:
                        await self.after(conn)
                except Exception as exc:  # a dead heartbeat loop would get this worker rescued
                    log.warning(
                        "heartbeat failed: %s", exc, exc_info=not isinstance(exc, DB_ERRORS)
                    )
                    if conn is not None:
                        with contextlib.suppress(Exception):
                            conn.terminate()
                    conn = None
        finally:
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.terminate()
