"""Job control across real worker processes: ctx.complete against SIGKILL, and an abort
asked while the database restarts."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from soniq import JobStatus, Soniq
from tests.conftest import wait_for
from tests.control import control_jobs
from tests.process.test_worker_process import (
    WorkerProcess,
    _restart_postgres,
    app_with_tasks,
    killed_at_end,
)

MODULE = "tests.control.control_jobs"


@pytest.fixture
def procs(cli_env: dict[str, str]) -> Iterator[list[WorkerProcess]]:
    with killed_at_end() as started:
        yield started


def start(procs: list[WorkerProcess], env: dict[str, str]) -> WorkerProcess:
    w = WorkerProcess(env, module=MODULE)
    procs.append(w)
    return w


@pytest.fixture
async def app(make_app: Any) -> AsyncIterator[Soniq]:
    yield await app_with_tasks(make_app, [control_jobs.app], control_jobs.EFFECTS_TABLE)


async def effects(app: Soniq, job_id: str) -> list[Any]:
    async with app.backend.acquire() as conn:
        return list(
            await conn.fetch(
                f'SELECT * FROM "{app.schema}".test_effects WHERE job_id = $1', uuid.UUID(job_id)
            )
        )


async def test_sigkill_right_after_complete_commit_never_reruns(
    app: Soniq, procs: list[WorkerProcess], cli_env: dict[str, str]
) -> None:
    job_id = await app.enqueue("complete_then_die")
    first = start(procs, cli_env)
    assert await first.wait(30) == -9  # killed itself right after the commit
    second = start(procs, cli_env)  # its maintenance rescues whatever the dead one held
    async with app.backend.acquire() as conn:
        await wait_for(
            lambda: conn.fetchval(
                f"SELECT bool_and(heartbeat_at < now() - interval '4 seconds') FROM "
                f'"{app.schema}".soniq_workers WHERE pid = $1',
                first.pid,
            ),
            timeout=30,
            message="the dead worker silent past heartbeat_timeout",
        )
        await wait_for(
            lambda: conn.fetchval(
                f'SELECT count(*) > 0 FROM "{app.schema}".soniq_workers WHERE pid = $1',
                second.pid,
            ),
            timeout=30,
        )
    job = await app.wait(job_id, timeout=5)
    assert job["status"] == JobStatus.DONE and job["attempts"] == 1
    assert await app.get_result(job_id) == {"charged": True}
    rows = await effects(app, job_id)
    assert len(rows) == 1 and rows[0]["pid"] == first.pid
    assert second.proc.poll() is None  # the second worker is alive and never ran it


@pytest.mark.skipif(
    bool(os.environ.get("SONIQ_TEST_DATABASE_URL")) and not os.environ.get("SONIQ_TEST_PG_RESTART"),
    reason="restarts the server: set SONIQ_TEST_PG_RESTART to a command that restarts it",
)
async def test_abort_during_a_database_restart_still_cancels(
    app: Soniq, procs: list[WorkerProcess], cli_env: dict[str, str]
) -> None:
    job_id = await app.enqueue("long_task")
    w = start(procs, cli_env)

    async def processing() -> bool:
        job = await app.get_job(job_id)
        return job is not None and job["status"] == JobStatus.PROCESSING

    await wait_for(processing, timeout=30)
    await app.close()
    await asyncio.to_thread(_restart_postgres)

    async def ask() -> bool:
        # the worker's LISTEN connection is down or reconnecting: the NOTIFY may be lost
        try:
            return await app.cancel_job(job_id, abort=True)
        except Exception:
            await app.close()
            return False

    await wait_for(ask, timeout=60, interval=0.05)
    job = await app.wait(job_id, timeout=30)
    assert job["status"] == JobStatus.CANCELLED and job["cancel_reason"] == "aborted"
    assert job["attempts"] == 1
    assert w.proc.poll() is None  # the worker rode out the restart
