"""The connection budget of one worker process, read from pg_stat_activity.

A worker holds three connections of its own whatever its concurrency: the claim loop's
(claims, outcomes, registration), the heartbeat's (heartbeat and maintenance) and the LISTEN
connection. Its pool is for its handlers: it holds ``pool_min_size`` idle connections and
grows only while handlers borrow them.
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg

from soniq import Soniq
from tests.conftest import wait_for
from tests.process.test_worker_process import WorkerProcess


async def _by_kind(conn: Any, schema: str) -> dict[str, int]:
    rows = await conn.fetch(
        "SELECT application_name AS name, count(*) AS n FROM pg_stat_activity "
        "WHERE application_name LIKE $1 GROUP BY 1",
        f"soniq:{schema}%",
    )
    return {r["name"]: int(r["n"]) for r in rows}


async def _own(conn: Any, schema: str) -> int:
    return sum(n for name, n in (await _by_kind(conn, schema)).items() if name != f"soniq:{schema}")


async def test_worker_holds_three_connections_of_its_own(
    app: Soniq, cli_env: dict[str, str], pg_url: str
) -> None:
    from tests.scale import sleepy_jobs

    app.tasks.update(sleepy_jobs.app.tasks)
    monitor = await asyncpg.connect(pg_url)
    # concurrency 50, handlers that never touch the database, an idle pool of 0 at rest
    env = {**cli_env, "SONIQ_POOL_MIN_SIZE": "0"}
    w = WorkerProcess(env, "--concurrency", "50", module="tests.scale.sleepy_jobs")
    try:
        ids = await app.enqueue_many("sleepy", [{"seconds": 3.0} for _ in range(50)])
        await app.close()  # the test's own pool shares the application_name: count none of it

        async def all_running() -> bool:
            n = await monitor.fetchval(
                f"SELECT count(*) FROM \"{app.schema}\".soniq_jobs WHERE status = 'processing'"
            )
            return int(n) == len(ids)

        await wait_for(all_running, timeout=30, message="50 jobs running at once")
        # sample while the 50 handlers run and maintenance passes come and go
        peak: dict[str, int] = {}
        for _ in range(20):
            kinds = await _by_kind(monitor, app.schema)
            for k, v in kinds.items():
                peak[k] = max(peak.get(k, 0), v)
            await asyncio.sleep(0.1)
        own = {k: v for k, v in peak.items() if k != f"soniq:{app.schema}"}
        print(f"\nworker connections at concurrency 50 (peak per kind): {peak}")
        assert sum(own.values()) <= 3, own
        assert own == {
            f"soniq:{app.schema}:claim": 1,
            f"soniq:{app.schema}:heartbeat": 1,
            f"soniq:{app.schema}:listen": 1,
        }
        assert peak.get(f"soniq:{app.schema}", 0) == 0, "the pool opened without a borrower"
    finally:
        w.signal(15)
        assert await w.wait(30) == 0, w.output()
        w.kill()
        await monitor.close()
