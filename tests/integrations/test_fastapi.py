"""soniq.contrib.fastapi.lifespan under a real uvicorn process: requests enqueue, the
in-process worker runs the jobs, and shutdown drains the job in flight."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator

import pytest

from soniq import JobStatus, Soniq
from tests.conftest import ROOT
from tests.integrations.test_sync import _drop

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
from fastapi import Request  # a module global: FastAPI resolves annotations here


@pytest.fixture
def sync_schema(pg_url: str) -> Iterator[str]:
    name = f"f_{uuid.uuid4().hex[:12]}"
    yield name
    _drop(pg_url, name)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def post(url: str) -> dict[str, str]:
    req = urllib.request.Request(url, method="POST", data=b"")
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())  # type: ignore[no-any-return]


async def wait_for(cond, timeout: float = 20) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not await cond():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.1)


async def test_uvicorn_with_worker_runs_jobs_and_drains(
    app: Soniq, pg_url: str, schema_name: str
) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SONIQ_")}
    env.update(SONIQ_DATABASE_URL=pg_url, SONIQ_SCHEMA=schema_name, PYTHONPATH=str(ROOT),
               SONIQ_SHUTDOWN_TIMEOUT="20")  # fmt: skip
    log = tempfile.TemporaryFile("w+")
    proc = await asyncio.to_thread(
        subprocess.Popen,
        [sys.executable, "-m", "uvicorn", "tests.integrations.fastapi_site:web",
         "--port", str(port), "--log-level", "info"],
        env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:

        async def up() -> bool:
            try:
                await asyncio.to_thread(post, f"{base}/orders/0")
                return True
            except OSError:
                assert proc.poll() is None, "uvicorn exited"
                return False

        await wait_for(up)
        ids = [(await asyncio.to_thread(post, f"{base}/orders/{n}"))["job_id"] for n in (1, 2, 3)]

        async def all_done() -> bool:
            jobs = [await app.get_job(i) for i in ids]
            return all(j is not None and j["status"] is JobStatus.DONE for j in jobs)

        await wait_for(all_done)
        assert [await app.get_result(i) for i in ids] == ["shipped 1", "shipped 2", "shipped 3"]

        slow_id = (await asyncio.to_thread(post, f"{base}/slow?seconds=1.5"))["job_id"]

        async def started() -> bool:
            job = await app.get_job(slow_id)
            return job is not None and job["status"] is JobStatus.PROCESSING

        await wait_for(started)
        proc.send_signal(signal.SIGTERM)
        # uvicorn shuts down gracefully, then re-raises the signal it caught
        assert await asyncio.to_thread(proc.wait, 30) in (0, -signal.SIGTERM)
        # drained on shutdown: the job in flight finished instead of going back to the queue
        assert await app.get_result(slow_id) == "finished"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        log.seek(0)
        print(log.read())


# starlette's TestClient warns that it prefers httpx2 over httpx (a UserWarning subclass)
@pytest.mark.filterwarnings("ignore:Using `httpx`")
def test_lifespan_without_worker_opens_and_closes(pg_url: str, sync_schema: str) -> None:
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from soniq.contrib.fastapi import lifespan

    app = Soniq(pg_url, schema=sync_schema)

    @app.job(name="note")
    async def note(text: str) -> None:
        pass

    web = FastAPI(lifespan=lifespan(app))

    @web.post("/notes")
    async def add(request: Request) -> dict[str, object]:
        soniq: Soniq = request.state.soniq
        await soniq.setup()
        job_id = await note.enqueue(text="hi")
        return {"job_id": job_id, "same": soniq is app, "open": app._db is not None}

    with TestClient(web) as client:
        body = client.post("/notes").json()
        assert body["same"] and body["open"]
    assert app._db is None  # closed at shutdown
    job = app.sync.get_job(body["job_id"])
    assert job is not None and job["status"] is JobStatus.QUEUED  # no worker: not run
    app.sync.close()
    with pytest.raises(TypeError):
        lifespan(app, shutdown_event=asyncio.Event())
