"""Shared pieces of the dashboard tests: an ASGI client and a history in every state."""

from __future__ import annotations

import re
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from typing import Any

import httpx

from soniq import Soniq
from soniq.dashboard import create_app
from tests.conftest import SONIQ_BIN

TOKEN = "t0ken-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
XSS = "<script>alert('x\"y')</script>"


def client(
    app: Soniq,
    *,
    writable: bool = False,
    token: str | None = TOKEN,
    base_url: str = "http://dash.test",
) -> httpx.AsyncClient:
    web = create_app(app, writable=writable, token=token)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=web), base_url=base_url)


def csrf_of(html: str) -> str:
    match = re.search(r'name="soniq-csrf" content="([0-9a-f]*)"', html)
    assert match, "no CSRF meta tag"
    return match.group(1)


@dataclass
class History:
    done: str
    dead: str
    queued: str
    cancelled: str
    xss: str


async def history(app: Soniq) -> History:
    """One job in each end state, plus a dead letter whose args and error carry ``XSS``."""

    @app.job(name="dash.ok")
    async def ok(n: int) -> dict[str, Any]:
        return {"double": n * 2}

    @app.job(name="dash.bad", queue="critical", retries=0)
    async def bad(text: str) -> None:
        raise RuntimeError(f"bad {text}")

    done = await ok.enqueue(n=21)  # type: ignore[attr-defined]
    dead = await bad.enqueue(text="plain")  # type: ignore[attr-defined]
    xss = await bad.enqueue(text=XSS)  # type: ignore[attr-defined]
    await app.run_worker(run_once=True, concurrency=4)
    queued = await ok.enqueue(n=1)  # type: ignore[attr-defined]
    cancelled = await ok.enqueue(n=2)  # type: ignore[attr-defined]
    assert await app.cancel_job(cancelled)
    return History(done, dead, queued, cancelled, xss)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Proc:
    """A `soniq ...` process whose output goes to a temporary file."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.log = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(
            [SONIQ_BIN, *args], env=env, stdout=self.log, stderr=subprocess.STDOUT, text=True
        )

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()
