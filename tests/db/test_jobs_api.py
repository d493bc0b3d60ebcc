"""Job queries and management on real PostgreSQL: get_job, get_result, list_jobs, cancel,
delete, retry_job, queue stats, and malformed ids that never reach SQL as errors."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from soniq import JobStatus, Soniq, SoniqError, task_ref

MakeApp = Callable[..., Awaitable[Soniq]]

MALFORMED_IDS: list[Any] = [
    "",
    "abc",
    "123",
    "01HZZZZZZZZZZZZZZZZZZZZZZZ",  # a ULID in its own text form, not UUID text
    "00000000-0000-0000-0000-00000000000g",
    "00000000-0000-0000-0000-0000000000001",
    "'; DROP TABLE soniq_jobs; --",
    None,
    42,
    b"00000000000000000000000000000000",
]
UNKNOWN_ID = "0190a0b0-0000-7000-8000-000000000000"

API_JOB_KEYS = {
    "id", "job_name", "queue", "priority", "args", "status", "attempts", "max_attempts",
    "created_at", "scheduled_at", "started_at", "finished_at", "last_error", "worker_id",
}  # fmt: skip


async def force(app: Soniq, job_id: str, **columns: Any) -> None:
    """Set columns of one job by direct SQL (states the worker would reach)."""
    names = list(columns)
    sets = ", ".join(f"{n} = ${i + 2}" for i, n in enumerate(names))
    async with app.backend.acquire() as conn:
        await conn.execute(
            f'UPDATE "{app.schema}".soniq_jobs SET {sets} WHERE id = $1',
            uuid.UUID(job_id),
            *columns.values(),
        )


def ago(seconds: float) -> datetime:
    return datetime.now(timezone.utc) - timedelta(seconds=seconds)


async def one_in_each_state(app: Soniq) -> dict[str, str]:
    """A job in every state; returns status -> id."""
    ids = {s.value: await app.enqueue(task_ref("t.state"), args={"s": s.value}) for s in JobStatus}
    await force(app, ids["processing"], status="processing", attempts=1, worker_id="w1")
    await force(app, ids["done"], status="done", attempts=1, finished_at=ago(0))
    await force(app, ids["cancelled"], status="cancelled", finished_at=ago(0))
    await force(app, ids["waiting"], status="waiting")
    await force(
        app, ids["dead_letter"], status="dead_letter", attempts=4, dead_reason="timeout",
        dead_lettered_at=ago(0), last_error="too slow",
    )  # fmt: skip
    return ids


async def test_get_job_keys_and_types(app: Soniq) -> None:
    @app.job(name="t.keys", queue="k", priority=3, retries=5)
    async def handler(a: int) -> None: ...

    job_id = await handler.enqueue(a=1)
    job = await app.get_job(job_id)
    assert job is not None
    assert API_JOB_KEYS <= set(job)
    assert job["id"] == job_id and isinstance(job["id"], str)
    assert job["status"] is JobStatus.QUEUED
    assert (job["job_name"], job["queue"], job["priority"], job["args"]) == (
        "t.keys",
        "k",
        3,
        {"a": 1},
    )
    assert (job["attempts"], job["max_attempts"]) == (0, 6)
    assert job["created_at"].tzinfo is not None and job["scheduled_at"].tzinfo is not None
    assert job["started_at"] is None and job["finished_at"] is None
    assert job["last_error"] is None and job["worker_id"] is None
    assert await app.get_job(uuid.UUID(job_id)) == job  # a UUID object works too


@pytest.mark.parametrize("bad", MALFORMED_IDS, ids=repr)
async def test_malformed_ids_are_none_or_false(app: Soniq, bad: Any) -> None:
    await app.enqueue(task_ref("t.m"))
    assert await app.get_job(bad) is None
    assert await app.get_result(bad) is None
    assert await app.cancel_job(bad) is False
    assert await app.delete_job(bad) is False
    assert await app.retry_job(bad) is False
    assert await app.dead_letter.get_dead_letter_job(bad) is None
    assert await app.dead_letter.delete_dead_letter_job(bad) is False
    with pytest.raises(SoniqError) as info:
        await app.dead_letter.replay(bad)
    assert info.value.error_code == "SONIQ_NOT_FOUND"
    assert (await app.get_queue_stats())["total"] == 1


async def test_unknown_id(app: Soniq) -> None:
    assert await app.get_job(UNKNOWN_ID) is None
    assert await app.get_result(UNKNOWN_ID) is None
    assert await app.cancel_job(UNKNOWN_ID) is False
    assert await app.delete_job(UNKNOWN_ID) is False
    assert await app.retry_job(UNKNOWN_ID) is False


async def test_get_result_only_when_done(app: Soniq) -> None:
    ids = await one_in_each_state(app)
    for status, job_id in ids.items():
        await force(app, job_id, result={"answer": status})
    for status, job_id in ids.items():
        expected = {"answer": "done"} if status == "done" else None
        assert await app.get_result(job_id) == expected, status


async def test_get_result_after_worker_run(app: Soniq) -> None:
    @app.job(name="t.result")
    async def add(x: int, y: int) -> dict[str, Any]:
        return {"sum": x + y, "items": [x, y, None]}

    job_id = await add.enqueue(x=2, y=3)
    assert await app.get_result(job_id) is None
    await app.run_worker(run_once=True)
    job = await app.get_job(job_id)
    assert job is not None and job["status"] is JobStatus.DONE
    assert job["attempts"] == 1 and job["worker_id"]
    assert job["started_at"] <= job["finished_at"]
    assert await app.get_result(job_id) == {"sum": 5, "items": [2, 3, None]}


async def test_list_jobs_filters_and_paging(app: Soniq) -> None:
    @app.job(name="t.a", queue="qa")
    async def a(n: int) -> None: ...

    @app.job(name="t.b", queue="qb")
    async def b(n: int) -> None: ...

    a_ids = [await a.enqueue(n=i) for i in range(5)]
    b_ids = [await b.enqueue(n=i) for i in range(3)]
    b_on_qa = await b.enqueue(n=99, queue="qa")
    await app.cancel_job(a_ids[0])

    every = await app.list_jobs()
    assert [j["id"] for j in every] == sorted(a_ids + b_ids + [b_on_qa], reverse=True)
    assert all(isinstance(j["status"], JobStatus) for j in every)
    assert API_JOB_KEYS <= set(every[0])
    assert {j["id"] for j in await app.list_jobs(queue="qa")} == set(a_ids) | {b_on_qa}
    assert {j["id"] for j in await app.list_jobs(job_name="t.b")} == set(b_ids) | {b_on_qa}
    assert {j["id"] for j in await app.list_jobs(job_name="t.b", queue="qa")} == {b_on_qa}
    assert [j["id"] for j in await app.list_jobs(status="cancelled")] == [a_ids[0]]
    assert [j["id"] for j in await app.list_jobs(status=JobStatus.CANCELLED)] == [a_ids[0]]
    queued = await app.list_jobs(status="queued", queue="qa", job_name="t.a")
    assert {j["id"] for j in queued} == set(a_ids[1:])
    assert await app.list_jobs(queue="nope") == []
    page1 = await app.list_jobs(limit=4)
    page2 = await app.list_jobs(limit=4, offset=4)
    page3 = await app.list_jobs(limit=4, offset=8)
    assert [j["id"] for j in page1 + page2 + page3] == [j["id"] for j in every]
    assert len(page3) == 1
    with pytest.raises(SoniqError):
        await app.list_jobs(status="running")


async def test_cancel_only_queued(app: Soniq) -> None:
    ids = await one_in_each_state(app)
    later = await app.enqueue(task_ref("t.state"), scheduled_at=timedelta(hours=1))
    before = {s: await app.get_job(i) for s, i in ids.items()}
    assert await app.cancel_job(ids["queued"]) is True
    assert await app.cancel_job(later) is True  # waiting for its time is still queued
    for status in ("processing", "done", "cancelled", "dead_letter"):
        assert await app.cancel_job(ids[status]) is False
        assert await app.get_job(ids[status]) == before[status]
    job = await app.get_job(ids["queued"])
    assert job is not None and job["status"] is JobStatus.CANCELLED
    assert job["finished_at"] is not None
    assert await app.cancel_job(ids["queued"]) is False  # only once


async def test_cancelled_job_never_runs(app: Soniq) -> None:
    ran: list[int] = []

    @app.job(name="t.cancel_run")
    async def handler(n: int) -> None:
        ran.append(n)

    keep = await handler.enqueue(n=1)
    drop = await handler.enqueue(n=2)
    assert await app.cancel_job(drop)
    await app.run_worker(run_once=True)
    assert ran == [1]
    statuses = [(await app.get_job(i) or {}).get("status") for i in (keep, drop)]
    assert statuses == [JobStatus.DONE, JobStatus.CANCELLED]


async def test_delete_job_any_state_but_processing(app: Soniq) -> None:
    ids = await one_in_each_state(app)
    running = ids.pop("processing")
    assert await app.delete_job(running) is False  # its worker's outcome would be dropped
    assert (await app.get_job(running) or {})["status"] == JobStatus.PROCESSING
    await force(app, running, status="queued", worker_id=None)
    ids["processing"] = running
    for job_id in ids.values():
        assert await app.delete_job(job_id) is True
        assert await app.get_job(job_id) is None
        assert await app.delete_job(job_id) is False
    assert (await app.get_queue_stats())["total"] == 0


async def test_retry_job_only_dead_letter(app: Soniq) -> None:
    ids = await one_in_each_state(app)
    before = {s: await app.get_job(i) for s, i in ids.items()}
    for status in ("queued", "processing", "done", "cancelled"):
        assert await app.retry_job(ids[status]) is False
        assert await app.get_job(ids[status]) == before[status]
    assert await app.retry_job(ids["dead_letter"]) is True
    job = await app.get_job(ids["dead_letter"])
    assert job is not None
    assert job["id"] == ids["dead_letter"]  # same id
    assert job["status"] is JobStatus.QUEUED
    assert job["max_attempts"] >= job["attempts"] + 1 == 5  # one more attempt allowed
    assert job["scheduled_at"] <= datetime.now(timezone.utc) + timedelta(seconds=1)
    assert job["dead_reason"] is None and job["finished_at"] is None
    assert await app.retry_job(ids["dead_letter"]) is False  # no longer dead
    assert await app.dead_letter.get_dead_letter_job(ids["dead_letter"]) is None


async def test_retried_dead_job_runs_again(app: Soniq) -> None:
    calls: list[int] = []

    @app.job(name="t.flaky", retries=0)
    async def flaky() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("first time fails")
        return "ok"

    job_id = await flaky.enqueue()
    await app.run_worker(run_once=True)
    job = await app.get_job(job_id)
    assert job is not None and job["status"] is JobStatus.DEAD_LETTER
    assert "first time fails" in (job["last_error"] or "")
    assert await app.retry_job(job_id)
    await app.run_worker(run_once=True)
    assert await app.get_result(job_id) == "ok"
    job = await app.get_job(job_id)
    assert job is not None and job["attempts"] == 2


async def test_queue_stats_exact_keys(app: Soniq) -> None:
    empty = await app.get_queue_stats()
    assert empty == {
        "total": 0, "queued": 0, "processing": 0, "done": 0, "dead_letter": 0, "cancelled": 0,
        "waiting": 0,
    }  # fmt: skip
    await one_in_each_state(app)
    await app.enqueue(task_ref("t.more"))
    stats = await app.get_queue_stats()
    assert set(stats) == {
        "total", "queued", "processing", "done", "dead_letter", "cancelled", "waiting"
    }  # fmt: skip
    assert stats == {
        "total": 7, "queued": 2, "processing": 1, "done": 1, "dead_letter": 1, "cancelled": 1,
        "waiting": 1,
    }  # fmt: skip


async def test_list_queues(app: Soniq) -> None:
    assert await app.list_queues() == []
    old = await app.enqueue(task_ref("t.q"), queue="alpha", scheduled_at=ago(120))
    await app.enqueue(task_ref("t.q"), queue="alpha")
    await app.enqueue(task_ref("t.q"), queue="alpha", scheduled_at=timedelta(hours=1))
    done = await app.enqueue(task_ref("t.q"), queue="beta")
    future_only = await app.enqueue(task_ref("t.q"), queue="gamma", scheduled_at=3600)
    await force(app, done, status="done", finished_at=ago(0))
    queues = {q["queue"]: q for q in await app.list_queues()}
    assert list(queues) == ["alpha", "beta", "gamma"]
    alpha = queues["alpha"]
    for key in ("queued", "processing", "done", "dead_letter", "cancelled"):
        assert key in alpha
    assert (alpha["queued"], alpha["done"]) == (3, 0)
    assert 119 <= alpha["oldest_queued_age"] < 180  # the due job, not the future one
    assert (queues["beta"]["done"], queues["beta"]["queued"]) == (1, 0)
    assert queues["beta"]["oldest_queued_age"] is None
    assert queues["gamma"]["oldest_queued_age"] is None  # nothing due yet
    assert await app.get_job(old) is not None and future_only


async def test_two_instances_one_schema_share_jobs(make_app: MakeApp) -> None:
    producer = await make_app()
    consumer = await make_app()
    job_id = await producer.enqueue(task_ref("t.shared"), args={"x": 1})
    job = await consumer.get_job(job_id)
    assert job is not None and job["args"] == {"x": 1}
