"""``app.dead_letter``: list, get, replay, delete and stats, on entries made by direct SQL
(the state a worker leaves) and by a real worker run."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from soniq import JobStatus, Soniq, SoniqError, task_ref
from soniq.deadletter import DeadLetterJob


async def make_dead(
    app: Soniq,
    job_name: str = "t.dead",
    args: dict[str, Any] | None = None,
    *,
    reason: str | None = "max_retries_exceeded",
    error: str = "ValueError: boom",
    seconds_ago: float = 0,
    queue: str = "default",
    priority: int | None = None,
) -> str:
    """Enqueue a job, then mark it dead-lettered by SQL as a worker would."""
    job_id = await app.enqueue(task_ref(job_name), args=args or {}, queue=queue, priority=priority)
    async with app.backend.acquire() as conn:
        await conn.execute(
            f'UPDATE "{app.schema}".soniq_jobs SET status = $2, dead_reason = $3, '
            "dead_lettered_at = now() - make_interval(secs => $4), finished_at = now(), "
            "last_error = $5, attempts = max_attempts WHERE id = $1",
            uuid.UUID(job_id), "dead_letter", reason, float(seconds_ago), error,
        )  # fmt: skip
    return job_id


async def test_list_get_and_attributes(app: Soniq) -> None:
    old = await make_dead(app, "t.a", {"n": 1}, seconds_ago=30, queue="qa", priority=7)
    new = await make_dead(app, "t.b", {"n": 2}, reason="timeout", error="timed out after 1s")
    alive = await app.enqueue(task_ref("t.a"), args={"n": 3})

    entries = await app.dead_letter.list_dead_letter_jobs()
    assert [e.id for e in entries] == [new, old]  # most recently dead first
    entry = await app.dead_letter.get_dead_letter_job(old)
    assert isinstance(entry, DeadLetterJob)
    assert entry == entries[1]
    assert entry.id == old
    assert (entry.job_name, entry.queue, entry.args) == ("t.a", "qa", {"n": 1})
    assert entry.attempts == 4
    assert entry.reason == "max_retries_exceeded"
    assert entry.last_error == "ValueError: boom"
    assert entry.resurrection_count == 0
    assert isinstance(entry.dead_lettered_at, datetime)
    assert entry.dead_lettered_at < datetime.now(timezone.utc) - timedelta(seconds=20)
    assert entries[0].reason == "timeout"

    assert await app.dead_letter.get_dead_letter_job(alive) is None  # not dead
    assert [e.id for e in await app.dead_letter.list_dead_letter_jobs(job_name="t.b")] == [new]
    assert await app.dead_letter.list_dead_letter_jobs(job_name="t.none") == []
    assert [e.id for e in await app.dead_letter.list_dead_letter_jobs(limit=1)] == [new]
    assert [e.id for e in await app.dead_letter.list_dead_letter_jobs(limit=1, offset=1)] == [old]
    assert await app.dead_letter.list_dead_letter_jobs(offset=2) == []


async def test_entries_stay_and_workers_skip_them(app: Soniq) -> None:
    ran: list[int] = []

    @app.job(name="t.skip")
    async def handler(n: int) -> None:
        ran.append(n)

    dead = await make_dead(app, "t.skip", {"n": 1})
    await app.run_worker(run_once=True)
    assert ran == []
    entry = await app.dead_letter.get_dead_letter_job(dead)
    assert entry is not None and entry.resurrection_count == 0


async def test_replay_makes_a_new_job_and_counts(app: Soniq, pg_url: str) -> None:
    dead = await make_dead(app, "t.replay", {"to": "x@y.z"}, queue="mail", priority=3)
    first = await app.dead_letter.replay(dead)
    second = await app.dead_letter.replay(dead)
    assert len({dead, first, second}) == 3
    assert dead < first < second  # new ULIDs
    for new_id in (first, second):
        job = await app.get_job(new_id)
        assert job is not None
        assert job["status"] is JobStatus.QUEUED
        assert (job["job_name"], job["args"], job["queue"], job["priority"]) == (
            "t.replay", {"to": "x@y.z"}, "mail", 3
        )  # fmt: skip
        assert job["attempts"] == 0
    entry = await app.dead_letter.get_dead_letter_job(dead)
    assert entry is not None and entry.resurrection_count == 2  # the entry stays
    stats = await app.get_queue_stats()
    assert (stats["dead_letter"], stats["queued"]) == (1, 2)


async def test_replayed_job_runs(app: Soniq) -> None:
    seen: list[str] = []

    @app.job(name="t.replay_run")
    async def handler(to: str) -> str:
        seen.append(to)
        return to.upper()

    dead = await make_dead(app, "t.replay_run", {"to": "abc"})
    new_id = await app.dead_letter.replay(dead)
    await app.run_worker(run_once=True)
    assert seen == ["abc"]
    assert await app.get_result(new_id) == "ABC"


async def test_replay_of_non_dead_refused(app: Soniq) -> None:
    queued = await app.enqueue(task_ref("t.q"))
    for job_id in (queued, "0190a0b0-0000-7000-8000-000000000000"):
        with pytest.raises(SoniqError) as info:
            await app.dead_letter.replay(job_id)
        assert info.value.error_code == "SONIQ_NOT_FOUND"
    assert (await app.get_queue_stats())["total"] == 1


async def test_delete(app: Soniq) -> None:
    dead = await make_dead(app)
    queued = await app.enqueue(task_ref("t.q"))
    assert await app.dead_letter.delete_dead_letter_job(queued) is False
    assert await app.get_job(queued) is not None  # only dead entries are deleted here
    assert await app.dead_letter.delete_dead_letter_job(dead) is True
    assert await app.dead_letter.get_dead_letter_job(dead) is None
    assert await app.get_job(dead) is None
    assert await app.dead_letter.delete_dead_letter_job(dead) is False


async def test_stats(app: Soniq) -> None:
    empty = await app.dead_letter.get_dead_letter_stats()
    assert (empty.total_count, empty.by_reason) == (0, {})
    for _ in range(3):
        await make_dead(app, reason="max_retries_exceeded")
    await make_dead(app, reason="timeout")
    await make_dead(app, reason="job_not_found", error="task t.dead is not registered")
    await app.enqueue(task_ref("t.alive"))
    stats = await app.dead_letter.get_dead_letter_stats()
    assert stats.total_count == 5
    assert stats.by_reason == {"max_retries_exceeded": 3, "timeout": 1, "job_not_found": 1}


async def test_concurrent_replays_all_counted(app: Soniq) -> None:
    dead = await make_dead(app, "t.many_replays")
    ids = await asyncio.gather(*(app.dead_letter.replay(dead) for _ in range(10)))
    assert len(set(ids)) == 10
    entry = await app.dead_letter.get_dead_letter_job(dead)
    assert entry is not None and entry.resurrection_count == 10


async def test_worker_dead_letters_with_each_reason(app: Soniq) -> None:
    """The entries a real worker writes carry the reasons and errors API.md names."""

    @app.job(name="t.fails", retries=1)
    async def fails() -> None:
        raise ValueError("always broken")

    @app.job(name="t.slow", retries=0, timeout=0.2)
    async def slow() -> None:
        await asyncio.sleep(30)

    failed = await fails.enqueue()
    timed_out = await slow.enqueue()
    orphan = await app.enqueue(task_ref("t.nobody_handles_this"), args={"k": 1})
    await asyncio.wait_for(app.run_worker(run_once=True), timeout=30)

    by_id = {e.id: e for e in await app.dead_letter.list_dead_letter_jobs()}
    assert set(by_id) == {failed, timed_out, orphan}
    assert by_id[failed].reason == "max_retries_exceeded"
    assert by_id[failed].attempts == 2
    assert "always broken" in (by_id[failed].last_error or "")
    assert by_id[timed_out].reason == "timeout"
    assert by_id[orphan].reason == "job_not_found"
    assert "not registered" in (by_id[orphan].last_error or "")
    assert by_id[orphan].args == {"k": 1}
    stats = await app.dead_letter.get_dead_letter_stats()
    assert stats.by_reason == {"max_retries_exceeded": 1, "timeout": 1, "job_not_found": 1}
