"""The enqueue hot path's two measured devices: held pool connections and shared NOTIFYs.

Kept out of ``db.py`` so its query methods stay one statement each; ``Database`` holds one
``Lanes`` and runs its enqueue statements through it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any

import asyncpg

from soniq.enqueue import NewJob

Conn = Any  # asyncpg.Connection or a pool proxy; asyncpg ships no precise types

log = logging.getLogger("soniq")

LANE_IDLE_SECONDS = 0.05


class _Wake:
    """NOTIFY coalescing state of one queue (see ``Lanes.insert_due``)."""

    __slots__ = ("in_flight", "notifier", "owed")

    def __init__(self) -> None:
        self.in_flight = 0  # coalesced inserts running
        self.notifier = False  # one of them (or a trailing NOTIFY) carries the NOTIFY
        self.owed = False  # a job may have committed with no NOTIFY committed after it

    @property
    def unsettled(self) -> bool:
        """A NOTIFY is owed and no insert in flight will carry it (the end of a burst)."""
        return self.owed and not self.notifier and self.in_flight == 0


class Lanes:
    """Pool connections kept between enqueues, and the per-queue NOTIFY state of due jobs.

    Through ``pool.fetchval`` every enqueue would pay the pool's acquire and release, which
    cost about as much as the INSERT's own round trip. A lane is a pool connection held while
    enqueues keep coming; one unused for ``LANE_IDLE_SECONDS`` goes back to the pool (so
    ``pool.close()`` waits at most that long for it). At most ``limit`` lanes are held, so the
    pool's other users are never starved; beyond that, enqueues use the pool directly.

    ``queries`` are the database's named queries (``job_insert_plain``, ``job_insert_quiet``
    and ``job_insert_wake`` are used); ``channel`` is the NOTIFY channel workers listen on.
    """

    def __init__(
        self, pool: asyncpg.Pool, limit: int, queries: Mapping[str, str], channel: str
    ) -> None:
        self.pool = pool
        self.limit = max(1, limit)
        self.held = 0
        self._idle: list[tuple[Conn, float]] = []  # most recently used last
        self._timer: asyncio.TimerHandle | None = None
        self._releases: set[asyncio.Future[None]] = set()
        self._insert_plain = queries["job_insert_plain"]
        self._insert_quiet = queries["job_insert_quiet"]
        self._insert_wake = queries["job_insert_wake"]
        self._channel = channel
        self._wakes: dict[str, _Wake] = {}
        self._wake_tasks: set[asyncio.Task[None]] = set()

    # -- lanes -------------------------------------------------------------------------------

    async def fetchval(self, query: str, *args: Any) -> Any:
        """``fetchval`` on an idle lane, a new one, or (all busy) the pool."""
        return await self._call("fetchval", query, args)

    async def execute(self, query: str, *args: Any) -> str:
        """``execute`` (its status, such as ``INSERT 0 5``) like ``fetchval``."""
        return await self._call("execute", query, args)  # type: ignore[no-any-return]

    async def _call(self, method: str, query: str, args: tuple[Any, ...]) -> Any:
        if self._idle:
            conn = self._idle.pop()[0]
        elif self.held < self.limit:
            self.held += 1
            try:
                conn = await self.pool.acquire()
            except BaseException:
                self.held -= 1
                raise
        else:
            return await getattr(self.pool, method)(query, *args)
        try:
            value = await getattr(conn, method)(query, *args)
        except BaseException:
            self._give_back(conn)  # the pool resets (or drops) a connection that failed
            raise
        self._park(conn)
        return value

    def _park(self, conn: Conn) -> None:
        """Keep ``conn`` as an idle lane (handed back to the pool if unused for a while)."""
        # time.monotonic() is the loop's clock; asyncio.get_running_loop() costs a getpid()
        # system call on Python 3.11, so it is only asked when a timer must be set
        self._idle.append((conn, time.monotonic()))
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(LANE_IDLE_SECONDS, self._trim)

    def _give_back(self, conn: Conn) -> None:
        self.held -= 1
        release = asyncio.ensure_future(self.pool.release(conn))
        self._releases.add(release)
        release.add_done_callback(self._released)

    def _released(self, release: asyncio.Future[None]) -> None:
        self._releases.discard(release)
        if not release.cancelled() and release.exception() is not None:
            log.debug("releasing an enqueue connection failed: %r", release.exception())

    def _trim(self) -> None:
        self._timer = None
        loop = asyncio.get_running_loop()
        cutoff = time.monotonic() - LANE_IDLE_SECONDS
        while self._idle and self._idle[0][1] <= cutoff:
            self._give_back(self._idle.pop(0)[0])
        if self._idle:
            self._timer = loop.call_later(self._idle[0][1] - cutoff, self._trim)

    # -- shared NOTIFY -----------------------------------------------------------------------

    async def insert_due(self, job: NewJob) -> None:
        """Insert a due job (no dedup key) in its own transaction, sharing the NOTIFY with
        concurrent ones.

        PostgreSQL serialises the commits of transactions that NOTIFY (a global lock held
        through the commit), which defeats group commit for many concurrent producers. So per
        queue only one insert in flight carries the NOTIFY. A job that committed without one
        is "owed": the next insert to start carries the NOTIFY (it commits later, so the
        worker it wakes sees the owed job), and the last insert of a burst sends a NOTIFY on
        its own if one is still owed. Either way a NOTIFY commits after every job, before
        the enqueue that settles it returns.
        """
        queue = job.queue
        wake = self._wakes.get(queue)
        if wake is None:
            wake = self._wakes[queue] = _Wake()
        notify = not wake.notifier
        if notify:
            wake.notifier = True
            wake.owed = False  # this NOTIFY commits after every job committed so far
        wake.in_flight += 1
        try:
            if notify:
                await self.fetchval(
                    self._insert_plain,
                    *job.columns(),
                    None,
                    self._channel,
                )
            else:
                await self.execute(
                    self._insert_quiet,
                    *job.columns(),
                )
        except BaseException:
            # whether it committed is unknown: treat the job as owed a NOTIFY
            wake.in_flight -= 1
            if notify:
                wake.notifier = False
            wake.owed = True
            if wake.unsettled:
                settle = asyncio.ensure_future(self._settle(queue, wake))
                self._wake_tasks.add(settle)
                settle.add_done_callback(self._wake_tasks.discard)
            raise
        wake.in_flight -= 1
        if notify:
            wake.notifier = False
        else:
            wake.owed = True
        if wake.unsettled:
            await self._settle(queue, wake)

    async def _settle(self, queue: str, wake: _Wake) -> None:
        """Send the owed NOTIFY when no insert in flight will (the end of a burst)."""
        while wake.unsettled:
            await self._wake_workers(queue, wake)

    async def _wake_workers(self, queue: str, wake: _Wake) -> None:
        """A NOTIFY on its own, for jobs that committed without one."""
        wake.notifier = True
        wake.owed = False
        try:
            await self.fetchval(self._insert_wake, self._channel, queue)
        except Exception as exc:  # the jobs are stored; workers find them at their next poll
            log.warning("waking workers of queue %r failed: %r", queue, exc)
        finally:
            wake.notifier = False
