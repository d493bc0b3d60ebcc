"""One app used from several event loops (issue 18, item 1), in a real process."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

from soniq import JobStatus, Soniq


def _run(env: dict[str, str], case: str) -> dict[str, object]:
    proc = subprocess.run(
        [sys.executable, "-W", "error::RuntimeWarning", "-m", "process.many_loops", case],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


async def test_three_asyncio_runs_in_a_row_each_enqueue(
    app: Soniq, cli_env: dict[str, str]
) -> None:
    assert app._db is not None
    own = app._db.pool.get_size()  # the test's app: the same schema, so the same session name
    out = await asyncio.to_thread(_run, {**cli_env, "OTHER_SESSIONS": str(own)}, "sequential")
    ids = out["ids"]
    assert isinstance(ids, list) and len(set(ids)) == 3
    for job_id in ids:
        assert (await app.get_job(job_id) or {})["status"] is JobStatus.DONE
    assert out["results"] == [1, 2, 3]
    # the pools of the finished loops were ended, not left open on the server
    assert out["sessions"] == app.settings.pool_min_size, out


async def test_a_loop_still_running_in_another_thread_is_refused(
    app: Soniq, cli_env: dict[str, str]
) -> None:
    out = await asyncio.to_thread(_run, cli_env, "other_thread")
    assert out["refused"] is not None, out
    refused = out["refused"]
    assert isinstance(refused, dict)
    assert refused["code"] == "SONIQ_EVENT_LOOP_MISMATCH"
    assert "async with app:" in refused["message"]
    assert (await app.get_queue_stats())["total"] == 1  # the refused enqueue wrote nothing
