"""The scheduler: whoever holds the leader lock enqueues periodic ticks and runs maintenance.

Any number of schedulers may run. Each holds a dedicated connection and tries a session
advisory lock on it every ``check_interval``; the one that gets it leads until its session
ends. The leader enqueues ticks on that same session, so a leader that has lost it cannot
enqueue. Each tick is inserted once ever (the primary key on (schedule, tick), written in the
same statement as the job), so two processes that both believe they lead still make one job.

Ticks are computed from the database clock (``clock_timestamp()``), which all schedulers
share. A tick missed while no scheduler ran fires once on catch-up, not once per missed tick.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import socket
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import asyncpg

from soniq import limits
from soniq.aio import cancel_and_wait, wait_event
from soniq.connection import application_name
from soniq.db import Conn, Database
from soniq.enqueue import NewJob, schedule_job
from soniq.errors import DB_ERRORS, SETTINGS_INVALID, SoniqError, schema_missing
from soniq.ids import new_id
from soniq.maintenance import Maintenance
from soniq.outage import Outage, is_outage
from soniq.queries import advisory_key

if TYPE_CHECKING:
    from soniq.app import Soniq
    from soniq.schedules import Schedule

log = logging.getLogger("soniq.scheduler")

Clock = Callable[[], datetime]
QUERY_TIMEOUT = 10.0  # a query on the leader's session slower than this means the session is lost
MAX_BACKOFF = 5.0
MIN_SLEEP = 0.005


class Scheduler:
    """Leader election plus the leader's loop: due ticks, and maintenance while it leads.

    ``clock`` replaces the database clock (tests inject one to step through time);
    ``maintain=False`` leaves maintenance to the process's worker.
    """

    def __init__(
        self,
        app: Soniq,
        *,
        check_interval: float = 1.0,
        clock: Clock | None = None,
        maintain: bool = True,
    ) -> None:
        if (
            isinstance(check_interval, bool)
            or not isinstance(check_interval, (int, float))
            or not (0 < check_interval < math.inf)
        ):
            raise SoniqError(
                SETTINGS_INVALID,
                f"check_interval must be a number of seconds > 0, got {check_interval!r}",
            )
        self.app = app
        self.check_interval = float(check_interval)
        self.clock = clock
        self.is_leader = False
        self.key = advisory_key(app.schema, "scheduler")
        self._next: dict[str, datetime] = {}
        self._jobs: dict[str, NewJob | None] = {}  # what each schedule's ticks insert
        # the leader runs the maintenance loop unless its process already does (a worker)
        self._maintainer = Maintenance(app) if maintain else None
        self._maintenance: asyncio.Task[None] | None = None
        self.outage = Outage("scheduler", log)

    # -- election ------------------------------------------------------------------------------

    async def run(self, shutdown_event: asyncio.Event) -> None:
        """Lead or wait to lead until ``shutdown_event`` is set. Database failures are logged
        and retried with a backoff; nothing but cancellation makes this return early."""
        failures = 0
        while not shutdown_event.is_set():
            conn: Conn | None = None
            try:
                conn = await self.app.connect(
                    application_name=application_name(self.app.schema, "scheduler")
                )
                await self._session(conn, shutdown_event)
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                self._report(exc, failures)
            finally:
                self.is_leader = False
                await self._stop_maintenance()
                if conn is not None:
                    await _close(conn)
            if failures:
                await wait_event(shutdown_event, min(MAX_BACKOFF, 0.25 * 2**failures))

    def _report(self, exc: BaseException, failures: int) -> None:
        what = "lost the lead" if self.is_leader else "cannot reach the database"
        if isinstance(exc, asyncpg.UndefinedTableError):
            log.error(
                "scheduler: soniq's tables are missing in schema %r; run `soniq setup`",
                self.app.schema,
            )
        elif is_outage(exc):
            self.outage.failed(exc, MAX_BACKOFF)
        elif isinstance(exc, (*DB_ERRORS, SoniqError)):
            log.warning("scheduler %s (attempt %d): %s", what, failures, exc)
        else:
            log.exception("scheduler %s (attempt %d): unexpected error", what, failures)

    async def _session(self, conn: Conn, stop: asyncio.Event) -> None:
        db = await self.app.database()
        name = f"soniq scheduler {socket.gethostname()}:{os.getpid()}"[:63]
        try:
            await _timed(db.scheduler_session_setup(conn, name))
        except asyncpg.PostgresError as exc:  # e.g. a managed server refusing a setting
            log.debug("scheduler session setup: %s", exc)
        standing_by = False
        while not stop.is_set():
            started = time.monotonic()
            now = await self._now(db, conn)
            self.outage.ok()  # a round trip went through
            delay = self.check_interval
            if not self.is_leader:
                if await _timed(db.lock_try(conn, self.key)):
                    self.is_leader = True
                    log.info("scheduler leads (schema %s)", self.app.schema)
                    await self._sync(db, conn, now)
                elif not standing_by:
                    standing_by = True
                    log.info(
                        "another scheduler leads (schema %s); standing by, retrying every %gs",
                        self.app.schema,
                        self.check_interval,
                    )
            if self.is_leader:
                await self._fire_due(db, conn, now)
                if self._maintainer is not None and self._maintenance is None:
                    self._maintenance = asyncio.create_task(self._maintainer.run())
                if self._next:
                    until = (min(self._next.values()) - now).total_seconds()
                    delay = min(delay, max(until - (time.monotonic() - started), MIN_SLEEP))
            await wait_event(stop, delay)
        if self.is_leader:
            try:
                await _timed(db.lock_release(conn, self.key))
            except Exception as exc:  # closing the session releases it anyway
                log.debug("scheduler unlock: %s", exc)
            log.info("scheduler stopped leading (shutdown)")

    async def _now(self, db: Database, conn: Conn) -> datetime:
        db_now = await _timed(db.scheduler_ping(conn))
        return self.clock() if self.clock is not None else db_now

    # -- ticks ---------------------------------------------------------------------------------

    async def _sync(self, db: Database, conn: Conn, now: datetime) -> None:
        """Record each registered schedule and load when it fires next."""
        self._next.clear()
        for schedule in list(self.app.schedules.values()):
            await self._sync_one(db, conn, schedule, now)

    async def _sync_one(self, db: Database, conn: Conn, schedule: Schedule, now: datetime) -> None:
        self._jobs[schedule.name] = self._job(schedule)
        row = await _timed(
            db.schedule_upsert(
                conn,
                schedule.name,
                schedule.job_name,
                schedule.spec,
                schedule.timezone,
                schedule.next_after(now),
            )
        )
        self._next[schedule.name] = row["next_run_at"]

    def _job(self, schedule: Schedule) -> NewJob | None:
        """What the schedule's ticks insert (but for each tick's id), worked out once per
        leadership: queue, priority, attempts and arguments as ``app.enqueue`` sets them."""
        try:
            return schedule_job(self.app.registry, self.app.settings, schedule)
        except SoniqError as exc:
            log.error("schedule %s will not fire: %s", schedule.name, exc)
            return None

    async def _fire_due(self, db: Database, conn: Conn, now: datetime) -> dict[str, str]:
        fired: dict[str, str] = {}
        for schedule in list(self.app.schedules.values()):
            due = self._next.get(schedule.name)
            if due is None:  # registered after this scheduler took the lead
                await self._sync_one(db, conn, schedule, now)
                due = self._next[schedule.name]
            if due > now:
                continue
            tick = max(schedule.latest_at_or_before(now), due)
            following = schedule.next_after(max(tick, now))
            if tick > due:
                log.info(
                    "schedule %s missed its ticks from %s; firing once for %s",
                    schedule.name,
                    due.isoformat(),
                    tick.isoformat(),
                )
            job_id = await self._enqueue(db, conn, schedule, tick, following)
            self._next[schedule.name] = following
            if job_id is not None:
                fired[schedule.name] = job_id
        return fired

    async def _enqueue(
        self, db: Database, conn: Conn, schedule: Schedule, tick: datetime, following: datetime
    ) -> str | None:
        job = self._jobs.get(schedule.name)
        if job is None:
            return None
        tick_job = job._replace(id=new_id())
        task = self.app.registry.tasks.get(schedule.job_name)
        expires_after = task.expires_after if task is not None else None
        gates = limits.job_gates(task, schedule.job_name)  # checked at registration
        claimed, job_id = await _timed(
            db.schedule_tick_enqueue(
                conn, schedule.name, tick, tick_job, following, expires_after, gates
            )
        )
        if job_id is not None:
            log.debug("schedule %s: tick %s -> job %s", schedule.name, tick.isoformat(), job_id)
            return str(job_id)
        if claimed:
            log.info(
                "schedule %s: tick %s skipped, its previous job is still queued or running",
                schedule.name,
                tick.isoformat(),
            )
        else:
            log.debug("schedule %s: tick %s was already enqueued", schedule.name, tick.isoformat())
        return None

    async def enqueue_due(self, now: datetime | None = None) -> dict[str, str]:
        """One pass without the lead, on a pooled connection: record the schedules, then
        enqueue every tick due at ``now`` (default: the database clock). Returns
        {schedule name: job id} for the jobs it inserted. Safe next to a running leader."""
        db = await self.app.database()
        async with db.acquire() as conn:
            when = now if now is not None else await self._now(db, conn)
            if not self._next:
                await self._sync(db, conn, when)
            return await self._fire_due(db, conn, when)

    async def enqueue_tick(self, schedule_name: str, tick: datetime) -> str | None:
        """Enqueue one given tick of a schedule; the job id, or None if that tick was taken."""
        schedule = self.app.schedules[schedule_name]
        db = await self.app.database()
        async with db.acquire() as conn:
            if schedule_name not in self._next:
                await self._sync_one(db, conn, schedule, tick)
            return await self._enqueue(db, conn, schedule, tick, schedule.next_after(tick))

    # -- maintenance -----------------------------------------------------------------------

    async def _stop_maintenance(self) -> None:
        task, self._maintenance = self._maintenance, None
        await cancel_and_wait(task)


async def list_schedules(app: Soniq) -> list[dict[str, Any]]:
    """Each schedule registered on ``app``: name, job_name, cron or every (seconds),
    timezone, next_run_at, last_enqueued_at, last_tick."""
    db = await app.database()
    try:
        rows = {r["name"]: r for r in await db.schedule_list()}
    except asyncpg.UndefinedTableError:
        raise schema_missing(app.schema) from None
    now = datetime.now(timezone.utc)
    out = []
    for schedule in app.schedules.values():
        row = rows.get(schedule.name)
        next_run_at = schedule.next_after(now)
        if row is not None and (row["spec"], row["timezone"]) == (schedule.spec, schedule.timezone):
            next_run_at = row["next_run_at"] or next_run_at
        out.append(
            {
                "name": schedule.name,
                "job_name": schedule.job_name,
                "cron": schedule.cron,
                "every": None if schedule.every is None else schedule.every.total_seconds(),
                "timezone": schedule.timezone,
                "next_run_at": next_run_at,
                "last_enqueued_at": None if row is None else row["last_enqueued_at"],
                "last_tick": None if row is None else row["last_tick"],
            }
        )
    return out


async def _timed(awaitable: Any, timeout: float = QUERY_TIMEOUT) -> Any:
    return await asyncio.wait_for(awaitable, timeout)


async def _close(conn: Conn) -> None:
    try:
        await asyncio.wait_for(conn.close(), 2.0)
    except Exception:
        conn.terminate()
