"""Maintenance passes shared by workers and the scheduler: rescue, pruning.

Each pass is one short transaction that first takes a transaction-level advisory lock with
``pg_try_advisory_xact_lock``: when several processes run the same pass, one does the work and
the others skip it. Each pass is bounded and logs what it did.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from soniq.db import advisory_key

if TYPE_CHECKING:
    from soniq.app import Soniq

log = logging.getLogger("soniq.maintenance")

PRUNE_BATCH = 1000
PRUNE_MAX_BATCHES = 20


async def _locked(conn: object, schema: str, purpose: str) -> bool:
    return bool(
        await conn.fetchval(  # type: ignore[attr-defined]
            "SELECT pg_try_advisory_xact_lock($1)", advisory_key(schema, purpose)
        )
    )


async def rescue_stale(app: Soniq) -> int:
    """Put back (or dead-letter) the jobs of workers silent past ``heartbeat_timeout``."""
    db = await app._database()
    async with db.acquire() as conn, conn.transaction():
        if not await _locked(conn, app.schema, "rescue"):
            return 0
        rows = await db.job_rescue_stale(conn, app.settings.heartbeat_timeout)
    for row in rows:
        log.warning(
            "rescued job %s from silent worker %s -> %s", row["id"], row["worker_id"], row["status"]
        )
    return len(rows)


async def prune(app: Soniq) -> tuple[int, int]:
    """Delete finished jobs older than ``result_ttl`` (in bounded batches) and old worker rows.

    Returns (jobs deleted, worker rows deleted).
    """
    db = await app._database()
    jobs = 0
    for _ in range(PRUNE_MAX_BATCHES):
        async with db.acquire() as conn, conn.transaction():
            if not await _locked(conn, app.schema, "prune"):
                return jobs, 0
            n = await db.job_prune_finished(conn, app.settings.result_ttl, PRUNE_BATCH)
        jobs += n
        if n < PRUNE_BATCH:
            break
    async with db.acquire() as conn:
        workers = await db.worker_prune(conn, max(app.settings.heartbeat_timeout * 10, 3600.0))
    if jobs or workers:
        log.info("pruned %d finished jobs and %d stale worker rows", jobs, workers)
    return jobs, workers
