"""The only module that runs SQL: a typed method (or, for migrations, a function) per named
query of the ``sql/*.sql`` files, and the migration files of ``sql/migrations/``.

Queries come from ``soniq.queries`` with the schema name substituted (it is validated
against a strict pattern and quoted, so it is never user-controlled SQL). Everything else is
a bound parameter.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import asyncpg

from soniq.enqueue import JobExtras, NewJob, NewJobs
from soniq.errors import ENQUEUE_INVALID, SoniqError
from soniq.lanes import Lanes
from soniq.outcomes import Batch
from soniq.queries import _raw_queries, advisory_key, load_queries, query, quote_ident

Conn = Any  # asyncpg.Connection or a pool proxy; asyncpg ships no precise types
Row = Any

log = logging.getLogger("soniq")


def _query(schema: str, name: str) -> str:
    return _raw_queries()[name].replace("{schema}", quote_ident(schema))


# -- schema migrations: on a session of their own, before any table exists -----------------


def _versions_table(schema: str) -> str:
    return f"{quote_ident(schema)}.soniq_migrations"


async def migration_lock(conn: Conn, schema: str) -> None:
    """Wait for the migrate lock of ``schema``, held until the transaction ends."""
    await conn.execute(_query(schema, "migration_lock"), advisory_key(schema, "migrate"))


async def migration_table_ensure(conn: Conn, schema: str) -> None:
    """Create the schema and its versions table if missing."""
    await conn.execute(_query(schema, "schema_create"))
    await conn.execute(_query(schema, "migration_table_create"))


async def migration_table_exists(conn: Conn, schema: str) -> bool:
    sql = _query(schema, "migration_table_exists")
    return bool(await conn.fetchval(sql, _versions_table(schema)))


async def migration_list(conn: Conn, schema: str) -> dict[int, datetime]:
    """Applied versions and when."""
    rows = await conn.fetch(_query(schema, "migration_list"))
    return {r["version"]: r["applied_at"] for r in rows}


async def migration_apply(conn: Conn, schema: str, version: int, name: str, sql: str) -> None:
    """Run one migration's SQL (``{schema}`` filled in) and record its version."""
    await conn.execute(sql.replace("{schema}", quote_ident(schema)))
    await conn.execute(_query(schema, "migration_insert"), version, name)


def parse_uuid(job_id: object) -> uuid.UUID | None:
    """The UUID of a job id, or None when it is malformed."""
    if isinstance(job_id, uuid.UUID):
        return job_id
    if not isinstance(job_id, str):
        return None
    try:
        return uuid.UUID(job_id)
    except ValueError:
        return None


def _decode_json(value: str) -> Any:
    return json.loads(value)


