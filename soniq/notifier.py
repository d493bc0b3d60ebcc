"""One LISTEN connection per Soniq instance, shared by everything in the process that waits
for a NOTIFY: today the worker's wake-ups, next job control and "job finished" messages.

A topic is a channel. Subscribers give a callback for messages and one for reconnects: a
NOTIFY sent while the connection was down is gone, so after every (re)connect each subscriber
is told to re-read the database (every signal has a durable flag, a push and a poll fallback;
see docs/internals.md). The connection is opened with the first subscription and closed with
the last.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from soniq.aio import cancel_and_wait, retry_delay
from soniq.connection import application_name
from soniq.outage import Outage, is_outage

if TYPE_CHECKING:
    from soniq.app import Soniq

log = logging.getLogger("soniq.notifier")

KEEPALIVE_SECONDS = 10.0  # an idle LISTEN connection proves it is alive this often


@dataclass(eq=False)
class Subscription:
    """A subscriber's callbacks for one channel; ``await close()`` to stop listening."""

    notifier: Notifier
    channel: str
    on_message: Callable[[str], None]
    on_reconnect: Callable[[], None] | None

    async def close(self) -> None:
        await self.notifier._remove(self)


class Notifier:
    """The instance's LISTEN connection, reconnected with backoff whenever it is lost."""

    def __init__(self, app: Soniq) -> None:
        self.app = app
        self._subs: dict[str, list[Subscription]] = {}
        self._task: asyncio.Task[None] | None = None
        self._conn: Any = None
        self._listening: set[str] = set()
        self._pending: set[asyncio.Task[None]] = set()
        self.outage = Outage("LISTEN connection", log)

    def subscribe(
        self,
        channel: str,
        on_message: Callable[[str], None],
        on_reconnect: Callable[[], None] | None = None,
    ) -> Subscription:
        """Call ``on_message(payload)`` for each NOTIFY on ``channel``, and ``on_reconnect()``
        once listening starts and after every reconnect."""
        sub = Subscription(self, channel, on_message, on_reconnect)
        self._subs.setdefault(channel, []).append(sub)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="soniq-notifier")
        elif self._conn is not None and channel not in self._listening:
            more = asyncio.create_task(self._listen_more(self._conn, channel))
            self._pending.add(more)
            more.add_done_callback(self._pending.discard)
        elif self._conn is not None and on_reconnect is not None:
            on_reconnect()  # already listening: nothing was missed before this point
        return sub

    async def close(self) -> None:
        """Stop listening for every subscriber (``Soniq.close``)."""
        self._subs.clear()
        await self._stop()

    def forget(self) -> None:
        """Drop everything of an event loop that is over (its task, connection and
        subscribers) without awaiting it; the next subscription starts afresh."""
        self._subs.clear()
        self._task, self._conn = None, None
        self._listening = set()
        self._pending = set()

    async def _remove(self, sub: Subscription) -> None:
        subs = self._subs.get(sub.channel, [])
        if sub in subs:
            subs.remove(sub)
        if not subs:
            self._subs.pop(sub.channel, None)
        if not self._subs:
            await self._stop()

    async def _stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)

    async def _listen_more(self, conn: Any, channel: str) -> None:
        try:
            await self._listen(conn, channel)
        except Exception as exc:  # the connection is failing: _run reconnects and listens
            log.debug("LISTEN %s failed: %s", channel, exc)
            return
        for sub in list(self._subs.get(channel, [])):
            if sub.on_reconnect is not None:
                sub.on_reconnect()

    async def _listen(self, conn: Any, channel: str) -> None:
        if channel not in self._listening:
            self._listening.add(channel)
            await conn.add_listener(channel, self._dispatch)

    def _dispatch(self, _conn: Any, _pid: int, channel: str, payload: str) -> None:
        for sub in list(self._subs.get(channel, [])):
            try:
                sub.on_message(payload)
            except Exception:
                log.exception("NOTIFY subscriber of %s failed", channel)

    async def _run(self) -> None:
        """Hold the LISTEN on a direct connection; on any loss, reconnect and tell everyone."""
        failures = 0
        while True:
            lost = asyncio.Event()
            conn = None
            try:
                conn = await self.app.connect(
                    application_name=application_name(self.app.schema, "listen")
                )
                conn.add_termination_listener(_setter(lost))
                self._listening = set()
                # a channel subscribed while these LISTENs run is listened to as well: the
                # loop ends only when none is missing (no await between it and _conn)
                while missing := [c for c in self._subs if c not in self._listening]:
                    for channel in missing:
                        await self._listen(conn, channel)
                self._conn = conn
                failures = 0
                self.outage.ok()
                for subs in list(self._subs.values()):
                    for sub in list(subs):
                        if sub.on_reconnect is not None:
                            sub.on_reconnect()  # whatever arrived while we were not listening
                db = await self.app.database()
                while not lost.is_set():
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(lost.wait(), KEEPALIVE_SECONDS)
                    if not lost.is_set():
                        await db.ping(conn, 5.0)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                if is_outage(exc):
                    self.outage.failed(exc, retry_delay(99))
                else:
                    log.warning("LISTEN connection failed (%s); reconnecting", exc, exc_info=True)
            finally:
                self._conn = None
                if conn is not None and not conn.is_closed():
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(conn.close(), 2.0)
            await asyncio.sleep(retry_delay(failures))


def _setter(event: asyncio.Event) -> Callable[[Any], None]:
    return lambda _conn: event.set()
