"""A tag filter on a million-row job table uses the tags index, not a scan of the table."""

from __future__ import annotations

import json
import time

from soniq import Soniq
from soniq.queries import load_queries
from tests.db.test_query_plan import nodes

ROWS = 1_000_000


async def test_tag_filter_uses_the_gin_index(app: Soniq) -> None:
    schema = f'"{app.schema}"'
    async with app.backend.acquire() as conn:
        t0 = time.monotonic()
        # a tenth of the jobs carry tags, over 1,000 tenants; the rest carry none
        await conn.execute(
            f"""INSERT INTO {schema}.soniq_jobs (id, job_name, status, tags)
            SELECT gen_random_uuid(), 'bulk', CASE WHEN i % 3 = 0 THEN 'done' ELSE 'queued' END,
                   CASE WHEN i % 10 = 0
                        THEN jsonb_build_object('tenant', 't' || ((i / 10) % 1000), 'kind', 'k')
                   END
            FROM generate_series(1, {ROWS}) AS i"""
        )
        await conn.execute(f"ANALYZE {schema}.soniq_jobs")
        print(f"filled {ROWS} rows in {time.monotonic() - t0:.1f}s")
        sql = load_queries(app.schema)["job_list_tagged"]
        args = (None, None, None, 100, 0, json.dumps({"tenant": "t7"}))
        for mode in ("force_custom_plan", "force_generic_plan"):
            await conn.execute(f"SET plan_cache_mode = {mode}")
            stmt = await conn.prepare("EXPLAIN (FORMAT JSON) " + sql)
            raw = await stmt.fetchval(*args)
            plan = (json.loads(raw) if isinstance(raw, str) else raw)[0]["Plan"]
            used = {n.get("Index Name") for n in nodes(plan)}
            scans = {n["Node Type"] for n in nodes(plan)}
            assert "soniq_jobs_tags_idx" in used, json.dumps(plan, indent=1)
            assert "Seq Scan" not in scans, json.dumps(plan, indent=1)
        await conn.execute("RESET plan_cache_mode")
    found = await app.list_jobs(tags={"tenant": "t7"}, limit=1000)
    assert len(found) == 100 and all(j["tags"]["tenant"] == "t7" for j in found)
