"""Continuations across real worker processes: a fan-in released exactly once when its
parents end together on two workers, and a parent whose worker is SIGKILLed."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from soniq import Soniq
from tests.conftest import wait_for
from tests.process.test_worker_process import WorkerProcess, app_with_tasks, killed_at_end
from tests.workflows import wf_jobs

MODULE = "tests.workflows.wf_jobs"


@pytest.fixture
def procs(cli_env: dict[str, str]) -> Iterator[list[WorkerProcess]]:
    with killed_at_end() as started:
        yield started


def start(procs: list[WorkerProcess], env: dict[str, str], *args: str) -> WorkerProcess:
    w = WorkerProcess(env, *args, module=MODULE)
    procs.append(w)
    return w


@pytest.fixture
async def app(make_app: Any) -> AsyncIterator[Soniq]:
    yield await app_with_tasks(make_app, [wf_jobs.app], wf_jobs.EFFECTS_TABLE)


async def scalar(app: Soniq, sql: str, *args: Any) -> Any:
    async with app.backend.acquire() as conn:
        return await conn.fetchval(sql.format(s=f'"{app.schema}"'), *args)


async def test_fan_in_released_once_when_parents_end_together_on_two_workers(
    app: Soniq, procs: list[WorkerProcess], cli_env: dict[str, str]
) -> None:
    pairs = 40
    start(procs, cli_env, "--concurrency", "50")
    start(procs, cli_env, "--concurrency", "50")
    await wait_for(
        lambda: scalar(app, "SELECT count(*) = 2 FROM {s}.soniq_workers"),
        timeout=30,
        message="two workers up",
    )
    at = time.time() + 3.0  # every parent returns at this instant
    joins = []
    for i in range(pairs):
        a = await app.enqueue("finish_at", at=at, value=i)
        b = await app.enqueue("finish_at", at=at, value=1000)
        joins.append(await app.enqueue("join", after=[a, b]))
    await wait_for(
        lambda: scalar(
            app,
            "SELECT count(*) = $1 FROM {s}.soniq_jobs WHERE job_name = 'join' AND status = 'done'",
            pairs,
        ),
        timeout=60,
        message="every join done",
    )
    # the parents really ran on both workers
    assert (
        await scalar(
            app, "SELECT count(DISTINCT worker_id) FROM {s}.soniq_jobs WHERE job_name = 'finish_at'"
        )
        == 2
    )
    assert await scalar(app, "SELECT count(*) FROM {s}.test_effects") == pairs
    assert await scalar(app, "SELECT count(DISTINCT job_id) FROM {s}.test_effects") == pairs
    assert await scalar(app, "SELECT count(*) FROM {s}.soniq_jobs WHERE pending_parents <> 0") == 0
    for i, jid in enumerate(joins):
        assert await app.get_result(jid) == i + 1000


async def test_parent_worker_sigkilled_child_waits_then_runs_once(
    app: Soniq, procs: list[WorkerProcess], cli_env: dict[str, str]
) -> None:
    parent = await app.enqueue("die_first_time")
    a = await app.enqueue("finish_at", at=0, value=1)
    child = await app.enqueue("join", after=[parent, a])
    first = start(procs, cli_env)
    assert await first.wait(30) == -9  # died running the parent
    job = await app.get_job(child)
    assert job is not None and job["status"] == "waiting"
    start(procs, cli_env)  # rescues the parent and runs it again
    await wait_for(
        lambda: scalar(
            app, "SELECT status = 'done' FROM {s}.soniq_jobs WHERE id = $1", uuid.UUID(child)
        ),
        timeout=60,
        message="the child done",
    )
    parent_job = await app.get_job(parent)
    assert parent_job is not None and parent_job["attempts"] == 2
    assert await scalar(app, "SELECT count(*) FROM {s}.test_effects") == 1
    results = await scalar(app, "SELECT results::text FROM {s}.test_effects")
    assert json.loads(results) == {a: 1, parent: "second time lucky"}
