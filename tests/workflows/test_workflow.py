"""Workflows: app.workflow / wf.add / wf.enqueue, get_workflow, cancel_workflow, bad input."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest

from soniq import JobContext, JobStatus, Soniq, SoniqError

pytestmark = pytest.mark.asyncio


@pytest.fixture
async def app(make_app: Any) -> Soniq:
    return await make_app(enqueue_validation="none")


async def count_jobs(app: Soniq) -> int:
    async with app.backend.acquire() as conn:
        return int(await conn.fetchval(f'SELECT count(*) FROM "{app.schema}".soniq_jobs'))


async def test_dag_runs_with_results_by_step_name(app: Soniq) -> None:
    seen: dict[str, Any] = {}

    @app.job(name="fetch_order")
    async def fetch_order(order_id: int) -> dict[str, int]:
        return {"order": order_id, "total": 30}

    @app.job(name="charge")
    async def charge(ctx: JobContext) -> int:
        return int(ctx.parent_results["fetch_order"]["total"])

    @app.job(name="mail")
    async def mail(ctx: JobContext, to: str) -> str:
        return f"sent {ctx.parent_results['charge']} to {to}"

    @app.job(name="report")
    async def report(ctx: JobContext) -> int:
        seen.update(ctx.parent_results)
        return len(ctx.parent_results)

    wf = app.workflow(name="order-42")
    f = wf.add(fetch_order, order_id=42)
    c = wf.add(charge, after=[f])
    mails = [wf.add(mail, name=f"mail-{i}", after=[c], to=t) for i, t in enumerate("abc")]
    wf.add(report, after=mails)
    assert f.id and f.name == "fetch_order"
    ids = await wf.enqueue()
    assert list(ids) == ["fetch_order", "charge", "mail-0", "mail-1", "mail-2", "report"]
    assert ids["fetch_order"] == f.id
    got = await app.get_workflow(wf.id)
    assert got is not None and got["status"] == "running" and got["name"] == "order-42"
    await app.run_worker(run_once=True)
    assert seen == {"mail-0": "sent 30 to a", "mail-1": "sent 30 to b", "mail-2": "sent 30 to c"}
    got = await app.get_workflow(wf.id)
    assert got is not None
    assert got["status"] == "done" and got["finished_at"] is not None
    steps = {s["step"]: s for s in got["steps"]}
    assert steps["report"]["after"] == sorted(m.id for m in mails)
    assert steps["charge"]["workflow_id"] == wf.id
    job = await app.get_job(ids["charge"])
    assert job is not None and (job["workflow_id"], job["step"]) == (wf.id, "charge")
    listed = await app.list_workflows()
    assert [(w["id"], w["status"], w["steps"]) for w in listed] == [(wf.id, "done", 6)]
    assert await app.list_workflows(status="running") == []


async def test_failed_step_fails_workflow_and_cancels_rest(app: Soniq) -> None:
    @app.job(name="boom", retries=0)
    async def boom() -> None:
        raise RuntimeError("no")

    wf = app.workflow()
    a = wf.add(boom)
    b = wf.add("after_boom", after=[a])
    wf.add("after_after", after=[b])
    wf.add("independent")
    await wf.enqueue()
    async with app.backend.acquire() as conn:  # the independent step is not run here
        await conn.execute(
            f"UPDATE \"{app.schema}\".soniq_jobs SET status = 'done' WHERE step = 'independent'"
        )
    await app.run_worker(run_once=True)
    got = await app.get_workflow(wf.id)
    assert got is not None and got["status"] == "failed"
    by = {s["step"]: s for s in got["steps"]}
    assert by["after_after"]["status"] == JobStatus.CANCELLED
    assert by["after_after"]["cancel_reason"] == "parent_failed"


async def test_cancel_workflow_counts_cascades(app: Soniq) -> None:
    wf = app.workflow()
    root = wf.add("root")
    kids = [wf.add("kid", name=f"k{i}", after=[root]) for i in range(5)]
    wf.add("join", after=kids)
    await wf.enqueue()
    assert await app.cancel_workflow(wf.id) == 7
    got = await app.get_workflow(wf.id)
    assert got is not None and got["status"] == "cancelled"
    assert await app.cancel_workflow(wf.id) == 0
    assert await app.get_workflow(str(uuid.uuid4())) is None
    assert await app.get_workflow("nope") is None


async def test_bad_workflows_write_nothing(app: Soniq) -> None:
    wf, other = app.workflow(), app.workflow()
    a = wf.add("a")
    with pytest.raises(SoniqError) as err:
        wf.add("a")  # duplicate step name
    assert err.value.error_code == "SONIQ_ENQUEUE_INVALID"
    foreign = other.add("x")
    with pytest.raises(SoniqError):
        wf.add("b", after=[foreign])
    with pytest.raises(SoniqError):
        wf.add("b", after=["not-an-id"])
    wf.add("b", after=[a, str(uuid.uuid4())])  # a well-formed id of no job: refused at enqueue
    with pytest.raises(SoniqError) as err:
        await wf.enqueue()
    assert err.value.error_code == "SONIQ_ENQUEUE_INVALID" and "no job with id" in str(err.value)
    assert await count_jobs(app) == 0
    assert await app.list_workflows() == []
    with pytest.raises(SoniqError):
        await app.workflow().enqueue()  # no steps


async def test_enqueue_joins_callers_transaction(app: Soniq) -> None:
    wf = app.workflow()
    wf.add("a")
    async with app.backend.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        await wf.enqueue(connection=conn)
        await tx.rollback()
    assert await count_jobs(app) == 0


async def test_thousand_step_workflow_is_fast(app: Soniq) -> None:
    wf = app.workflow()
    root = wf.add("root")
    kids = [wf.add("kid", name=f"k{i}", after=[root]) for i in range(998)]
    wf.add("join", after=kids)
    t0 = time.perf_counter()
    ids = await wf.enqueue()
    elapsed = time.perf_counter() - t0
    assert len(ids) == 1000 and await count_jobs(app) == 1000
    assert elapsed < 1.0, elapsed
    stats = await app.get_queue_stats()
    assert (stats["queued"], stats["waiting"]) == (1, 999)


async def test_testing_modes_refuse_after_clearly() -> None:
    app = Soniq(testing="inline", enqueue_validation="none")
    with pytest.raises(SoniqError) as err:
        await app.enqueue("x", after=str(uuid.uuid4()))
    assert err.value.error_code == "SONIQ_ENQUEUE_INVALID" and "need the database" in str(err.value)
