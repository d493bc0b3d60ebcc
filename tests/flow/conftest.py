"""Fixtures for flow-control tests: `soniq worker` processes on tests.flow.flow_jobs."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from soniq import Soniq
from tests.flow.flow_jobs import RUNS_TABLE
from tests.process.test_worker_process import (  # noqa: F401 (monitor: a fixture)
    WorkerProcess,
    app_with_tasks,
    killed_at_end,
    monitor,
)

MODULE = "tests.flow.flow_jobs"


@pytest.fixture
def flow_workers() -> Iterator[list[WorkerProcess]]:
    with killed_at_end() as started:
        yield started


def start_worker(
    workers: list[WorkerProcess], env: dict[str, str], *args: str, **env_extra: str
) -> WorkerProcess:
    w = WorkerProcess({**env, **env_extra}, *args, module=MODULE)
    workers.append(w)
    return w


@pytest.fixture
async def flow_app(make_app: Any) -> AsyncIterator[Soniq]:
    from tests.flow import flow_jobs

    yield await app_with_tasks(make_app, [flow_jobs.app], RUNS_TABLE)
