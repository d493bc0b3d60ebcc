"""The claim queries walk the claim index in claim order with 100,000 queued rows: no sort
of the backlog, no sequential scan, under custom and generic (prepared) plans alike."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from soniq import Soniq
from soniq.queries import load_queries

QUEUED = 100_000
FINISHED = 20_000
PLAN_MODES = ["force_custom_plan", "force_generic_plan"]
OTHER_INDEXES = {"soniq_jobs_pkey", "soniq_jobs_processing_idx"}


def nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every node of a plan tree, depth first."""
    yield plan
    for child in plan.get("Plans", []):
        yield from nodes(child)


def job_scans(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Nodes that read soniq_jobs (the UPDATE itself excluded)."""
    for node in nodes(plan):
        if node.get("Relation Name") == "soniq_jobs" and node["Node Type"] != "ModifyTable":
            yield node


def assert_claim_plan(plan: dict[str, Any], index: str) -> None:
    text = json.dumps(plan, indent=1)
    scans = list(job_scans(plan))
    assert any(s["Node Type"] == "Index Scan" and s.get("Index Name") == index for s in scans), (
        f"no Index Scan on {index}:\n{text}"
    )
    for scan in scans:
        # the claim index finds the rows, the primary key joins the UPDATE to them, and the
        # outcomes reported in the same statement are found among this worker's processing rows
        assert scan["Node Type"] == "Index Scan", f"{scan['Node Type']} on soniq_jobs:\n{text}"
        assert scan["Index Name"] in {index, *OTHER_INDEXES}, text
    for node in nodes(plan):
        if node["Node Type"] in {"Sort", "Incremental Sort"} and any(
            n.get("Index Name") == index for n in nodes(node)
        ):
            # a sort may only order rows already cut by a LIMIT (the per-queue merge of
            # job_claim_queues), never the rows the index scan reads from the backlog
            assert any(n["Node Type"] == "Limit" for n in nodes(node)), (
                f"Sort over the job table:\n{text}"
            )


@pytest.fixture
async def backlog(app: Soniq) -> Soniq:
    """100,000 queued rows (5 queues, 3 priorities, 10% in the future) and 20,000 done."""
    schema = f'"{app.schema}"'
    async with app.backend.acquire() as conn:
        await conn.execute(
            f"""
            INSERT INTO {schema}.soniq_jobs (id, job_name, queue, priority, args, scheduled_at)
            SELECT gen_random_uuid(), 'bulk.job', 'q' || (g % 5), (g % 3) * 50,
                   jsonb_build_object('n', g),
                   now() - make_interval(secs => g % 1000)
                         + CASE WHEN g % 10 = 0 THEN interval '1 hour' ELSE interval '0' END
            FROM generate_series(1, $1) AS g
            """,
            QUEUED,
        )
        await conn.execute(
            f"""
            INSERT INTO {schema}.soniq_jobs (id, job_name, queue, status, finished_at)
            SELECT gen_random_uuid(), 'bulk.old', 'q0', 'done', now()
            FROM generate_series(1, $1)
            """,
            FINISHED,
        )
        await conn.execute(f"ANALYZE {schema}.soniq_jobs")
    return app


class Claim:
    """The claim statement the worker runs, as a PREPARE-able text with typed parameters.

    Uses ``Database.claim_query`` (report-and-claim, limit inlined) when soniq has it, else
    the named ``job_claim`` / ``job_claim_queues`` queries with the limit as a parameter.
    """

    def __init__(self, app: Soniq, limit: int, queues: list[str] | None) -> None:
        db = app._db
        assert db is not None
        quoted = "ARRAY[" + ",".join(f"'{q}'" for q in queues or []) + "]::text[]"
        if hasattr(db, "claim_query"):
            self.sql = db.claim_query(limit, queues)
            # worker, done ids and results, then the outcome rows' columns (OutcomeRow)
            self.types = (
                "text, uuid[], jsonb[], uuid[], text[], float8[], boolean[], text[], text[], text[]"
            )
            self.args = "'w1', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}'"
            if queues:
                self.types += ", text[]"
                self.args += f", {quoted}"
        else:
            queries = load_queries(app.schema)
            self.sql = queries["job_claim_queues" if queues else "job_claim"]
            self.types = "text, integer" + (", text[]" if queues else "")
            self.args = f"'w1', {limit}" + (f", {quoted}" if queues else "")


async def explain(app: Soniq, claim: Claim, mode: str, analyze: bool = False) -> dict[str, Any]:
    """EXPLAIN the claim as a prepared statement; with ``analyze``, run it and roll back."""
    options = "ANALYZE, FORMAT JSON" if analyze else "FORMAT JSON"
    async with app.backend.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        try:
            await conn.execute(f"SET LOCAL plan_cache_mode = {mode}")
            await conn.execute(f"PREPARE soniq_claim({claim.types}) AS {claim.sql}")
            raw = await conn.fetchval(f"EXPLAIN ({options}) EXECUTE soniq_claim({claim.args})")
        finally:
            await tx.rollback()
            await conn.execute("DEALLOCATE soniq_claim")  # PREPARE outlives the rollback
    doc = json.loads(raw) if isinstance(raw, str) else raw
    plan: dict[str, Any] = doc[0]["Plan"]
    return plan


async def test_claim_plans_use_claim_indexes(backlog: Soniq) -> None:
    """Custom plans, and the generic plan a prepared statement may switch to after 5 runs."""
    for mode in PLAN_MODES:
        for limit in (1, 10, 100):
            plan = await explain(backlog, Claim(backlog, limit, None), mode)
            assert_claim_plan(plan, "soniq_jobs_claim_idx")
        for queues in (["q1"], ["q1", "q3"], ["q0", "q1", "q2", "q3", "q4"]):
            plan = await explain(backlog, Claim(backlog, 10, queues), mode)
            assert_claim_plan(plan, "soniq_jobs_claim_queue_idx")


@pytest.mark.parametrize("queues", [None, ["q2"]])
async def test_claim_reads_only_what_it_takes(backlog: Soniq, queues: list[str] | None) -> None:
    """Executed (then rolled back): the index scan stops after the rows it claims."""
    plan = await explain(backlog, Claim(backlog, 50, queues), "auto", analyze=True)
    index = "soniq_jobs_claim_queue_idx" if queues else "soniq_jobs_claim_idx"
    claim_scans = [s for s in job_scans(plan) if s.get("Index Name") == index]
    assert claim_scans, json.dumps(plan, indent=1)
    assert plan["Actual Rows"] == 50
    # due rows come first in the index within a priority, so few rows are read and skipped
    read = sum(
        (s["Actual Rows"] + s.get("Rows Removed by Filter", 0)) * s.get("Actual Loops", 1)
        for s in claim_scans
    )
    assert read <= 200, json.dumps(plan, indent=1)
