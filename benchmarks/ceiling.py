"""The bare-SQL ceiling: what asyncpg and this PostgreSQL do with no library in between.

A minimal job table (id, queue, args, status, priority, scheduled_at; a primary key and one
partial index in claim order), written and drained by the plainest loops: one prepared
statement per round trip, ids and payloads made before the clock starts.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import asyncpg
from ulid import ULID

from benchmarks.common import Result, drop_schema, fresh_schema, timed_rate

SCHEMA = "bench_ceiling"
TABLE = f"{SCHEMA}.jobs"

CREATE = f"""
CREATE TABLE {TABLE} (
    id           uuid PRIMARY KEY,
    queue        text        NOT NULL,
    args         jsonb       NOT NULL,
    status       text        NOT NULL DEFAULT 'queued',
    priority     integer     NOT NULL DEFAULT 100,
    scheduled_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX jobs_claim_idx ON {TABLE} (priority, scheduled_at, id) WHERE status = 'queued';
"""
INSERT = f"INSERT INTO {TABLE} (id, queue, args) VALUES ($1, $2, $3::jsonb)"
CLAIM = f"""
WITH due AS (
    SELECT id FROM {TABLE}
    WHERE status = 'queued' AND scheduled_at <= now()
    ORDER BY priority, scheduled_at, id
    LIMIT 100
    FOR UPDATE SKIP LOCKED
)
UPDATE {TABLE} AS j SET status = 'processing' FROM due WHERE j.id = due.id
RETURNING j.id, j.args
"""
COMPLETE = f"UPDATE {TABLE} SET status = 'done' WHERE id = ANY($1::uuid[])"
ARGS = json.dumps({"n": 1})


def _ids(n: int) -> list[uuid.UUID]:
    return [ULID().to_uuid() for _ in range(n)]


async def _reset_table(url: str) -> None:
    await fresh_schema(url, SCHEMA)
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(CREATE)
    finally:
        await conn.close()


class InsertSequential:
    """Single-row INSERTs, one after the other, on one connection."""

    async def setup(self, url: str) -> None:
        self.url = url
        await _reset_table(url)
        self.conn = await asyncpg.connect(url)
        self.stmt = await self.conn.prepare(INSERT)
        for i in _ids(20):
            await self.stmt.fetch(i, "default", ARGS)

    async def round(self, n: int) -> float:
        ids = _ids(n)
        stmt = self.stmt
        start = time.perf_counter()
        for i in ids:
            await stmt.fetch(i, "default", ARGS)
        return time.perf_counter() - start

    async def teardown(self) -> None:
        await self.conn.close()
        await drop_schema(self.url, SCHEMA)


class InsertConcurrent:
    """Single-row INSERTs from ``tasks`` tasks, each on its own connection.

    The connections are opened and prepared before each timed round and closed after it, so
    this side and soniq's never hold connections at the same time (max_connections).
    """

    def __init__(self, tasks: int) -> None:
        self.tasks = tasks

    async def setup(self, url: str) -> None:
        self.url = url
        await _reset_table(url)

    async def round(self, n: int) -> float:
        ids = _ids(n)
        chunks = [ids[i :: self.tasks] for i in range(self.tasks)]
        conns = await asyncio.gather(*(asyncpg.connect(self.url) for _ in range(self.tasks)))
        try:
            stmts = await asyncio.gather(*(c.prepare(INSERT) for c in conns))
            await asyncio.gather(*(s.fetch(ULID().to_uuid(), "default", ARGS) for s in stmts))

            async def produce(stmt: Any, mine: list[uuid.UUID]) -> None:
                for i in mine:
                    await stmt.fetch(i, "default", ARGS)

            start = time.perf_counter()
            await asyncio.gather(*(produce(s, m) for s, m in zip(stmts, chunks, strict=True)))
            return time.perf_counter() - start
        finally:
            await asyncio.gather(*(c.close() for c in conns))

    async def teardown(self) -> None:
        await drop_schema(self.url, SCHEMA)


class Copy:
    """COPY of ``n`` rows in one statement."""

    async def setup(self, url: str) -> None:
        self.url = url
        await _reset_table(url)
        self.conn = await asyncpg.connect(url)

    async def round(self, n: int) -> float:
        records = [(i, "default", ARGS) for i in _ids(n)]
        start = time.perf_counter()
        await self.conn.copy_records_to_table(
            "jobs", schema_name=SCHEMA, columns=["id", "queue", "args"], records=records
        )
        return time.perf_counter() - start

    async def teardown(self) -> None:
        await self.conn.close()
        await drop_schema(self.url, SCHEMA)


async def claim_complete(url: str, n: int) -> Result:
    """One consumer: claim 100 with SKIP LOCKED, mark those 100 done; until none is left."""
    await _reset_table(url)
    records = [(i, "default", ARGS) for i in _ids(n)]
    conn = await asyncpg.connect(url)
    try:
        await conn.copy_records_to_table(
            "jobs", schema_name=SCHEMA, columns=["id", "queue", "args"], records=records
        )
        await conn.execute(f"VACUUM ANALYZE {TABLE}")
        claim = await conn.prepare(CLAIM)
        complete = await conn.prepare(COMPLETE)
        done = 0
        start = time.perf_counter()
        while True:
            rows = await claim.fetch()
            if not rows:
                break
            await complete.fetch([r["id"] for r in rows])
            done += len(rows)
        seconds = time.perf_counter() - start
        left = await conn.fetchval(f"SELECT count(*) FROM {TABLE} WHERE status <> 'done'")
    finally:
        await conn.close()
        await drop_schema(url, SCHEMA)
    if done != n or left != 0:
        raise RuntimeError(f"ceiling claim loop finished {done} of {n} rows, {left} left")
    return Result(
        "ceiling.claim",
        "bare claim 100 + complete 100, 1 consumer",
        n,
        seconds,
        timed_rate(n, seconds),
    )
