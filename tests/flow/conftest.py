"""Fixtures for flow-control tests: `soniq worker` processes on tests.flow.flow_jobs."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import pytest

from soniq import Soniq
from tests.flow.flow_jobs import RUNS_TABLE
from tests.process.test_worker_process import WorkerProcess

MODULE = "tests.flow.flow_jobs"


@pytest.fixture
def flow_workers() -> Iterator[list[WorkerProcess]]:
    started: list[WorkerProcess] = []
    yield started
    for w in started:
        if w.proc.poll() is None or w.proc.returncode not in (0, -9):
            print(f"--- worker {w.pid} output ---\n{w.output()}")
        w.kill()


def start_worker(
    workers: list[WorkerProcess], env: dict[str, str], *args: str, **env_extra: str
) -> WorkerProcess:
    w = WorkerProcess({**env, **env_extra}, *args, module=MODULE)
    workers.append(w)
    return w


@pytest.fixture
async def flow_app(make_app: Any) -> AsyncIterator[Soniq]:
    from tests.flow import flow_jobs

    app = await make_app()
    for name, task in flow_jobs.app.tasks.items():  # enqueue the same handlers by name
        app.tasks[name] = task
    async with app.backend.acquire() as conn:
        await conn.execute(RUNS_TABLE.format(schema=f'"{app.schema}"'))
    yield app


@pytest.fixture
async def monitor(pg_url: str) -> AsyncIterator[Any]:
    conn = await asyncpg.connect(pg_url)
    yield conn
    await conn.close()
