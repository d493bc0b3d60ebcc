"""Maintenance: one loop (:class:`Maintenance`) and one function per pass (rescue, prune,
vacuum), run by every worker and by the leading scheduler.

Each pass first takes its own advisory lock (transaction-level for rescue and prune, a
session lock around the VACUUM, which cannot run in a transaction, taken on a direct
connection when the pool goes through PgBouncer): whoever holds it does
the pass and the others skip it, so many processes running the loop cost one pass, and a
process that dies mid-pass frees the lock with its session. Locks per pass, rather than a
leader holding one session lock, keep maintenance working through a transaction-pooling
PgBouncer and cost no connection of their own. Each pass is bounded and logs what it did.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Any

import asyncpg

from soniq.db import Database, init_connection
from soniq.errors import DB_ERRORS, SoniqError
from soniq.outage import Outage, is_outage
from soniq.queries import advisory_key

if TYPE_CHECKING:
    from soniq.app import Soniq

log = logging.getLogger("soniq.maintenance")

PRUNE_BATCH = 1000
PRUNE_MAX_BATCHES = 20
RATE_ROW_IDLE = 3600.0  # a rate-limit row unused this long (and a window) is deleted


Acquire = Callable[[], AbstractAsyncContextManager[Any]]
"""Where a pass gets its connection: the pool by default; a worker's own housekeeping
connection (see heartbeat.py) so maintenance costs it no connection."""


async def rescue_stale(app: Soniq, acquire: Acquire | None = None) -> int:
    """Put back (or dead-letter) the jobs of workers silent past ``heartbeat_timeout``."""
    db = await app.database()
    async with (acquire or db.acquire)() as conn, conn.transaction():
        if not await db.lock_try_xact(conn, advisory_key(app.schema, "rescue")):
            return 0
        rows = await db.job_rescue_stale(conn, app.settings.heartbeat_timeout)
    for row in rows:
        log.warning(
            "rescued job %s from silent worker %s -> %s", row["id"], row["worker_id"], row["status"]
        )
    return len(rows)


async def expire_queued(app: Soniq, acquire: Acquire | None = None) -> int:
    """End queued jobs past their ``expires_at`` (cancelled, "expired"), in bounded batches;
    a worker claiming one late skips it anyway, this keeps them from sitting queued."""
    db = await app.database()
    total = 0
    for _ in range(PRUNE_MAX_BATCHES):
        async with (acquire or db.acquire)() as conn:
            n = await db.job_expire_queued(conn, PRUNE_BATCH)
        total += n
        if n < PRUNE_BATCH:
            break
    if total:
        log.info("expired %d queued job(s) past their expires_at", total)
    return total


async def prune(app: Soniq, acquire: Acquire | None = None) -> tuple[int, int]:
    """Delete finished jobs older than ``result_ttl`` and periodic tick rows older than
    ``result_ttl`` (at least an hour), each in bounded batches, and old worker rows.

    Returns (jobs deleted, worker rows deleted).
    """
    db = await app.database()
    acquire = acquire or db.acquire
    jobs = await _in_batches(app, acquire, db.job_prune_finished, app.settings.result_ttl)
    ticks = await _in_batches(
        app, acquire, db.periodic_tick_prune, max(app.settings.result_ttl, 3600.0)
    )
    keys = await _in_batches(app, acquire, db.idempotency_prune, 0.0)
    await _in_batches(app, acquire, db.limit_prune, RATE_ROW_IDLE)  # rate-limit state
    async with acquire() as conn:
        workers = await db.worker_prune(conn, max(app.settings.heartbeat_timeout * 10, 3600.0))
    if jobs or workers or ticks or keys:
        log.info(
            "pruned %d finished jobs, %d periodic tick rows, %d stale worker rows and %d "
            "idempotency keys",
            jobs,
            ticks,
            workers,
            keys,
        )
    return jobs, workers


async def _in_batches(
    app: Soniq,
    acquire: Acquire,
    delete: Callable[[Any, float, int], Awaitable[int]],
    older_than: float,
) -> int:
    """Run ``delete`` (rows older than ``older_than`` s, at most a batch) up to
    PRUNE_MAX_BATCHES times, each in its own short transaction under the prune lock."""
    db = await app.database()
    total = 0
    for _ in range(PRUNE_MAX_BATCHES):
        async with acquire() as conn, conn.transaction():
            if not await db.lock_try_xact(conn, advisory_key(app.schema, "prune")):
                break
            n = await delete(conn, older_than, PRUNE_BATCH)
        total += n
        if n < PRUNE_BATCH:
            break
    return total


VACUUM_MIN_DEAD = 5000
ANALYZE_MIN_ROWS = 20_000
_vacuum_refused: set[str] = set()


@asynccontextmanager
async def _session(app: Soniq, db: Database) -> AsyncIterator[Any]:
    """A connection that keeps a session lock: pooled, or direct behind PgBouncer (where the
    lock and its release could otherwise land on two different server connections)."""
    if not app.settings.pgbouncer:
        async with db.acquire() as conn:
            yield conn
        return
    conn = await app.connect(False)  # VACUUM may take long
    try:
        await init_connection(conn)
        yield conn
    finally:
        await conn.close()


async def vacuum_if_needed(
    app: Soniq, acquire: Acquire | None = None, budget: float | None = None
) -> bool:
    """VACUUM (or just ANALYZE) the job table when it needs it; True if something ran.

    Every claim and outcome leaves a dead row version and a dead entry at the head of the claim
    index; autovacuum looks at a table at most once a minute, so during a long drain each claim
    would step over more and more of them. A table never analysed (a fresh schema filled in
    one burst) gets plans built on guesses; one ANALYZE fixes that. One process at a time
    (advisory lock) does either. Needs the table's owner (or MAINTAIN); without it this logs
    once and stops trying. ``budget``: seconds the statement may take (then it is cancelled
    and tried again later).
    """
    if app.schema in _vacuum_refused:
        return False
    db = await app.database()
    async with (acquire or (lambda: _session(app, db)))() as conn:
        health = await db.job_table_health(conn)
        if health is None:
            return False
        dead, live, modified = health["dead"], health["live"], health["modified"]
        full_pass = dead >= max(VACUUM_MIN_DEAD, live // 5)
        stale = not health["analysed"] or modified >= max(ANALYZE_MIN_ROWS, live)
        if not (full_pass or stale):
            return False
        key = advisory_key(app.schema, "vacuum")
        if not await db.lock_try(conn, key):
            return False
        try:
            await db.job_table_vacuum(conn, full_pass=full_pass, timeout=budget)
        except asyncpg.InsufficientPrivilegeError as exc:
            _vacuum_refused.add(app.schema)
            log.warning("cannot VACUUM %s (%s); leaving it to autovacuum", db.jobs_table, exc)
            return False
        finally:
            await db.lock_release(conn, key)
    log.debug(
        "%s %s (%d dead, %d changed rows)",
        "vacuumed" if full_pass else "analysed",
        db.jobs_table,
        dead,
        modified,
    )
    return True


_EXPECTED: tuple[type[BaseException], ...] = (*DB_ERRORS, SoniqError)
VACUUM_CHECK_SECONDS = 2.0  # how often the job table's dead rows are looked at
RESCUE_TIMEOUT = 10.0
PRUNE_TIMEOUT = 60.0


class Maintenance:
    """The maintenance loop: every pass at once, then rescue every ``cleanup_interval``,
    the VACUUM check every few seconds, pruning ten times less often than rescue (at least
    once a minute). ``on_rescued`` is called when a rescue put jobs back in the queue."""

    def __init__(
        self,
        app: Soniq,
        on_rescued: Callable[[], None] | None = None,
        acquire: Acquire | None = None,
        budget: float | None = None,
    ) -> None:
        self.app = app
        self.on_rescued = on_rescued
        self.acquire = acquire
        self.budget = budget  # seconds one run_due may take, when set
        interval = app.settings.cleanup_interval
        self.periods = {
            "rescue": interval,
            "vacuum": VACUUM_CHECK_SECONDS,
            "prune": max(60.0, interval * 10),
        }
        self._last = dict.fromkeys(self.periods, -math.inf)
        self.outage = Outage("maintenance", log)

    async def run(self) -> None:
        """Run passes as they fall due, until cancelled; a failed pass is logged and tried
        again at its next turn."""
        tick = min(self.periods.values())
        while True:
            await self.run_due()
            await asyncio.sleep(tick)

    async def run_due(self) -> None:
        """Run every pass whose period has passed since it last ran; with a ``budget``, stop
        once it is spent (the passes left run at the next call) and give no pass more than
        what is left of it."""
        deadline = time.monotonic() + self.budget if self.budget is not None else math.inf
        for name, period in self.periods.items():
            now = time.monotonic()
            if now - self._last[name] < period - 1e-3:
                continue
            if now >= deadline:
                return
            self._last[name] = now
            try:
                await self._pass(name, deadline - now)
            except _EXPECTED as exc:
                if is_outage(exc):
                    self.outage.failed(exc, min(self.periods.values()))
                else:
                    log.warning("maintenance (%s) failed: %s", name, exc)
            except Exception:
                log.exception("maintenance (%s) failed", name)
            else:
                self.outage.ok()

    async def _pass(self, name: str, left: float) -> None:
        started = time.monotonic()
        if name == "rescue":
            rescued = await asyncio.wait_for(
                rescue_stale(self.app, self.acquire), min(RESCUE_TIMEOUT, left)
            )
            if rescued and self.on_rescued is not None:
                self.on_rescued()
            left = max(0.001, left - (time.monotonic() - started))
            await asyncio.wait_for(expire_queued(self.app, self.acquire), min(RESCUE_TIMEOUT, left))
        elif name == "prune":
            await asyncio.wait_for(prune(self.app, self.acquire), min(PRUNE_TIMEOUT, left))
        else:
            await vacuum_if_needed(self.app, self.acquire, None if math.isinf(left) else left)
