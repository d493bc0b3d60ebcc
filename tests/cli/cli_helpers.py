"""Helpers for the CLI tests: run ``soniq`` in-process (click's runner) or as a process."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
from dataclasses import dataclass
from typing import Any

from click.testing import CliRunner, Result

from soniq import Soniq
from soniq.cli import cli
from tests.conftest import SONIQ_BIN

CLI_JOBS = "cli.cli_jobs"  # module path under the PYTHONPATH that cli_env sets


async def invoke(env: dict[str, str], *args: str, input: str | None = None) -> Result:
    """``soniq ARGS`` through click's runner, in a thread (the command runs its own loop)."""
    runner = CliRunner()
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    try:
        return await asyncio.to_thread(
            runner.invoke, cli, list(args), env=env, input=input, catch_exceptions=True
        )
    finally:  # the command configures logging for its process; this process is pytest
        root.setLevel(level)
        root.handlers[:] = handlers


def as_json(result: Result) -> Any:
    assert result.exit_code == 0, (result.exit_code, result.output, result.exception)
    return json.loads(result.stdout)


def run_soniq(
    env: dict[str, str], *args: str, timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    """``soniq ARGS`` as a real process (bounded by ``timeout``)."""
    return subprocess.run(
        [SONIQ_BIN, *args], env=env, capture_output=True, text=True, timeout=timeout
    )


@dataclass
class Seed:
    done: list[str]
    dead: list[str]
    queued: list[str]
    later: str
    cancelled: str


async def seed(app: Soniq) -> Seed:
    """A small history: 3 done (default), 2 dead-lettered (critical), 2 queued (emails),
    1 scheduled an hour ahead, 1 cancelled."""

    @app.job(name="seed.ok")
    async def ok(n: int) -> int:
        return n * 2

    @app.job(name="seed.bad", queue="critical", retries=1)
    async def bad(n: int) -> None:
        raise RuntimeError(f"bad input {n}")

    done = [await ok.enqueue(n=i) for i in range(3)]  # type: ignore[attr-defined]
    dead = [await bad.enqueue(n=i) for i in range(2)]  # type: ignore[attr-defined]
    await app.run_worker(run_once=True, concurrency=4)
    queued = [await app.enqueue("seed.ok", args={"n": 10 + i}, queue="emails") for i in range(2)]
    later = await app.enqueue("seed.ok", args={"n": 99}, scheduled_at=3600)
    cancelled = await app.enqueue("seed.ok", args={"n": 7})
    assert await app.cancel_job(cancelled)
    return Seed(done, dead, queued, later, cancelled)
