"""Migration 008 upgrades, in place, a database set up by the release before it, with jobs
queued, running and done: they keep their state, and an old job can be a parent."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg

from soniq import JobStatus, Soniq
from soniq import db as soniq_db
from soniq.migrate import available
from tests.conftest import FAST_SETTINGS


async def test_upgrade_with_rows_then_after_on_an_old_job(pg_url: str, schema_name: str) -> None:
    before = [m for m in available() if m.version < 8]
    conn = await asyncpg.connect(pg_url)
    jobs = f'"{schema_name}".soniq_jobs'
    queued, running, done = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    try:
        async with conn.transaction():
            await soniq_db.migration_table_ensure(conn, schema_name)
            for m in before:
                await soniq_db.migration_apply(conn, schema_name, m.version, m.name, m.sql)
        await conn.execute(
            f"INSERT INTO {jobs} (id, job_name, args) VALUES ($1, 'add', '{{\"x\": 1}}')", queued
        )
        await conn.execute(
            f"INSERT INTO {jobs} (id, job_name, args, status, attempts, worker_id, started_at) "
            "VALUES ($1, 'add', '{\"x\": 2}', 'processing', 1, 'w', now())",
            running,
        )
        await conn.execute(
            f"INSERT INTO {jobs} (id, job_name, args, status, result, finished_at) "
            "VALUES ($1, 'add', '{\"x\": 3}', 'done', '30', now())",
            done,
        )
    finally:
        await conn.close()

    app = Soniq(database_url=pg_url, schema=schema_name, **FAST_SETTINGS)
    try:
        assert await app.setup() == len(available()) - len(before)
        for job_id, status in (
            (queued, JobStatus.QUEUED),
            (running, JobStatus.PROCESSING),
            (done, JobStatus.DONE),
        ):
            job = await app.get_job(str(job_id))
            assert job is not None and job["status"] == status
            assert (job["workflow_id"], job["step"], job["after"]) == (None, None, [])

        @app.job(name="add")
        async def add(x: int) -> int:
            return x * 10

        child = await app.enqueue(add, x=4, after=[str(queued), str(done)])
        assert (await app.get_job(child) or {})["status"] == JobStatus.WAITING
        stop = asyncio.Event()
        worker = asyncio.create_task(app.run_worker(shutdown_event=stop))
        try:
            finished = await asyncio.wait_for(app.wait(child), 30)
        finally:
            stop.set()
            await asyncio.wait_for(worker, 15)
        assert finished["status"] == JobStatus.DONE
    finally:
        await app.close()
        conn = await asyncpg.connect(pg_url)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema_name}" CASCADE')
        finally:
            await conn.close()
