"""`soniq enqueue NAME`, `soniq jobs purge` and `app.cancel_jobs` (issue 18, item 7)."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest

from soniq import JobStatus, Soniq, SoniqError, task_ref
from tests.cli.cli_helpers import CLI_JOBS, as_json, invoke, run_soniq


@pytest.fixture
def env(pg_url: str, schema_name: str) -> dict[str, str]:
    return {"SONIQ_DATABASE_URL": pg_url, "SONIQ_SCHEMA": schema_name}


async def test_cancel_jobs_by_queue_and_name(app: Soniq) -> None:
    a1 = await app.enqueue(task_ref("x.a"), args={}, queue="q1")
    a2 = await app.enqueue(task_ref("x.a"), args={}, queue="q2")
    b1 = await app.enqueue(task_ref("x.b"), args={}, queue="q1")
    later = await app.enqueue(task_ref("x.a"), args={}, queue="q1", scheduled_at=3600)
    running = await app.enqueue(task_ref("x.a"), args={}, queue="q1")
    async with app.backend.acquire() as conn:
        await conn.execute(
            f"UPDATE \"{app.schema}\".soniq_jobs SET status = 'processing', attempts = 1 "
            "WHERE id = $1",
            uuid.UUID(running),
        )
    assert await app.cancel_jobs(queue="q1", job_name="x.a") == 2  # a1 and the delayed one
    assert await app.cancel_jobs(queue="q1") == 1  # b1
    assert await app.cancel_jobs(job_name="x.a") == 1  # a2
    states = {i: (await app.get_job(i) or {})["status"] for i in (a1, a2, b1, later, running)}
    assert states[running] is JobStatus.PROCESSING
    assert {s for i, s in states.items() if i != running} == {JobStatus.CANCELLED}
    assert await app.cancel_jobs(queue="q1") == 0


async def test_cancel_jobs_by_tags(app: Soniq) -> None:
    vip_eu = await app.enqueue(task_ref("x.a"), args={}, tags={"tier": "vip", "region": "eu"})
    vip_us = await app.enqueue(task_ref("x.a"), args={}, tags={"tier": "vip", "region": "us"})
    plain = await app.enqueue(task_ref("x.a"), args={}, tags={"tier": "free"})
    untagged = await app.enqueue(task_ref("x.b"), args={})
    assert await app.cancel_jobs(tags={"tier": "vip", "region": "eu"}) == 1
    assert await app.cancel_jobs(job_name="x.a", tags={"tier": "vip"}) == 1
    states = {i: (await app.get_job(i) or {}) for i in (vip_eu, vip_us, plain, untagged)}
    assert states[vip_eu]["status"] is JobStatus.CANCELLED
    assert states[vip_eu]["cancel_reason"] == "cancelled"
    assert states[vip_us]["status"] is JobStatus.CANCELLED
    assert states[plain]["status"] is JobStatus.QUEUED
    assert states[untagged]["status"] is JobStatus.QUEUED


@pytest.mark.parametrize(
    "filters", [{}, {"queue": ""}, {"job_name": 3}, {"tags": ["vip"]}, {"tags": {"k": 1}}]
)
async def test_cancel_jobs_refuses_what_it_cannot_do(app: Soniq, filters: dict[str, Any]) -> None:
    job = await app.enqueue(task_ref("x.a"), args={})
    with pytest.raises(SoniqError) as info:
        await app.cancel_jobs(**filters)
    assert info.value.error_code == "SONIQ_ENQUEUE_INVALID"
    assert (await app.get_job(job) or {})["status"] is JobStatus.QUEUED


async def test_enqueue_by_name_checks_like_app_enqueue(app: Soniq, cli_env: dict[str, str]) -> None:
    env = {**cli_env, "SONIQ_JOBS_MODULES": CLI_JOBS}
    done = await asyncio.to_thread(
        run_soniq, env, "enqueue", "cli.add", "--args", '{"x": 1, "y": 2}', "--priority", "7"
    )
    assert done.returncode == 0, done.stderr
    job_id = done.stdout.strip()
    job = await app.get_job(job_id) or {}
    assert job["job_name"] == "cli.add" and job["args"] == {"x": 1, "y": 2}
    assert job["priority"] == 7 and job["queue"] == "default" and job["status"] is JobStatus.QUEUED

    delayed = await asyncio.to_thread(
        run_soniq, env, "enqueue", "cli.email", "--args", '{"to": "a@b"}', "--delay", "3600",
        "--queue", "slow", "--json",
    )  # fmt: skip
    assert delayed.returncode == 0, delayed.stderr
    row = await app.get_job(json.loads(delayed.stdout)["id"]) or {}
    assert row["queue"] == "slow" and row["max_attempts"] == 6  # the task's retries=5
    assert (row["scheduled_at"] - row["created_at"]).total_seconds() > 3500

    before = (await app.get_queue_stats())["total"]
    for args, code, words in [
        (["cli.add", "--args", '{"x": 1}'], 1, "missing required argument(s) ['y']"),
        (["cli.add", "--args", '{"x": 1, "y": 2, "z": 3}'], 1, "takes no argument(s) ['z']"),
        (["no.such.task"], 1, "no task named 'no.such.task'"),
        (["cli.add", "--args", "[1, 2]"], 2, "JSON object"),
        (["cli.add", "--args", "{nope"], 2, "not JSON"),
        (["cli.add", "--args", '{"x": 1, "y": 2}', "--after", "nope"], 1, "is not a job id"),
    ]:
        result = await asyncio.to_thread(run_soniq, env, "enqueue", *args)
        assert result.returncode == code, (args, result.stdout, result.stderr)
        assert words in result.stderr, (args, result.stderr)
    assert (await app.get_queue_stats())["total"] == before  # nothing written

    child = await asyncio.to_thread(
        run_soniq, env, "enqueue", "cli.add", "--args", '{"x": 1, "y": 2}', "--after", job_id
    )
    assert child.returncode == 0, child.stderr
    waiting = await app.get_job(child.stdout.strip()) or {}
    assert waiting["status"] is JobStatus.WAITING and waiting["after"] == [job_id]

    no_modules = await asyncio.to_thread(run_soniq, cli_env, "enqueue", "cli.add")
    assert no_modules.returncode == 2 and "--no-validate" in no_modules.stderr
    unchecked = await asyncio.to_thread(
        run_soniq, cli_env, "enqueue", "other.service.task", "--args", '{"a": 1}', "--no-validate"
    )
    assert unchecked.returncode == 0, unchecked.stderr
    assert (await app.get_job(unchecked.stdout.strip()) or {})["job_name"] == "other.service.task"


async def test_jobs_purge_asks_then_cancels_the_matching_jobs(
    app: Soniq, env: dict[str, str]
) -> None:
    mail = [await app.enqueue(task_ref("x.mail"), args={"n": i}, queue="emails") for i in range(3)]
    other = await app.enqueue(task_ref("x.other"), args={}, queue="emails")
    keep = await app.enqueue(task_ref("x.mail"), args={}, queue="default")

    refused = await invoke(env, "jobs", "purge", "--queue", "emails", input="n\n")
    assert refused.exit_code == 1
    assert (await app.get_queue_stats())["cancelled"] == 0

    result = await invoke(env, "jobs", "purge", "--queue", "emails", "--name", "x.mail", "--yes")
    assert result.exit_code == 0, result.output
    assert "Cancelled 3 job(s)" in result.stdout
    data = as_json(await invoke(env, "jobs", "purge", "--queue", "emails", "--json", input="y\n"))
    assert data["cancelled"] == 1
    states = {i: (await app.get_job(i) or {})["status"] for i in [*mail, other, keep]}
    assert states.pop(keep) is JobStatus.QUEUED
    assert set(states.values()) == {JobStatus.CANCELLED}

    usage = await invoke(env, "jobs", "purge", "--yes")
    assert usage.exit_code == 2 and "--queue" in usage.stderr


def test_a_typo_in_a_soniq_variable_is_named_with_the_fix(cli_env: dict[str, str]) -> None:
    result = run_soniq({**cli_env, "SONIQ_CONCURENCY": "3"}, "migrate-status")
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("SONIQ_CONCURENCY") == 1, result.stderr
    assert "did you mean SONIQ_CONCURRENCY?" in result.stderr
