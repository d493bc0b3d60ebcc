"""The worker's claim connection never JIT-compiles. Its planner settings (enable_seqscan,
enable_sort... off) add PostgreSQL 13-17's disable_cost (1e10) to any plan holding a node
with no alternative (the limited claim's sort of counter rows, the webhook trigger's sort of
its transition table), far over jit_above_cost: where the server has LLVM, every claim and
outcome statement then compiled for 0.3-1 s. PostgreSQL 18 no longer adds that cost."""

from __future__ import annotations

import json

from soniq import Soniq
from soniq.db import _report_args
from soniq.outcomes import EMPTY_BATCH
from soniq.worker import Worker


async def test_claim_connection_runs_the_limited_claim_without_jit(app: Soniq) -> None:
    @app.job(name="capped", max_concurrency=3)
    async def capped() -> None:
        return None

    await app.enqueue_many(capped, [{} for _ in range(50)])
    worker = Worker(app, 10, None, True, None, False, False)
    conn = await worker._connection()
    try:
        assert await conn.fetchval("SHOW jit") == "off"
        db = await app.database()
        sql = "EXPLAIN (ANALYZE, FORMAT JSON) " + db.claim_gated_query(10)
        lanes = ["task:capped"]
        tx = conn.transaction()
        await tx.start()
        try:  # the claim runs (ANALYZE) and is rolled back
            found = await conn.fetchval(
                sql, *_report_args("w1", EMPTY_BATCH), lanes, None, [], lanes, db.channel, None
            )
        finally:
            await tx.rollback()
        (plan,) = json.loads(found) if isinstance(found, str) else found  # (json codec)
        assert "JIT" not in plan, json.dumps(plan, indent=1)
        assert plan["Plan"]["Actual Rows"] == 3  # the limit admitted 3 of the 50
    finally:
        await worker._close_connection()
