"""`soniq scheduler`: needs jobs modules; runs until SIGINT/SIGTERM, then exits 0."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from soniq import JobStatus, Soniq
from tests.cli.cli_helpers import CLI_JOBS, run_soniq
from tests.conftest import SONIQ_BIN, wait_for


def test_scheduler_needs_jobs_modules(cli_env):
    proc = run_soniq(cli_env, "scheduler")
    assert proc.returncode == 2
    assert "SONIQ_JOBS_MODULES" in proc.stderr and "Traceback" not in proc.stderr
    bad = run_soniq(cli_env, "scheduler", "--check-interval", "0", "--jobs-modules", CLI_JOBS)
    assert bad.returncode == 2 and "--check-interval" in bad.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_scheduler_leads_and_exits_0_on_signal(app, cli_env, sig):
    proc = await asyncio.create_subprocess_exec(
        SONIQ_BIN,
        "scheduler",
        "--jobs-modules",
        CLI_JOBS,
        "--check-interval",
        "0.5",
        env=cli_env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        await wait_for(app.scheduler_leader, timeout=20, message="scheduler holds the lead")
        proc.send_signal(sig)
        _, err = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, err
    assert b"Traceback" not in err
    assert await app.scheduler_leader() is None


# -- leadership across processes ----------------------------------------------------------------

SCHED_JOBS = "cli.scheduler_jobs"


_seq = itertools.count()


class Proc:
    """A `soniq ...` process whose output goes to a file (no pipe to fill up)."""

    def __init__(self, proc: asyncio.subprocess.Process, log: Path) -> None:
        self.proc, self.log = proc, log

    @classmethod
    async def start(cls, env: dict[str, str], tmp_path: Path, *args: str) -> Proc:
        log = tmp_path / f"{args[0]}-{next(_seq)}.log"
        with log.open("wb") as out:
            proc = await asyncio.create_subprocess_exec(
                SONIQ_BIN, *args, env=env, stdout=out, stderr=asyncio.subprocess.STDOUT
            )
        return cls(proc, log)

    async def stop(self) -> int | None:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 20)
            except asyncio.TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        return self.proc.returncode

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@contextlib.asynccontextmanager
async def processes(env: dict[str, str], tmp_path: Path) -> AsyncIterator[list[Proc]]:
    started: list[Proc] = []
    try:
        yield started
    finally:
        for p in started:
            await p.stop()


async def ticks(app: Soniq) -> list[dict[str, Any]]:
    """The periodic jobs in this test's schema, oldest tick first."""
    jobs = await app.list_jobs(limit=10_000)
    return sorted(jobs, key=lambda j: j["scheduled_at"])


async def at_least(app: Soniq, n: int, status: str | None = None) -> list[dict[str, Any]] | None:
    jobs = [j for j in await ticks(app) if status is None or j["status"] == status]
    return jobs if len(jobs) >= n else None


def leader_pid(holder: dict[str, Any] | None) -> int | None:
    """The OS pid of the scheduler process holding the lead (from its application_name)."""
    if holder is None or not holder["application_name"].startswith("soniq scheduler "):
        return None
    return int(holder["application_name"].rsplit(":", 1)[1])


def env_with(cli_env: dict[str, str]) -> dict[str, str]:
    return {**cli_env, "SONIQ_JOBS_MODULES": SCHED_JOBS}


async def test_scheduler_and_worker_run_a_job_every_second(app, cli_env, tmp_path):
    env = env_with(cli_env)
    async with processes(env, tmp_path) as procs:
        procs.append(await Proc.start(env, tmp_path, "scheduler", "--check-interval", "0.5"))
        procs.append(await Proc.start(env, tmp_path, "worker", "--concurrency", "2"))
        done = await wait_for(
            lambda: at_least(app, 5, status="done"), timeout=30, message="five ticks run"
        )
    done = done[-5:]
    due = [j["scheduled_at"] for j in done]
    assert [(b - a).total_seconds() for a, b in itertools.pairwise(due)] == [1.0] * 4
    delays = [(j["started_at"] - j["scheduled_at"]).total_seconds() for j in done]
    print(f"\nevery=1s: tick-to-start delays {', '.join(f'{d:.3f}s' for d in delays)}")
    assert max(delays) < 1.0, delays
    assert [await app.get_result(j["id"]) for j in done] == [
        f"tick at {t.isoformat()}" for t in due
    ]
    for p in procs:
        assert p.proc.returncode == 0, p.output()


