"""Migration 006 upgrades a database set up by the previous release in place, rows present."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

from soniq import Soniq, db, migrate


async def test_006_applies_over_a_release_database_with_rows(
    pg_url: str, schema_name: str, make_app: Any
) -> None:
    conn = await asyncpg.connect(pg_url)
    try:
        await db.migration_table_ensure(conn, schema_name)
        (first,) = [m for m in migrate.available() if m.version == 1]
        await db.migration_apply(conn, schema_name, 1, first.name, first.sql)
        old = uuid.uuid4()
        await conn.execute(
            f'INSERT INTO "{schema_name}".soniq_jobs (id, job_name, status, attempts) '
            "VALUES ($1, 'legacy.task', 'processing', 1)",
            old,
        )
    finally:
        await conn.close()
    app: Soniq = await make_app()  # setup applies every pending migration, 006 included
    assert {m.version for m in await app.migration_status() if m.applied_at} >= {1, 6}
    await app.webhooks.add("https://example.com/hook", events=["job.succeeded"])
    async with app.backend.acquire() as c:
        await c.execute(
            f"UPDATE \"{schema_name}\".soniq_jobs SET status = 'done' WHERE id = $1", old
        )
        args = await c.fetchval(
            f"SELECT args FROM \"{schema_name}\".soniq_jobs WHERE queue = 'soniq.webhooks'"
        )
    assert args["event"] == "job.succeeded" and args["job"]["id"] == str(old)
