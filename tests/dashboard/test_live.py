"""Live updates: 50 event streams share the process's one LISTEN connection and one status
query per round, and every stream sees a job's status change."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
import uvicorn

from soniq import Soniq
from soniq.dashboard import create_app
from tests.dashboard.helpers import AUTH, TOKEN

TABS = 50


@contextlib.asynccontextmanager
async def serve(web: Any) -> AsyncIterator[str]:
    """``web`` on a real HTTP server on a free loopback port, in this event loop."""
    server = uvicorn.Server(uvicorn.Config(web, host="127.0.0.1", port=0, log_level="warning"))
    task = asyncio.create_task(server.serve())
    try:
        for _ in range(500):
            if server.started:
                break
            await asyncio.sleep(0.01)
        assert server.started, "uvicorn did not start"
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


async def backends(pg_url: str) -> int:
    conn = await asyncpg.connect(pg_url)
    try:
        return int(
            await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        )
    finally:
        await conn.close()


class Tab:
    """One open event stream, read to the end by its own task; ``seen`` holds the last
    status per job id."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.seen: dict[str, str] = {}
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        event = None
        async for line in self.response.aiter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event == "job":
                data = json.loads(line[6:])
                self.seen[data["id"]] = data["status"]


async def until(predicate: Any, timeout: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_fifty_streams_share_one_listen_connection(app: Soniq, pg_url: str) -> None:
    @app.job(name="live.slow")
    async def slow() -> None: ...

    job_id = await slow.enqueue()  # type: ignore[attr-defined]
    web = create_app(app, token=TOKEN)
    hub = web.state.dashboard.hub
    channel = (await app.database()).channel
    async with (
        serve(web) as url,
        httpx.AsyncClient(
            base_url=url, headers=AUTH, timeout=20, limits=httpx.Limits(max_connections=TABS + 5)
        ) as client,
        contextlib.AsyncExitStack() as streams,
    ):
        first = await streams.enter_async_context(client.stream("GET", f"/events?ids={job_id}"))
        assert first.status_code == 200
        assert first.headers["content-type"].startswith("text/event-stream")
        tabs = [Tab(first)]
        await until(lambda: tabs[0].seen.get(job_id) == "queued")
        one_tab = await backends(pg_url)
        for _ in range(TABS - 1):
            response = await streams.enter_async_context(
                client.stream("GET", f"/events?ids={job_id}")
            )
            tabs.append(Tab(response))
        await until(lambda: all(t.seen.get(job_id) == "queued" for t in tabs))
        assert len(hub.clients) == TABS
        assert len(app.notifier._subs[channel]) == 1  # one subscription for every tab
        # 50 tabs cost no more database sessions than one (measured before the worker runs:
        # its own sessions, and pool connections its run adds, are not the tabs')
        assert await backends(pg_url) <= one_tab
        rounds_before = hub.rounds
        await app.run_worker(run_once=True)  # the job runs: queued -> processing -> done
        await until(lambda: all(t.seen.get(job_id) == "done" for t in tabs))
        # a round serves every tab, and still one subscription
        assert hub.rounds - rounds_before < TABS
        assert len(app.notifier._subs[channel]) == 1
        for tab in tabs:
            tab.task.cancel()
    # the last stream gone, the hub lets go of its subscription
    for _ in range(200):
        if not hub.clients:
            break
        await asyncio.sleep(0.05)
    assert not hub.clients
    assert not app.notifier._subs.get(channel)


async def test_streams_need_credentials(app: Soniq) -> None:
    web = create_app(app, token=TOKEN)
    async with serve(web) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
        r = await client.get("/events?ids=", headers={"Accept": "text/event-stream"})
        assert r.status_code == 401
        r = await client.get(f"/events?token={TOKEN}")
        assert r.status_code == 401


@pytest.mark.parametrize("writable", [False])
async def test_hub_closes_with_the_app(app: Soniq, writable: bool) -> None:
    web = create_app(app, writable=writable, token=TOKEN)
    hub = web.state.dashboard.hub
    client = await hub.connect([])
    assert hub.clients == {client}
    await hub.disconnect(client)
    assert hub._task is None and hub._sub is None


async def test_hub_survives_losing_its_connections(app: Soniq, pg_url: str) -> None:
    """Every session of the app killed (pool and LISTEN): the hub logs, reconnects through
    the notifier and the pool, and the stream still reports the next status change."""

    @app.job(name="live.later")
    async def later() -> None: ...

    job_id = await later.enqueue()  # type: ignore[attr-defined]
    web = create_app(app, token=TOKEN)
    hub = web.state.dashboard.hub
    client = await hub.connect([job_id])
    messages = hub.stream(client)
    assert (await anext(messages)).startswith("retry:")

    async def next_job_event() -> dict[str, Any]:
        while True:
            text = await asyncio.wait_for(anext(messages), 20)
            if text.startswith("event: job"):
                return dict(json.loads(text.split("data: ", 1)[1]))

    assert (await next_job_event())["status"] == "queued"
    conn = await asyncpg.connect(pg_url)
    try:
        killed = await conn.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid() "
            "AND backend_type = 'client backend'"
        )
        assert killed >= 1
        # the status changes behind the app's back (the app's pool still holds dead sessions)
        await conn.execute(
            f'UPDATE "{app.schema}".soniq_jobs SET status = $2, finished_at = now() WHERE id = $1',
            uuid.UUID(job_id),
            "cancelled",
        )
    finally:
        await conn.close()
    assert (await next_job_event())["status"] == "cancelled"
    await messages.aclose()
    assert not hub.clients
