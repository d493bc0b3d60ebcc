"""The state machine in ``soniq.states.TRANSITIONS`` against what the SQL really does.

A trigger records every status change of the test schema's jobs while each path that moves a
job runs (claim, success, retry, snooze, dead letter, cancel, retry of a dead letter, rescue
of a silent worker, return at shutdown). Every change seen must be a legal transition, and
every legal transition must be seen: the table is neither looser nor stricter than the SQL.
"""

from __future__ import annotations

import asyncio
from typing import Any

from soniq import JobStatus, Snooze, Soniq, maintenance
from soniq.states import TRANSITIONS, can_move
from tests.conftest import wait_for

RECORDER = """
CREATE TABLE {s}.seen (src text, dst text);
CREATE FUNCTION {s}.record_status() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO {s}.seen VALUES (OLD.status, NEW.status);
    RETURN NEW;
END $$;
CREATE TRIGGER record_status AFTER UPDATE OF status ON {s}.soniq_jobs
FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
EXECUTE FUNCTION {s}.record_status();
"""


async def sql(app: Soniq, query: str, *args: Any) -> list[Any]:
    async with app.backend.acquire() as conn:
        return list(await conn.fetch(query.replace("{s}", f'"{app.schema}"'), *args))


async def test_every_status_change_is_a_legal_transition_and_every_one_happens(
    app: Soniq,
) -> None:
    async with app.backend.acquire() as conn:
        await conn.execute(RECORDER.replace("{s}", f'"{app.schema}"'))
    snoozed: set[str] = set()

    @app.job(name="ok")
    async def ok() -> str:
        return "fine"

    @app.job(name="flaky", retries=1)
    async def flaky() -> None:
        raise RuntimeError("always")

    @app.job(name="sleepy")
    async def sleepy(tag: str) -> Snooze | None:
        if tag in snoozed:
            return None
        snoozed.add(tag)
        return Snooze(0)

    @app.job(name="slow")
    async def slow() -> None:
        await asyncio.sleep(30)

    await ok.enqueue()  # queued -> processing -> done
    dead = await flaky.enqueue()  # processing -> queued (retry) -> dead_letter
    await sleepy.enqueue(tag="a")  # processing -> queued (snooze) -> done
    cancelled = await ok.enqueue()
    assert await app.cancel_job(cancelled)  # queued -> cancelled
    await app.enqueue(ok, scheduled_at=3600)  # stays queued: the worker skips it
    parent = await ok.enqueue()
    await app.enqueue(ok, after=parent)  # waiting -> queued (its parent done)
    await app.enqueue(ok, after=dead)  # waiting -> cancelled (its parent dead-lettered)
    # run only the due jobs so far (the cancelled one is never claimed)
    await app.run_worker(run_once=True, queues=["default"])
    assert (await app.get_job(dead) or {})["status"] == JobStatus.DEAD_LETTER
    assert await app.retry_job(dead)  # dead_letter -> queued

    # processing -> queued at shutdown (returned)
    returned = await slow.enqueue(queue="slow")
    stop = asyncio.Event()
    worker = asyncio.create_task(app.run_worker(queues=["slow"], shutdown_event=stop))

    async def running() -> bool:
        job = await app.get_job(returned)
        return job is not None and job["status"] == JobStatus.PROCESSING

    await wait_for(running, message="slow job running")
    app.settings.shutdown_timeout = 0.2
    stop.set()
    await asyncio.wait_for(worker, 15)

    # processing -> cancelled by an abort
    aborted = await slow.enqueue(queue="abort")
    stop = asyncio.Event()
    worker = asyncio.create_task(app.run_worker(queues=["abort"], shutdown_event=stop))

    async def aborted_running() -> bool:
        job = await app.get_job(aborted)
        return job is not None and job["status"] == JobStatus.PROCESSING

    await wait_for(aborted_running, message="job to abort running")
    assert await app.cancel_job(aborted, abort=True)
    assert (await app.wait(aborted, timeout=10))["status"] == JobStatus.CANCELLED
    stop.set()
    await asyncio.wait_for(worker, 15)

    # processing -> queued and processing -> dead_letter by rescue of a silent worker
    rescued = await slow.enqueue(queue="gone")
    spent = await slow.enqueue(queue="gone")
    await sql(
        app,
        "UPDATE {s}.soniq_jobs SET status = 'processing', worker_id = 'vanished', "
        "attempts = CASE WHEN id = $2::uuid THEN max_attempts ELSE 1 END "
        "WHERE id = ANY($1::uuid[])",
        [rescued, spent],
        spent,
    )
    assert await maintenance.rescue_stale(app) == 2

    rows = await sql(app, "SELECT src, dst FROM {s}.seen")
    seen = {(JobStatus(r["src"]), JobStatus(r["dst"])) for r in rows}
    illegal = {(s, d) for s, d in seen if not can_move(s, d)}
    assert not illegal, f"the SQL made transitions the state machine forbids: {illegal}"
    legal = {(s, d) for s, targets in TRANSITIONS.items() for d in targets}
    assert legal - seen == set(), f"transitions no statement makes: {legal - seen}"
