"""Dashboard pages over a big history: ``python -m benchmarks.run --only dashboard``.

Fills one schema with ``rows`` jobs (default 1,000,000: 96.4% done, 2% cancelled, 1%
dead-lettered, 0.5% queued, 0.1% running; 5 queues, 7 tasks; ids in time order, as soniq's
ULIDs are), then renders each page through the ASGI app the way a browser asks for it and
reports the median and p95 time per page. Target (DESIGN.md / issue 15): a page of 50 jobs
in under 100 ms at 1,000,000 rows. Not in the default run: the fill takes a minute or two.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import asyncpg
import httpx

from benchmarks.common import Result, drop_schema, fresh_schema
from soniq import Soniq

SCHEMA = "bench_dashboard"
TOKEN = "bench"
TARGET_MS = 100.0

# One INSERT ... SELECT: job g of $1 was created (rows - g) * 100 ms ago; its id is a
# ULID-shaped uuid of that instant, so the primary key orders jobs by age as in production.
FILL = """
INSERT INTO {schema}.soniq_jobs (id, job_name, queue, args, status, attempts, created_at,
    scheduled_at, started_at, finished_at, last_error, errors, dead_reason, dead_lettered_at,
    worker_id)
SELECT (lpad(to_hex((extract(epoch FROM t.at) * 1000)::bigint), 12, '0')
        || substr(md5(g::text), 1, 20))::uuid,
       'task.' || (g % 7), 'q' || (g % 5), jsonb_build_object('n', g, 'who', 'user' || g % 100),
       s.status, CASE WHEN s.status = 'queued' THEN 0 ELSE 1 END, t.at, t.at,
       CASE WHEN s.status IN ('queued', 'cancelled') THEN NULL ELSE t.at END,
       CASE WHEN s.status IN ('done', 'cancelled') THEN t.at + interval '1 second' END,
       CASE WHEN s.status = 'dead_letter' THEN 'RuntimeError: boom ' || g END,
       CASE WHEN s.status = 'dead_letter' THEN jsonb_build_array(jsonb_build_object(
           'attempt', 1, 'error', 'RuntimeError: boom ' || g, 'at', t.at)) END,
       CASE WHEN s.status = 'dead_letter' THEN 'max_retries_exceeded' END,
       CASE WHEN s.status = 'dead_letter' THEN t.at + interval '1 second' END,
       CASE WHEN s.status = 'processing' THEN 'bench-worker' END
FROM generate_series(1, $1) AS g
CROSS JOIN LATERAL (SELECT now() - ($1 - g) * interval '100 milliseconds' AS at) AS t
CROSS JOIN LATERAL (SELECT CASE
    WHEN g % 1000 < 10 THEN 'dead_letter'
    WHEN g % 1000 < 15 THEN 'queued'
    WHEN g % 1000 = 15 THEN 'processing'
    WHEN g % 1000 < 36 THEN 'cancelled'
    ELSE 'done' END AS status) AS s
"""


async def fill(conn: Any, schema: str, rows: int) -> None:
    """``rows`` jobs in every state into ``schema`` (set up already), then ANALYZE."""
    await conn.execute(FILL.replace("{schema}", f'"{schema}"'), rows)
    await conn.execute(f'ANALYZE "{schema}".soniq_jobs')


def pages(mid: str, dead_mid: str, one: str) -> dict[str, str]:
    """Page label -> URL; every jobs/dead-letter page shows 50 rows."""
    return {
        "jobs": "/jobs",
        "jobs_older": f"/jobs?before={mid}",
        "jobs_done": "/jobs?status=done",
        "jobs_dead_letter": "/jobs?status=dead_letter",
        "jobs_queued": "/jobs?status=queued",
        "jobs_processing": "/jobs?status=processing",
        "jobs_queue": "/jobs?queue=q3",
        "jobs_task": "/jobs?task=task.3",
        "jobs_queued_in_queue": "/jobs?status=queued&queue=q2",
        "dead_letters": "/dead-letters",
        "dead_letters_older": f"/dead-letters?before={dead_mid}",
        "job": f"/jobs/{one}",
        "overview": "/",
    }


async def run(url: str, rows: int, repeats: int = 30) -> list[Result]:
    from soniq.dashboard import create_app

    await fresh_schema(url, SCHEMA)
    app = Soniq(database_url=url, schema=SCHEMA)
    out: list[Result] = []
    try:
        await app.setup()
        conn = await asyncpg.connect(url)
        try:
            started = time.perf_counter()
            await fill(conn, SCHEMA, rows)
            fill_s = time.perf_counter() - started
            mid = str(
                await conn.fetchval(
                    f'SELECT id FROM "{SCHEMA}".soniq_jobs ORDER BY id OFFSET $1 LIMIT 1', rows // 2
                )
            )
            dead_mid = str(
                await conn.fetchval(
                    f"""SELECT id FROM "{SCHEMA}".soniq_jobs WHERE status = 'dead_letter'
                    ORDER BY id OFFSET $1 LIMIT 1""",
                    rows // 200,
                )
            )
        finally:
            await conn.close()
        web = create_app(app, token=TOKEN)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=web),
            base_url="http://bench",
            headers={"Authorization": f"Bearer {TOKEN}"},
        ) as client:
            for label, path in pages(mid, dead_mid, mid).items():
                times = []
                for i in range(repeats + 3):
                    t0 = time.perf_counter()
                    r = await client.get(path)
                    elapsed = (time.perf_counter() - t0) * 1000
                    assert r.status_code == 200, (path, r.status_code)
                    if i >= 3:  # the first requests warm the pool and the prepared statements
                        times.append(elapsed)
                times.sort()
                p50 = statistics.median(times)
                p95 = times[max(0, int(len(times) * 0.95) - 1)]
                row = Result(
                    f"dashboard.{label}",
                    f"GET {path} at {rows:,} rows",
                    count=repeats,
                    seconds=sum(times) / 1000,
                    extra={
                        "p50_ms": round(p50, 1),
                        "p95_ms": round(p95, 1),
                        "rows": rows,
                        "fill_s": round(fill_s, 1),
                    },
                )
                if label != "overview":
                    row.target = f"p95 < {TARGET_MS:.0f} ms"
                    row.passed = p95 < TARGET_MS
                out.append(row)
    finally:
        await app.close()
        await drop_schema(url, SCHEMA)
    return out
