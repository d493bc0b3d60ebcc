"""`soniq scheduler`: needs jobs modules; runs until SIGINT/SIGTERM, then exits 0."""

from __future__ import annotations

import asyncio
import signal

import pytest

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
    pytest.importorskip("soniq.scheduler", reason="soniq/scheduler.py is not written yet")
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