def _encode_json(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


async def init_connection(conn: Conn) -> None:
    """Per-connection setup for soniq's own pools: jsonb columns decode to Python."""
    for typ in ("jsonb", "json"):
        await conn.set_type_codec(
            typ, encoder=_encode_json, decoder=_decode_json, schema="pg_catalog"
        )


async def skip_reset(conn: Conn) -> None:
    """The pool's ``reset=``: it does nothing on purpose. asyncpg's default reset query would
    cost every pooled query a second round trip (docs/internals.md, "hot path"). soniq
    leaves no session state on pooled connections (its advisory locks are transaction-level
    or released at once; LISTEN uses a direct connection), and asyncpg has already rolled
    back any open transaction. ``app.backend.acquire()`` resets fully, since user code may
    set session state."""


def _report_args(worker_id: str, batch: Batch) -> tuple[Any, ...]:
    """The outcome statement's parameters $1..$10 for ``batch`` (see ``_job_report``)."""
    return (worker_id, batch.done_ids, batch.done_results, *batch.other_columns())


class Database:
    """Named queries against one schema, over one asyncpg pool."""

    def __init__(self, pool: asyncpg.Pool, schema: str) -> None:
        self.pool = pool
        self.schema = schema
        self.q = load_queries(schema)
        self.channel = f"soniq_{schema}"
        self.lanes = Lanes(pool, pool.get_max_size() // 2, self.q, self.channel)
        self._claim_texts: dict[tuple[str, int], str] = {}

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[Conn]:
        async with self.pool.acquire() as conn:
            yield conn

    # -- enqueue -------------------------------------------------------------------------

    async def job_insert(self, conn: Conn | None, job: NewJob) -> str:
        """Insert ``job`` and wake workers; returns its id, or the id of the active job that
        already holds its dedup key (then nothing was inserted).

        On the caller's ``conn`` the NOTIFY is always part of the statement: it is delivered
        at the caller's commit and never after a rollback. A due job without a dedup key on
        soniq's own (autocommit) connections shares its NOTIFY with concurrent ones (see
        ``Lanes.insert_due``): the one place that choice is made.
        """
        dedup_key = job.dedup_key
        if dedup_key is None:
            if conn is None and job.scheduled_at is None:
                await self.lanes.insert_due(job)
            else:
                await (conn if conn is not None else self.lanes).fetchval(
                    self.q["job_insert_plain"],
                    *job.columns(),
                    job.scheduled_at,
                    self.channel,
                )
            return job.id
        runner = conn if conn is not None else self.lanes
        for _ in range(10):
            got = await runner.fetchval(
                self.q["job_insert"],
                *job.columns(),
                job.scheduled_at,
                dedup_key,
                self.channel,
            )
            if got is not None:
                return str(got)
            existing = await self.job_get_active_by_dedup_key(conn, dedup_key)
            if existing is not None:
                return str(existing)
            # the holder ended between our insert and our look-up: try again
        raise SoniqError(ENQUEUE_INVALID, f"dedup_key {dedup_key!r} kept changing hands; retry")

    async def job_get_active_by_dedup_key(
        self, conn: Conn | None, dedup_key: str
    ) -> uuid.UUID | None:
        c = conn if conn is not None else self.pool
        value = await c.fetchval(self.q["job_get_active_by_dedup_key"], dedup_key)
        return value  # type: ignore[no-any-return]

    async def job_insert_many(self, conn: Conn | None, jobs: NewJobs) -> int:
        """Insert many jobs of one task in one statement (with its NOTIFY); their arguments
        are one JSON array, in the order of ``jobs.ids``."""
        c = conn if conn is not None else self.lanes
        status = await c.execute(
            self.q["job_insert_many"],
            "{" + ",".join(jobs.ids) + "}",  # one text, not an array asyncpg checks item by item
            jobs.job_name,
            jobs.queue,
            jobs.priority,
            jobs.args,
            jobs.max_attempts,
            jobs.scheduled_at,
            self.channel,
        )
        return int(status.rsplit(" ", 1)[-1])

    async def job_insert_traced(self, conn: Conn | None, job: NewJob, trace: str) -> str:
        """``job_insert`` storing the W3C trace context ``trace`` (JSON text) on the job
        (soniq.otel); returns its id or that of the active job holding its dedup key."""
        runner = conn if conn is not None else self.pool
        args = (*job.columns(), job.scheduled_at, job.dedup_key, self.channel, trace)
        for _ in range(10):
            got = await runner.fetchval(self.q["job_insert_traced"], *args)
            if got is not None:
                return str(got)
            assert job.dedup_key is not None  # only a dedup conflict inserts nothing
            existing = await self.job_get_active_by_dedup_key(conn, job.dedup_key)
            if existing is not None:
                return str(existing)
        raise SoniqError(ENQUEUE_INVALID, f"dedup_key {job.dedup_key!r} kept changing hands")

    async def job_insert_many_traced(self, conn: Conn | None, jobs: NewJobs, trace: str) -> None:
        """``job_insert_many`` with the trace context ``trace`` on every job."""
        await (conn if conn is not None else self.pool).execute(
            self.q["job_insert_many_traced"],
            "{" + ",".join(jobs.ids) + "}",
            jobs.job_name,
            jobs.queue,
            jobs.priority,
            jobs.args,
            jobs.max_attempts,
            jobs.scheduled_at,
            self.channel,
            trace,
        )

    # -- worker hot path -------------------------------------------------------------------

    def claim_query(self, limit: int, queues: Sequence[str] | None, exclude: bool = False) -> str:
        """The report-and-claim statement for ``limit`` jobs (one cached text per limit).
        ``exclude``: the variant that leaves out paused queues (an extra parameter $11)."""
        if queues:
            name = "job_report_and_claim_queues"
        else:
            name = "job_report_and_claim_except" if exclude else "job_report_and_claim"
        return self._with_limit(name, limit)

    def _with_limit(self, name: str, limit: int) -> str:
        """Query ``name`` with its ``{limit}`` inlined as a literal (cached per limit)."""
        key = (name, limit)
        text = self._claim_texts.get(key)
        if text is None:
            text = self.q[name].replace("{limit}", str(int(limit)))
            self._claim_texts[key] = text
        return text

    async def job_report_and_claim(
        self,
        conn: Conn,
        worker_id: str,
        limit: int,
        queues: Sequence[str] | None,
        batch: Batch,
        paused: Sequence[str] = (),
    ) -> list[Row]:
        """Record ``batch`` and claim up to ``limit`` jobs, in one statement; ``paused``
        queues are left out (the plain statement when there are none)."""
        args = _report_args(worker_id, batch)
        if queues:
            sql = self.claim_query(limit, queues)
            return await conn.fetch(sql, *args, list(queues))  # type: ignore[no-any-return]
        if paused:
            sql = self.claim_query(limit, None, exclude=True)
            return await conn.fetch(sql, *args, list(paused))  # type: ignore[no-any-return]
        return await conn.fetch(self.claim_query(limit, None), *args)  # type: ignore[no-any-return]

    async def job_report(self, conn: Conn, worker_id: str, batch: Batch) -> int:
        """Record ``batch`` on its own (no claim); returns how many the guard let through."""
        value = await conn.fetchval(self.q["job_report"], *_report_args(worker_id, batch))
        return int(value)

    async def job_return_many(
        self, conn: Conn, worker_id: str, ids: Sequence[uuid.UUID]
    ) -> list[Row]:
        return await conn.fetch(self.q["job_return_many"], worker_id, ids)  # type: ignore[no-any-return]

    async def job_return_orphans(
        self, conn: Conn, worker_id: str, running: Sequence[uuid.UUID]
    ) -> list[Row]:
        return await conn.fetch(  # type: ignore[no-any-return]
            self.q["job_return_orphans"], worker_id, list(running)
        )

    async def job_rescue_stale(self, conn: Conn, heartbeat_timeout: float) -> list[Row]:
        return await conn.fetch(  # type: ignore[no-any-return]
            self.q["job_rescue_stale"], float(heartbeat_timeout)
        )

    async def job_prune_finished(self, conn: Conn, older_than: float, limit: int) -> int:
        rows = await conn.fetch(self.q["job_prune_finished"], float(older_than), limit)
        return len(rows)

    # -- flow control: paused queues ---------------------------------------------------------

    async def queue_pause(self, queue: str) -> bool:
        row = await self.pool.fetchrow(self.q["queue_pause"], queue, self.channel)
        return bool(row["changed"])

    async def queue_resume(self, queue: str) -> bool:
        row = await self.pool.fetchrow(self.q["queue_resume"], queue, self.channel)
        return bool(row["changed"])

    async def queue_paused_list(self, conn: Conn | None = None) -> list[Row]:
        runner = conn if conn is not None else self.pool
        return await runner.fetch(self.q["queue_paused_list"])  # type: ignore[no-any-return]

    # -- flow control: limits (soniq/limits.py) ---------------------------------------------

    def claim_gated_query(self, limit: int) -> str:
        return self._with_limit("job_report_and_claim_gated", limit)

    async def job_report_and_claim_gated(
        self,
        conn: Conn,
        worker_id: str,
        limit: int,
        batch: Batch,
        lanes: Sequence[str],
        queues: Sequence[str] | None,
        paused: Sequence[str],
        ring: Sequence[str],
        after: str | None,
    ) -> list[Row]:
        """Record ``batch`` and claim up to ``limit`` jobs, admitting limited ones of
        ``lanes`` (``ring``: the simple ones, visited from key ``after`` of the first)."""
        return await conn.fetch(  # type: ignore[no-any-return]
            self.claim_gated_query(limit),
            *_report_args(worker_id, batch),
            list(lanes),
            list(queues) if queues else None,
            list(paused),
            list(ring),
            self.channel,
            after,
        )

    async def gate_next_free(self, conn: Conn, rate_scopes: Sequence[str]) -> float | None:
        """Seconds until the first full rate limit of ``rate_scopes`` has room, or None."""
        return await conn.fetchval(self.q["gate_next_free"], list(rate_scopes))  # type: ignore[no-any-return]

    async def job_insert_limited(self, conn: Conn | None, job: Any, gates: Any) -> None:
        """Insert ``job`` (no dedup key) counting against ``gates`` (soniq.limits.JobGates)."""
        await (conn if conn is not None else self.pool).fetchval(
            self.q["job_insert_limited"], *job.columns(), job.scheduled_at, self.channel,
            *gates.rows(), gates.more_json(),
        )  # fmt: skip

    async def job_insert_many_limited(self, conn: Conn | None, jobs: Any, gates: Any) -> None:
        """``job_insert_many``, every job counting against ``gates``."""
        await (conn if conn is not None else self.pool).execute(
            self.q["job_insert_many_limited"], "{" + ",".join(jobs.ids) + "}", jobs.job_name,
            jobs.queue, jobs.priority, jobs.args, jobs.max_attempts, jobs.scheduled_at,
            self.channel, *gates.rows(), gates.more_json(),
        )  # fmt: skip

    async def limit_ensure(self, conn: Conn, gates: Any) -> None:
        await conn.execute(self.q["limit_ensure"], *gates.rows())

    async def job_set_limit(self, conn: Conn, ids: Sequence[str], gates: Any) -> None:
        await conn.execute(
            self.q["job_set_limit"], [uuid.UUID(i) for i in ids], gates.lane.scope,
            gates.lane.key, gates.more_json(),
        )  # fmt: skip

    async def limit_sync(
        self,
        conn: Conn,
        scopes: Sequence[str],
        maxes: Sequence[int],
        windows: Sequence[int | None],
    ) -> None:
        await conn.execute(self.q["limit_sync_max"], list(scopes), list(maxes), list(windows))

    async def job_unlimit_stale(self, conn: Conn, scopes: Sequence[str]) -> None:
        await conn.execute(self.q["job_unlimit_stale"], list(scopes))

    async def limit_list(self) -> list[Row]:
        return await self.pool.fetch(self.q["limit_list"])  # type: ignore[no-any-return]

    async def limit_prune(self, conn: Conn, older_than: float, limit: int) -> int:
        return len(await conn.fetch(self.q["limit_prune"], float(older_than), limit))

    # -- management ------------------------------------------------------------------------

    async def job_get(self, job_id: uuid.UUID) -> Row | None:
        return await self.pool.fetchrow(self.q["job_get"], job_id)

    async def job_get_result(self, job_id: uuid.UUID) -> Row | None:
        return await self.pool.fetchrow(self.q["job_get_result"], job_id)

    async def job_list(
        self, status: str | None, queue: str | None, job_name: str | None, limit: int, offset: int
    ) -> list[Row]:
        return await self.pool.fetch(  # type: ignore[no-any-return]
            self.q["job_list"], status, queue, job_name, limit, offset
        )

    async def job_cancel(self, job_id: uuid.UUID) -> bool:
        return await self.pool.fetchval(self.q["job_cancel"], job_id) is not None

    async def job_cancel_matching(
        self, queue: str | None, job_name: str | None, tags: str | None
    ) -> int:
        status = await self.pool.execute(self.q["job_cancel_matching"], queue, job_name, tags)
        return int(status.rsplit(" ", 1)[-1])

    async def job_delete(self, job_id: uuid.UUID) -> bool:
        return await self.pool.fetchval(self.q["job_delete"], job_id) is not None

    async def job_retry_dead(self, job_id: uuid.UUID) -> bool:
        row = await self.pool.fetchrow(self.q["job_retry_dead"], job_id, self.channel)
        return row is not None

    async def job_count_by_status(self) -> dict[str, int]:
        rows = await self.pool.fetch(self.q["job_count_by_status"])
        return {r["status"]: int(r["n"]) for r in rows}

    async def queue_stats(self) -> list[Row]:
        return await self.pool.fetch(self.q["queue_stats"])  # type: ignore[no-any-return]

    async def dead_letter_list(self, limit: int, offset: int, job_name: str | None) -> list[Row]:
        return await self.pool.fetch(  # type: ignore[no-any-return]
            self.q["dead_letter_list"], limit, offset, job_name
        )

    async def dead_letter_get(self, job_id: uuid.UUID) -> Row | None:
        return await self.pool.fetchrow(self.q["dead_letter_get"], job_id)

    async def dead_letter_mark_replayed(self, conn: Conn, job_id: uuid.UUID) -> int | None:
        return await conn.fetchval(  # type: ignore[no-any-return]
            self.q["dead_letter_mark_replayed"], job_id
        )

    async def dead_letter_delete(self, job_id: uuid.UUID) -> bool:
        return await self.pool.fetchval(self.q["dead_letter_delete"], job_id) is not None

    async def dead_letter_stats(self) -> dict[str, int]:
        rows = await self.pool.fetch(self.q["dead_letter_stats"])
        return {r["reason"]: int(r["n"]) for r in rows}

    # -- job control (sql/control.sql) -----------------------------------------------------

    async def job_insert_ext(self, conn: Conn | None, job: NewJob, ext: JobExtras) -> Row:
        """Insert a job with tags / expiry / an idempotency key (see ``job_insert_ext``):
        the row of (id inserted or None, key's job id, key's request hash)."""
        c = conn if conn is not None else self.pool
        return await c.fetchrow(
            self.q["job_insert_ext"],
            *job.columns(),
            job.scheduled_at,
            job.dedup_key,
            self.channel,
            ext.idempotency_key,
            ext.request_hash,
            ext.idempotency_ttl,
            ext.tags,
            ext.expires_at,
        )

    async def job_abort(self, job_id: uuid.UUID) -> bool:
        """Record an abort of a processing job and NOTIFY its worker; False if not running."""
        row = await self.pool.fetchrow(self.q["job_abort"], job_id, self.channel)
        return row is not None

    async def job_abort_pending(self, conn: Conn, worker_id: str) -> list[Row]:
        return await conn.fetch(self.q["job_abort_pending"], worker_id)  # type: ignore[no-any-return]

    async def job_watch(self, job_id: uuid.UUID) -> Row | None:
        return await self.pool.fetchrow(self.q["job_watch"], job_id, self.channel)

    async def job_get_many(self, ids: Sequence[uuid.UUID]) -> list[Row]:
        return await self.pool.fetch(self.q["job_get_many"], list(ids))  # type: ignore[no-any-return]

    async def job_progress(
        self,
        conn: Conn,
        job_id: uuid.UUID,
        worker_id: str,
        attempt: int,
        progress: float,
        message: str | None,
    ) -> None:
        await conn.execute(self.q["job_progress"], job_id, worker_id, attempt, progress, message)

    async def job_complete(
        self, conn: Conn, job_id: uuid.UUID, worker_id: str, attempt: int, result: str | None
    ) -> bool:
        """Mark the job done on ``conn`` (the caller's transaction) if still owned."""
        got = await conn.fetchval(self.q["job_complete"], job_id, worker_id, attempt, result)
        return got is not None

    async def job_expire_queued(self, conn: Conn, limit: int) -> int:
        return len(await conn.fetch(self.q["job_expire_queued"], limit))

    async def idempotency_prune(self, conn: Conn, older_than: float, limit: int) -> int:
        return len(await conn.fetch(self.q["idempotency_prune"], float(older_than), limit))

    async def job_list_tagged(
        self,
        status: str | None,
        queue: str | None,
        job_name: str | None,
        limit: int,
        offset: int,
        tags: str,
    ) -> list[Row]:
        return await self.pool.fetch(  # type: ignore[no-any-return]
            self.q["job_list_tagged"], status, queue, job_name, limit, offset, tags
        )

    # -- workers ---------------------------------------------------------------------------

    async def worker_register(
        self,
        conn: Conn,
        worker_id: str,
        hostname: str,
        pid: int,
        queues: Sequence[str] | None,
        concurrency: int,
    ) -> None:
        await conn.execute(
            self.q["worker_register"],
            worker_id,
            hostname,
            pid,
            list(queues) if queues else None,
            concurrency,
        )

    async def worker_heartbeat(self, conn: Conn, worker_id: str, in_flight: int) -> bool:
        return await conn.fetchval(self.q["worker_heartbeat"], worker_id, in_flight) is not None

    async def worker_stop(self, conn: Conn, worker_id: str) -> None:
        await conn.execute(self.q["worker_stop"], worker_id)

    async def worker_list(self, heartbeat_timeout: float) -> list[Row]:
        return await self.pool.fetch(  # type: ignore[no-any-return]
            self.q["worker_list"], float(heartbeat_timeout)
        )

    async def worker_prune(self, conn: Conn, older_than: float) -> int:
        rows = await conn.fetch(self.q["worker_prune"], float(older_than))
        return len(rows)

    # -- table health ------------------------------------------------------------------------

    @property
    def jobs_table(self) -> str:
        return f"{quote_ident(self.schema)}.soniq_jobs"

    async def job_table_health(self, conn: Conn) -> Row | None:
        return await conn.fetchrow(self.q["job_table_health"], self.jobs_table)

    async def job_table_vacuum(
        self, conn: Conn, *, full_pass: bool, timeout: float | None = None
    ) -> None:
        """VACUUM (ANALYZE) the job table, or with ``full_pass=False`` only ANALYZE it."""
        name = "job_table_vacuum" if full_pass else "job_table_analyze"
        await conn.execute(self.q[name].replace("{table}", self.jobs_table), timeout=timeout)

    # -- locks -----------------------------------------------------------------------------

    async def lock_try(self, conn: Conn, key: int) -> bool:
        return bool(await conn.fetchval(self.q["lock_try"], key))

    async def lock_release(self, conn: Conn, key: int) -> bool:
        return bool(await conn.fetchval(self.q["lock_release"], key))

    @staticmethod
    async def lock_try_xact(conn: Conn, key: int) -> bool:
        """Take advisory lock ``key`` until the end of ``conn``'s transaction, if free now."""
        return bool(await conn.fetchval(_raw_queries()["lock_try_xact"], key))

    @staticmethod
    async def ping(conn: Conn, timeout: float) -> None:
        """One round trip on ``conn``; raises (asyncio.TimeoutError after ``timeout``
        seconds) when the session does not answer."""
        await conn.fetchval(_raw_queries()["connection_ping"], timeout=timeout)

    # -- operator --------------------------------------------------------------------------

    async def queue_depth(self) -> list[Row]:
        return await self.pool.fetch(self.q["queue_depth"])  # type: ignore[no-any-return]

    async def queue_throughput(self, seconds: float) -> list[Row]:
        return await self.pool.fetch(  # type: ignore[no-any-return]
            self.q["queue_throughput"], float(seconds)
        )

    async def worker_jobs_held(self) -> dict[str, int]:
        rows = await self.pool.fetch(self.q["worker_jobs_held"])
        return {r["worker_id"]: int(r["n"]) for r in rows}

    async def lock_holder(self, key: int) -> Row | None:
        return await self.pool.fetchrow(self.q["lock_holder"], key)

    @staticmethod
    async def database_create(conn: Conn, name: str) -> bool:
        """Create database ``name`` through ``conn`` (a session on another database of the
        same server); False when it already exists."""
        if await conn.fetchval(_raw_queries()["database_exists"], name):
            return False
        try:
            await conn.execute(
                _raw_queries()["database_create"].replace("{database}", quote_ident(name))
            )
        except asyncpg.DuplicateDatabaseError:
            return False
        return True

    # -- scheduler -------------------------------------------------------------------------

    async def scheduler_session_setup(self, conn: Conn, application_name: str) -> None:
        await conn.fetchrow(self.q["scheduler_session_setup"], application_name)

    async def scheduler_ping(self, conn: Conn) -> datetime:
        return await conn.fetchval(self.q["scheduler_ping"])  # type: ignore[no-any-return]

    async def schedule_upsert(
        self, conn: Conn, name: str, job_name: str, spec: str, tz: str, next_run_at: datetime
    ) -> Row:
        return await conn.fetchrow(self.q["schedule_upsert"], name, job_name, spec, tz, next_run_at)

    async def schedule_tick_enqueue(
        self,
        conn: Conn,
        schedule_name: str,
        tick: datetime,
        job: NewJob,
        next_run_at: datetime,
        expires_after: float | None = None,
        gates: Any = None,
    ) -> tuple[bool, uuid.UUID | None]:
        """(tick claimed by this call, id of the job it inserted or None). The job is due at
        the tick (or now, if the tick is in the future); ``job.scheduled_at`` is not used;
        it expires ``expires_after`` seconds from now (the task's ``expires_after``) and
        counts against ``gates`` (soniq.limits.JobGates) if given."""
        row = await conn.fetchrow(
            self.q["schedule_tick_enqueue"],
            schedule_name,
            tick,
            *job.columns(),
            job.dedup_key,
            next_run_at,
            self.channel,
            expires_after,
            *(gates.rows() if gates is not None else (None, None, None, None)),
            gates.more_json() if gates is not None else None,
        )
        return bool(row["claimed"]), row["id"]

    async def schedule_list(self) -> list[Row]:
        return await self.pool.fetch(self.q["schedule_list"])  # type: ignore[no-any-return]

    async def periodic_tick_prune(self, conn: Conn, older_than: float, limit: int) -> int:
        rows = await conn.fetch(self.q["periodic_tick_prune"], float(older_than), limit)
        return len(rows)

    # -- dashboard reads (soniq/sql/dashboard.sql) -------------------------------------------

    async def _fetch_custom_plan(self, name: str, *args: Any) -> list[Row]:
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(self.q["plan_custom_local"])
            return await conn.fetch(self.q[name], *args)  # type: ignore[no-any-return]

    async def job_page(
        self,
        before: uuid.UUID | None,
        status: str | None,
        queue: str | None,
        job_name: str | None,
        limit: int,
        tags: str | None = None,
    ) -> list[Row]:
        return await self._fetch_custom_plan(
            "job_page", before, status, queue, job_name, limit, tags
        )

    async def dead_letter_page(
        self, before: uuid.UUID | None, job_name: str | None, limit: int
    ) -> list[Row]:
        return await self._fetch_custom_plan("dead_letter_page", before, job_name, limit)

    async def job_minutes(self, minutes: int) -> list[Row]:
        return await self.pool.fetch(self.q["job_minutes"], minutes)  # type: ignore[no-any-return]

    async def job_running(self, limit: int) -> list[Row]:
        return await self.pool.fetch(self.q["job_running"], limit)  # type: ignore[no-any-return]

    async def job_statuses(self, ids: Sequence[uuid.UUID]) -> list[Row]:
        return await self.pool.fetch(  # type: ignore[no-any-return]
            self.q["job_statuses"], list(ids)
        )

    # -- continuations and workflows (soniq/sql/workflows.sql) -----------------------------

    async def job_insert_dag(self, conn: Conn | None, params: Sequence[Any]) -> Row:
        """Insert jobs with parents in one statement (see ``job_insert_dag``); ``params`` are
        its parameters $1..$14 (the wake-up channel is added here)."""
        c = conn if conn is not None else self.pool
        return await c.fetchrow(self.q["job_insert_dag"], *params, self.channel)

    async def job_existing(self, ids: list[uuid.UUID]) -> set[str]:
        rows = await self.pool.fetch(self.q["job_existing"], ids)
        return {r[0] for r in rows}

    async def workflow_get(self, wf_id: uuid.UUID) -> Row | None:
        return await self.pool.fetchrow(self.q["workflow_get"], wf_id)

    async def workflow_steps(self, wf_id: uuid.UUID) -> list[Row]:
        return await self.pool.fetch(self.q["workflow_steps"], wf_id)  # type: ignore[no-any-return]

    async def workflow_list(self, status: str | None, limit: int) -> list[Row]:
        return await self.pool.fetch(self.q["workflow_list"], status, limit)  # type: ignore[no-any-return]

    async def workflow_cancel(self, wf_id: uuid.UUID, abort: bool) -> int:
        row = await self.pool.fetchrow(self.q["workflow_cancel"], wf_id, abort, self.channel)
        return int(row["cancelled"])


# -- enqueue on a DB-API connection (psycopg 3, Django): the same named queries ---------------

_PLACEHOLDER = re.compile(r"\$(\d+)")


def pyformat(sql: str) -> tuple[str, list[int]]:
    """``sql`` with asyncpg's ``$n`` placeholders as DB-API ``%s`` (and ``%`` doubled), and
    for each ``%s`` the 0-based index of the parameter it takes."""
    order: list[int] = []

    def sub(m: re.Match[str]) -> str:
        order.append(int(m.group(1)) - 1)
        return "%s"

    return _PLACEHOLDER.sub(sub, sql.replace("%", "%%")), order


def _dbapi_fetchval(cursor: Any, name: str, schema: str, *args: Any) -> Any:
    sql, order = pyformat(query(name, schema))
    cursor.execute(sql, [args[i] for i in order])
    row = cursor.fetchone()
    return None if row is None else row[0]


def job_insert_dbapi(cursor: Any, schema: str, job: NewJob, trace: str | None = None) -> str:
    """``Database.job_insert`` on a DB-API cursor (its connection's transaction), with the
    same named queries: one statement, or two when an active job holds the dedup key.
    ``trace``: the W3C context to store (``job_insert_traced``), when tracing."""
    channel = f"soniq_{schema}"
    if trace is not None:
        args = (*job.columns(), job.scheduled_at, job.dedup_key, channel, trace)
        got = _dbapi_fetchval(cursor, "job_insert_traced", schema, *args)
        if got is not None or job.dedup_key is None:
            return job.id
    if job.dedup_key is None:
        _dbapi_fetchval(
            cursor, "job_insert_plain", schema, *job.columns(), job.scheduled_at, channel
        )
        return job.id
    for _ in range(10):
        got = _dbapi_fetchval(
            cursor, "job_insert", schema, *job.columns(), job.scheduled_at, job.dedup_key, channel
        )
        if got is not None:
            return str(got)
        existing = _dbapi_fetchval(cursor, "job_get_active_by_dedup_key", schema, job.dedup_key)
        if existing is not None:
            return str(existing)
    raise SoniqError(ENQUEUE_INVALID, f"dedup_key {job.dedup_key!r} kept changing hands; retry")


def job_insert_many_dbapi(
    cursor: Any, schema: str, jobs: NewJobs, trace: str | None = None
) -> None:
    """``Database.job_insert_many`` (or its traced twin) on a DB-API cursor."""
    name = "job_insert_many" if trace is None else "job_insert_many_traced"
    sql, order = pyformat(query(name, schema))
    args = [
        "{" + ",".join(jobs.ids) + "}",
        jobs.job_name,
        jobs.queue,
        jobs.priority,
        jobs.args,
        jobs.max_attempts,
        jobs.scheduled_at,
        f"soniq_{schema}",
        trace,
    ]
    cursor.execute(sql, [args[i] for i in order])


async def begin_sqlalchemy(conn: Any) -> None:
    """Make a SQLAlchemy ``AsyncConnection`` begin its driver's transaction (it does so
    lazily, at the first statement): one ping through it."""
    await conn.exec_driver_sql(_raw_queries()["connection_ping"])
