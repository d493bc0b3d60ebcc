"""The dashboard's reads over a 200,000-row history: index scans only (no sequential scan
of the job table), for every filter a page offers, planned as the dashboard runs them
(custom plans, see ``plan_custom_local``)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from benchmarks.dashboard import fill
from soniq import Soniq
from soniq.queries import load_queries
from tests.db.test_query_plan import job_scans, nodes

ROWS = 200_000
NONE = None


def cases(mid: Any) -> list[tuple[str, str, tuple[Any, ...]]]:
    """(label, query, parameters) of each read a page makes."""
    return [
        ("jobs", "job_page", (NONE, NONE, NONE, NONE, 51, NONE)),
        ("jobs older", "job_page", (mid, NONE, NONE, NONE, 51, NONE)),
        *(
            (f"jobs {s}", "job_page", (NONE, s, NONE, NONE, 51, NONE))
            for s in ("queued", "processing", "done", "dead_letter", "cancelled")
        ),
        ("jobs dead older", "job_page", (mid, "dead_letter", NONE, NONE, 51, NONE)),
        ("jobs queue", "job_page", (NONE, NONE, "q3", NONE, 51, NONE)),
        ("jobs task", "job_page", (NONE, NONE, NONE, "task.3", 51, NONE)),
        ("jobs queued in queue", "job_page", (NONE, "queued", "q2", NONE, 51, NONE)),
        ("jobs with a tag", "job_page", (NONE, NONE, NONE, NONE, 51, '{"tenant": "t3"}')),
        ("dead letters", "dead_letter_page", (NONE, NONE, 51)),
        ("dead letters older", "dead_letter_page", (mid, NONE, 51)),
        ("dead letters of a task", "dead_letter_page", (NONE, "task.3", 51)),
        ("per minute", "job_minutes", (60,)),
        ("queue depths (overview, live updates)", "queue_depth", ()),
        ("running", "job_running", (200,)),
        ("statuses", "job_statuses", ([mid],)),
    ]


@pytest.fixture
async def history(app: Soniq) -> tuple[Soniq, Any]:
    async with app.backend.acquire() as conn:
        await fill(conn, app.schema, ROWS)
        mid = await conn.fetchval(
            f'SELECT id FROM "{app.schema}".soniq_jobs ORDER BY id OFFSET $1 LIMIT 1', ROWS // 2
        )
    return app, mid


async def test_dashboard_reads_use_indexes(history: tuple[Soniq, Any]) -> None:
    app, mid = history
    queries = load_queries(app.schema)
    async with app.backend.acquire() as conn:
        for label, name, params in cases(mid):
            async with conn.transaction():
                await conn.execute(queries["plan_custom_local"])
                raw = await conn.fetchval("EXPLAIN (FORMAT JSON) " + queries[name], *params)
            plan = (json.loads(raw) if isinstance(raw, str) else raw)[0]["Plan"]
            text = json.dumps(plan, indent=1)
            scans = list(job_scans(plan))
            assert scans, f"{label}: no scan of soniq_jobs?\n{text}"
            for scan in scans:
                assert scan["Node Type"] in {"Index Scan", "Index Only Scan", "Bitmap Heap Scan"}, (
                    f"{label}: {scan['Node Type']} on soniq_jobs\n{text}"
                )
            if name == "job_page" and params[1] is None and params[5] is None:
                # no status filter: the primary key walked backwards from the cursor
                assert any(n.get("Index Name") == "soniq_jobs_pkey" for n in nodes(plan)), (
                    f"{label}: not on the primary key\n{text}"
                )
