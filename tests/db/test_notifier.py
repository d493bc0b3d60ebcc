"""The instance's one LISTEN connection: shared by every subscriber, reconnected when lost,
with every subscriber told to re-read after a reconnect (a NOTIFY sent meanwhile is gone)."""

from __future__ import annotations

import asyncio

from soniq import Soniq
from tests.conftest import wait_for


async def notify(app: Soniq, channel: str, payload: str) -> None:
    async with app.backend.acquire() as conn:
        await conn.execute("SELECT pg_notify($1, $2)", channel, payload)


async def listener_pids(app: Soniq) -> list[int]:
    """Backends of this instance LISTENing on anything (the notifier's connections)."""
    conn = app.notifier._conn
    if conn is None:
        return []
    return [conn.get_server_pid()]


async def test_subscribers_share_one_connection_and_get_their_channel_only(app: Soniq) -> None:
    got: dict[str, list[str]] = {"a": [], "b": []}
    ready = asyncio.Event()
    sub_a = app.notifier.subscribe("soniq_test_a", got["a"].append, ready.set)
    sub_b = app.notifier.subscribe("soniq_test_b", got["b"].append)
    await asyncio.wait_for(ready.wait(), 10)
    first = app.notifier._conn
    assert first is not None

    async def both_listening() -> bool:
        await notify(app, "soniq_test_b", "probe")
        await asyncio.sleep(0.05)
        return "probe" in got["b"]

    await wait_for(both_listening, timeout=10, message="LISTEN on the second channel")
    await notify(app, "soniq_test_a", "x")
    await notify(app, "soniq_test_b", "y")
    await wait_for(lambda: _true("x" in got["a"] and "y" in got["b"]), timeout=10)
    assert "y" not in got["a"] and "x" not in got["b"]
    assert app.notifier._conn is first  # one connection served both

    await sub_a.close()
    assert app.notifier._conn is first  # still one subscriber left
    await sub_b.close()
    assert app.notifier._task is None and app.notifier._conn is None  # closed with the last


async def test_lost_connection_is_reopened_and_subscribers_told(app: Soniq) -> None:
    got: list[str] = []
    reconnects = 0
    connected = asyncio.Event()

    def on_reconnect() -> None:
        nonlocal reconnects
        reconnects += 1
        connected.set()

    sub = app.notifier.subscribe("soniq_test_c", got.append, on_reconnect)
    try:
        await asyncio.wait_for(connected.wait(), 10)
        assert reconnects == 1
        (pid,) = await listener_pids(app)
        async with app.backend.acquire() as conn:
            assert await conn.fetchval("SELECT pg_terminate_backend($1)", pid)
        await wait_for(lambda: _true(reconnects >= 2), timeout=15, message="reconnect")
        (new_pid,) = await listener_pids(app)
        assert new_pid != pid

        async def delivered() -> bool:
            await notify(app, "soniq_test_c", "after")
            await asyncio.sleep(0.05)
            return "after" in got

        await wait_for(delivered, timeout=10, message="NOTIFY after the reconnect")
    finally:
        await sub.close()


async def _true(value: bool) -> bool:
    """``value`` as the awaitable ``wait_for`` polls (the lambda re-reads it each time)."""
    return value
