"""Fixtures for webhook tests: a real receiver on 127.0.0.1 and an in-process worker."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from soniq import Soniq
from tests.process.test_worker_process import workers  # noqa: F401  (a fixture, for process tests)
from tests.webhooks.receiver import Receiver


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = await Receiver().start()
    yield r
    r.release.set()
    await r.stop()


@pytest.fixture
async def hooks_app(
    make_app: Callable[..., Awaitable[Soniq]], monkeypatch: pytest.MonkeyPatch
) -> Soniq:
    """An app whose delivery retries start at 0.2 s (the documented test knob)."""
    monkeypatch.setenv("SONIQ_WEBHOOK_RETRY_DELAY", "0.2")
    return await make_app()


@pytest.fixture
async def run_worker() -> AsyncIterator[Callable[..., Any]]:
    """Start ``app.run_worker`` in the background; stopped at teardown."""
    started: list[tuple[asyncio.Event, asyncio.Task[None]]] = []

    def start(app: Soniq, **kw: Any) -> asyncio.Event:
        stop = asyncio.Event()
        task = asyncio.ensure_future(app.run_worker(shutdown_event=stop, **kw))
        started.append((stop, task))
        return stop

    yield start
    for stop, _ in started:
        stop.set()
    for _, task in started:
        await asyncio.wait_for(task, 30)