async def test_two_schedulers_no_duplicates_and_failover_after_kill_9(app, cli_env, tmp_path):
    env = env_with(cli_env)
    async with processes(env, tmp_path) as procs:
        for _ in range(2):
            procs.append(await Proc.start(env, tmp_path, "scheduler", "--check-interval", "0.5"))
        first = await wait_for(lambda: _leader_pid(app), timeout=20, message="one scheduler leads")
        start = time.monotonic()
        # ten seconds of two schedulers side by side
        await wait_for(lambda: at_least(app, 11), timeout=30, message="ten ticks")
        span = time.monotonic() - start
        jobs = await ticks(app)
        distinct = {j["scheduled_at"] for j in jobs}
        print(
            f"\ntwo schedulers, {span:.1f}s: {len(jobs)} jobs for {len(distinct)} ticks, "
            f"{len(jobs) - len(distinct)} duplicates; leader pid {first}"
        )
        assert len(distinct) == len(jobs)
        assert await _leader_pid(app) == first  # no flapping

        victim = next(p for p in procs if p.proc.pid == first)
        survivor = next(p for p in procs if p.proc.pid != first)
        before = len(jobs)
        victim.proc.kill()  # SIGKILL: no unlock, no goodbye
        killed = time.monotonic()
        await victim.proc.wait()
        new = await wait_for(
            lambda: _leader_pid(app, not_pid=first), timeout=20, message="the other takes over"
        )
        took_over = time.monotonic() - killed
        await wait_for(lambda: at_least(app, before + 1), timeout=20, message="a tick after")
        first_tick_after = time.monotonic() - killed
        await wait_for(lambda: at_least(app, before + 3), timeout=20, message="ticks go on")
        print(
            f"kill -9 of the leader: pid {new} led after {took_over:.2f}s, "
            f"first new tick enqueued after {first_tick_after:.2f}s"
        )
        assert new == survivor.proc.pid
        assert took_over < 5.0
        jobs = await ticks(app)
        assert len({j["scheduled_at"] for j in jobs}) == len(jobs)
        due = sorted(j["scheduled_at"] for j in jobs)
        gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(due)]
        assert max(gaps) <= 3.0, gaps  # a missed second fires once, on catch-up
    assert survivor.proc.returncode == 0, survivor.output()


async def test_plain_worker_never_fires_periodic_jobs_with_scheduler_does(app, cli_env, tmp_path):
    env = env_with(cli_env)
    async with processes(env, tmp_path) as procs:
        worker = await Proc.start(env, tmp_path, "worker")
        procs.append(worker)
        await wait_for(lambda: _logged(worker, "started"), timeout=20, message="worker up")
        # a negative can only be watched for: three ticks' time, in which none may appear
        await asyncio.sleep(3)
        assert await ticks(app) == []
        assert await worker.stop() == 0
        procs.append(await Proc.start(env, tmp_path, "worker", "--with-scheduler"))
        done = await wait_for(
            lambda: at_least(app, 2, status="done"), timeout=30, message="ticks run"
        )
    assert all(j["status"] == JobStatus.DONE for j in done)


async def _leader_pid(app: Soniq, not_pid: int | None = None) -> int | None:
    pid = leader_pid(await app.scheduler_leader())
    return None if pid == not_pid else pid


async def _logged(p: Proc, text: str) -> bool:
    return text in p.output()
