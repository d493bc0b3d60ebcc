"""Live updates: one hub per dashboard app fans job statuses out to every server-sent-events
client, fed by the process's one LISTEN connection (``app.notifier``).

However many browser tabs are open, the hub holds ONE notifier subscription and runs ONE
status query per round for the union of the jobs the tabs show, plus one queue-depth query.
Job status changes that send no NOTIFY (a job finishing) are caught by the round that runs
every ``interval`` seconds anyway: a push for promptness, a poll for certainty.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from soniq.aio import cancel_and_wait
from soniq.errors import DB_ERRORS

if TYPE_CHECKING:
    from soniq.app import Soniq
    from soniq.notifier import Subscription

log = logging.getLogger("soniq.dashboard")

MAX_WATCHED = 500  # job ids one client may follow
KEEPALIVE = 15.0


@dataclass(eq=False)
class Client:
    """One open event stream: the jobs it shows, and what is waiting to be sent to it."""

    job_ids: frozenset[str]
    queue: asyncio.Queue[str] = field(default_factory=lambda: asyncio.Queue(maxsize=100))

    def send(self, event: str, data: Any) -> None:
        message = f"event: {event}\ndata: {json.dumps(data, default=str)}\n\n"
        with contextlib.suppress(asyncio.QueueFull):  # a stalled client skips updates
            self.queue.put_nowait(message)


class LiveHub:
    """The shared feed behind ``GET /events``."""

    def __init__(self, app: Soniq, interval: float = 1.0) -> None:
        self.app = app
        self.interval = interval
        self.clients: set[Client] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._sub: Subscription | None = None
        self._last: dict[str, str] = {}
        self._queues: Any = None
        self.rounds = 0  # status reads done (tests compare it with the number of clients)

    async def connect(self, job_ids: list[str]) -> Client:
        client = Client(frozenset(job_ids[:MAX_WATCHED]))
        self.clients.add(client)
        if self._task is None or self._task.done():
            channel = (await self.app.database()).channel
            self._sub = self.app.notifier.subscribe(channel, self._poke, self._wake.set)
            self._task = asyncio.create_task(self._run(), name="soniq-dashboard-live")
        self._wake.set()
        return client

    async def disconnect(self, client: Client) -> None:
        self.clients.discard(client)
        if not self.clients:
            await self.close()

    async def close(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None
        if self._sub is not None:
            await self._sub.close()
            self._sub = None
        self._last.clear()
        self._queues = None

    def _poke(self, _payload: str) -> None:
        self._wake.set()

    async def _run(self) -> None:
        while self.clients:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)
            self._wake.clear()
            try:
                await self._round()
            except DB_ERRORS as exc:  # the database is away: try again next round
                log.warning("dashboard live update failed: %s", exc)

    async def _round(self) -> None:
        self.rounds += 1
        watched = sorted(set().union(*(c.job_ids for c in self.clients)))
        statuses = await self.app.get_job_statuses(watched) if watched else {}
        changed = {}
        for job_id, row in statuses.items():
            status = str(row["status"].value)
            if self._last.get(job_id) != status:
                self._last[job_id] = status
                changed[job_id] = {"id": job_id, "status": status, "attempts": row["attempts"]}
        for job_id in [j for j in self._last if j not in statuses]:
            del self._last[job_id]
        queues = {q["queue"]: q for q in await self.app.queue_depths()}
        for client in list(self.clients):
            for job_id in client.job_ids & changed.keys():
                client.send("job", changed[job_id])
        if queues != self._queues:
            self._queues = queues
            for client in list(self.clients):
                client.send("queues", queues)

    async def stream(self, client: Client) -> AsyncIterator[str]:
        """The text of one client's event stream, until it disconnects."""
        try:
            yield "retry: 2000\n\n"
            # statuses already known to the hub: a new tab starts current
            for job_id in client.job_ids & self._last.keys():
                client.send("job", {"id": job_id, "status": self._last[job_id]})
            while True:
                try:
                    yield await asyncio.wait_for(client.queue.get(), KEEPALIVE)
                except asyncio.TimeoutError:
                    yield ": keepalive\n\n"
        finally:
            await self.disconnect(client)
