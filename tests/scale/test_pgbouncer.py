"""soniq behind a transaction-pooling PgBouncer (Debian's pgbouncer, started by the test).

The pool's connections go through PgBouncer (``pgbouncer=True``: no named prepared
statements, which would be looked up on another server connection); LISTEN, advisory locks
and the worker's claim use ``direct_database_url``.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import pytest

from soniq import Soniq, SoniqError
from tests.conftest import FAST_SETTINGS, wait_for
from tests.process.test_worker_process import WorkerProcess
from tests.process.worker_jobs import RUNS_TABLE
from tests.scale.servers import PgBouncer, server_dir


@pytest.fixture
def bouncer(pg_url: str) -> Iterator[PgBouncer]:
    root = server_dir("pgbouncer")
    b = PgBouncer(root, pg_url, pool_size=4)
    try:
        b.start()
        yield b
    finally:
        b.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
async def bounced(bouncer: PgBouncer, pg_url: str, schema_name: str) -> AsyncIterator[Soniq]:
    """An app whose pool goes through PgBouncer; the schema is set up through it too."""
    app = Soniq(
        database_url=bouncer.url(),
        pgbouncer=True,
        direct_database_url=pg_url,
        schema=schema_name,
        pool_max_size=20,
        **FAST_SETTINGS,
    )
    from tests.process import worker_jobs

    app.tasks["record"] = worker_jobs.app.tasks["record"]  # enqueue the workers' handler
    await app.setup()
    async with app.backend.acquire() as conn:
        await conn.execute(RUNS_TABLE.format(schema=f'"{schema_name}"'))
    yield app
    await app.close()
    conn = await asyncpg.connect(pg_url)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema_name}" CASCADE')
    finally:
        await conn.close()


async def test_pgbouncer_without_direct_url_refuses_session_features(
    bouncer: PgBouncer, schema_name: str
) -> None:
    app = Soniq(database_url=bouncer.url(), pgbouncer=True, schema=schema_name)
    try:
        with pytest.raises(SoniqError) as err:
            await app.connect()
        assert err.value.error_code == "SONIQ_SETTINGS_INVALID"
        assert "SONIQ_DIRECT_DATABASE_URL" in str(err.value)
    finally:
        await app.close()


async def test_transactional_enqueue_through_pgbouncer(bounced: Soniq, pg_url: str) -> None:
    db = await bounced.database()
    async with db.pool.acquire() as conn:
        async with conn.transaction():
            kept = await bounced.enqueue("record", connection=conn)
        with pytest.raises(RuntimeError):
            async with conn.transaction():
                await bounced.enqueue("record", connection=conn)
                raise RuntimeError("roll back")
    direct = await asyncpg.connect(pg_url)
    try:
        rows = await direct.fetch(f'SELECT id::text FROM "{bounced.schema}".soniq_jobs')
    finally:
        await direct.close()
    assert [r["id"] for r in rows] == [kept]
    job = await bounced.get_job(kept)
    assert job is not None and job["status"] == "queued"


async def test_fifty_producers_and_four_workers_through_pgbouncer(
    bounced: Soniq, bouncer: PgBouncer, pg_url: str, cli_env: dict[str, str]
) -> None:
    per_producer = 20
    producers = 50

    async def produce(p: int) -> list[str]:
        return [await bounced.enqueue("record") for _ in range(per_producer)]

    # more client connections (20) than PgBouncer has server connections (4): statements of
    # different clients share server connections, as they do in production
    ids = [i for chunk in await asyncio.gather(*(produce(p) for p in range(producers)))
           for i in chunk]
    assert len(set(ids)) == producers * per_producer

    env = {**cli_env, "SONIQ_DATABASE_URL": bouncer.url(), "SONIQ_PGBOUNCER": "true",
           "SONIQ_DIRECT_DATABASE_URL": pg_url}
    workers = [WorkerProcess(env, "--concurrency", "5") for _ in range(4)]
    direct = await asyncpg.connect(pg_url)
    try:
        async def all_done() -> bool:
            n = await direct.fetchval(
                f"SELECT count(*) FROM \"{bounced.schema}\".soniq_jobs WHERE status = 'done'"
            )
            return int(n) == len(ids)

        try:
            await wait_for(all_done, timeout=90, message=f"{len(ids)} jobs done")
        except AssertionError:
            for w in workers:
                print(f"--- worker {w.pid} ---\n{w.output()}")
            print(f"--- pgbouncer ---\n{bouncer.log_text()[-4000:]}")
            raise
        runs: list[Any] = await direct.fetch(
            f'SELECT job_id::text AS id, count(*) AS n FROM "{bounced.schema}".test_runs '
            "GROUP BY job_id"
        )
        assert {r["id"] for r in runs} == set(ids)
        assert max(r["n"] for r in runs) == 1, "a job ran twice"
        pids = await direct.fetchval(
            f'SELECT count(DISTINCT pid) FROM "{bounced.schema}".test_runs'
        )
        assert pids >= 2, "the work was not shared between workers"
    finally:
        await direct.close()
        for w in workers:
            w.signal(15)
        for w in workers:
            assert await w.wait(30) == 0, w.output()
            w.kill()
