"""Test fixtures: one real PostgreSQL for the session, a fresh schema per test.

The server is ``SONIQ_TEST_DATABASE_URL`` when set, else soniq's embedded PostgreSQL in
``.soniq-test/`` at the repository root. Each test that asks for ``app`` gets its own schema,
so tests never see each other's jobs.
"""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from soniq import Soniq

ROOT = Path(__file__).resolve().parent.parent
# SONIQ_TEST_DATA_DIR: another directory (a test runs the suite itself on a fresh one)
TEST_DATA_DIR = Path(os.environ.get("SONIQ_TEST_DATA_DIR") or ROOT / ".soniq-test")
TEST_DATABASE = "soniq_test"

# Small intervals, as API.md promises they work.
FAST_SETTINGS: dict[str, Any] = {
    "heartbeat_interval": 0.5,
    "heartbeat_timeout": 2,
    "cleanup_interval": 1,
    "poll_interval": 0.5,
    "shutdown_timeout": 5,
}


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """URL of the session's database (created if missing). The embedded server is stopped
    when the session ends, unless another live process still uses it."""
    url = os.environ.get("SONIQ_TEST_DATABASE_URL")
    if url:
        yield url
        return
    from soniq import embedded

    yield asyncio.run(embedded.database_url(str(TEST_DATA_DIR), TEST_DATABASE))
    embedded.release(TEST_DATA_DIR)


@pytest.fixture
def schema_name() -> str:
    return f"t_{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def make_app(pg_url: str, schema_name: str) -> AsyncIterator[Callable[..., Awaitable[Soniq]]]:
    """Factory for set-up Soniq instances on this test's schema (closed at teardown)."""
    apps: list[Soniq] = []

    async def make(**settings: Any) -> Soniq:
        opts = {**FAST_SETTINGS, "schema": schema_name, **settings}
        app = Soniq(database_url=pg_url, **opts)
        await app.setup()
        apps.append(app)
        return app

    yield make
    for app in apps:
        await app.close()
    conn = await asyncpg.connect(pg_url)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema_name}" CASCADE')
    finally:
        await conn.close()


@pytest.fixture
async def app(make_app: Callable[..., Awaitable[Soniq]]) -> Soniq:
    """A set-up Soniq on a fresh schema."""
    return await make_app()


@pytest.fixture
def cli_env(pg_url: str, schema_name: str) -> dict[str, str]:
    """Environment for `soniq ...` subprocesses that share this test's schema."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SONIQ_")}
    env.update(
        SONIQ_DATABASE_URL=pg_url,
        SONIQ_SCHEMA=schema_name,
        SONIQ_HEARTBEAT_INTERVAL="0.5",
        SONIQ_HEARTBEAT_TIMEOUT="2",
        SONIQ_CLEANUP_INTERVAL="1",
        SONIQ_POLL_INTERVAL="0.5",
        PYTHONUNBUFFERED="1",
    )
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in [str(ROOT / "tests"), str(ROOT), env.get("PYTHONPATH", "")] if p
    )
    return env


SONIQ_BIN = str(Path(sys.executable).with_name("soniq"))


async def wait_for(
    predicate: Callable[[], Awaitable[Any]], timeout: float = 20.0, interval: float = 0.05,
    message: str = "condition",
) -> Any:
    """Poll ``predicate`` until it returns a truthy value, or fail after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        await asyncio.sleep(interval)
