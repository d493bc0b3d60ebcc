"""Migration 003 upgrades, in place, a database set up by the release before it, with jobs
queued and running: the rows keep their state and the worker carries on with them."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg

from soniq import JobStatus, Soniq
from soniq import db as soniq_db
from soniq.migrate import available
from tests.conftest import FAST_SETTINGS


async def test_upgrade_with_queued_and_running_jobs(pg_url: str, schema_name: str) -> None:
    before = [m for m in available() if m.version < 3]
    conn = await asyncpg.connect(pg_url)
    try:
        async with conn.transaction():
            await soniq_db.migration_table_ensure(conn, schema_name)
            for m in before:
                await soniq_db.migration_apply(conn, schema_name, m.version, m.name, m.sql)
        jobs = f'"{schema_name}".soniq_jobs'
        queued, running = uuid.uuid4(), uuid.uuid4()
        await conn.execute(
            f"INSERT INTO {jobs} (id, job_name, args) VALUES ($1, 'add', '{{\"x\": 1}}')", queued
        )
        await conn.execute(
            f"INSERT INTO {jobs} (id, job_name, args, status, attempts, worker_id, started_at) "
            "VALUES ($1, 'add', '{\"x\": 2}', 'processing', 1, 'old-worker', now())",
            running,
        )
        await conn.execute(
            f'INSERT INTO "{schema_name}".soniq_workers (id, hostname, pid, concurrency) '
            "VALUES ('old-worker', 'h', 1, 1)"
        )
    finally:
        await conn.close()

    app = Soniq(database_url=pg_url, schema=schema_name, **FAST_SETTINGS)
    try:
        assert await app.setup() == len(available()) - len(before)
        for job_id, status in ((queued, JobStatus.QUEUED), (running, JobStatus.PROCESSING)):
            job = await app.get_job(str(job_id))
            assert job is not None and job["status"] == status
            assert job["tags"] is None and job["cancel_reason"] is None
            assert job["progress"] is None

        @app.job(name="add")
        async def add(x: int) -> int:
            return x * 10

        # the old worker is silent: its running job is rescued, and both run to the end
        stop = asyncio.Event()
        worker = asyncio.create_task(app.run_worker(shutdown_event=stop))
        try:
            results: list[Any] = await asyncio.wait_for(
                asyncio.gather(app.wait(str(queued)), app.wait(str(running))), 30
            )
        finally:
            stop.set()
            await asyncio.wait_for(worker, 15)
        assert [r["status"] for r in results] == [JobStatus.DONE, JobStatus.DONE]
        assert await app.get_result(str(queued)) == 10
        assert await app.get_result(str(running)) == 20
        # and the new features work on the upgraded schema
        tagged = await app.enqueue(add, x=3, tags={"after": "upgrade"})
        assert [j["id"] for j in await app.list_jobs(tags={"after": "upgrade"})] == [tagged]
    finally:
        await app.close()
        conn = await asyncpg.connect(pg_url)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema_name}" CASCADE')
        finally:
            await conn.close()
