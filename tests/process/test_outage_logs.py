"""A database outage in a worker's log (issue 18, item 8): one warning per component when
the connection is lost, one info line when it is back, no tracebacks (those are DEBUG)."""

from __future__ import annotations

import asyncio
import re
import signal
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest

from soniq import JobStatus, Soniq, task_ref
from tests.conftest import wait_for
from tests.process.outage_proxy import OutageProxy
from tests.process.test_worker_process import WorkerProcess
from tests.process.worker_jobs import RUNS_TABLE

# a worker's maintenance runs on the heartbeat's connection, right after a good beat: an
# outage is the heartbeat's to report
COMPONENTS = ["LISTEN connection", "scheduler", "heartbeat", "worker"]


@pytest.fixture
async def proxy(pg_url: str) -> AsyncIterator[OutageProxy]:
    front = OutageProxy(pg_url)
    await front.start()
    yield front
    await front.cut()


def _lines(output: str, words: str) -> Counter[str]:
    """Per component, the log lines containing ``words``."""
    found: Counter[str] = Counter()
    for line in output.splitlines():
        match = re.search(r"(WARNING|INFO) +soniq\.\w+: (.+?): " + re.escape(words), line)
        if match:
            name = match.group(2)
            kind = next(c for c in COMPONENTS if c in name or name.startswith(c))
            found[kind] += 1
    return found


async def _done(app: Soniq, job_id: str) -> bool:
    return (await app.get_job(job_id) or {}).get("status") is JobStatus.DONE


async def test_an_outage_logs_one_warning_and_one_recovery_per_component(
    make_app: Any, cli_env: dict[str, str], proxy: OutageProxy
) -> None:
    app = await make_app()
    async with app.backend.acquire() as conn:
        await conn.execute(RUNS_TABLE.format(schema=f'"{app.schema}"'))
    worker = WorkerProcess({**cli_env, "SONIQ_DATABASE_URL": proxy.url()}, "--with-scheduler")
    try:
        first = await app.enqueue(task_ref("record"), args={})
        await wait_for(lambda: _done(app, first), timeout=30, message="a job before the outage")

        await proxy.cut()

        async def all_lost() -> bool:
            return set(_lines(worker.output(), "database connection lost")) == set(COMPONENTS)

        await wait_for(all_lost, timeout=30, message="every component to notice the outage")
        await asyncio.sleep(3)  # the outage goes on: every loop retries several times
        during = await app.enqueue(task_ref("record"), args={})
        await proxy.start()

        async def all_back() -> bool:
            return set(_lines(worker.output(), "database reconnected after")) == set(COMPONENTS)

        await wait_for(all_back, timeout=30, message="every component to reconnect")
        await wait_for(lambda: _done(app, during), timeout=30, message="the job enqueued meanwhile")
        worker.signal(signal.SIGTERM)
        assert await worker.wait(30) == 0
        output = worker.output()
        lost = _lines(output, "database connection lost")
        assert lost == Counter(dict.fromkeys(COMPONENTS, 1)), output
        assert _lines(output, "database reconnected after") == lost, output
        assert output.count("retrying every") == len(COMPONENTS), output
        assert "Traceback" not in output and "pool connection floor" not in output, output
        assert output.count("WARNING") == len(COMPONENTS), output
    finally:
        worker.kill()
