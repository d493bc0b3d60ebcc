"""A script that uses one Soniq app from several event loops, as a Flask view or a plain
script does (run by tests/process/test_event_loops.py; configured by SONIQ_* variables)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading

from soniq import Soniq, SoniqError

app = Soniq()
OTHERS = int(os.environ.get("OTHER_SESSIONS", "0"))  # the test's own pool on this schema


@app.job(name="loops.add")
async def add(x: int, y: int) -> int:
    return x + y


async def sessions() -> int:
    """Server sessions this app holds open (its application_name) once the pools of the
    finished loops are gone: polled (bounded) down to this loop's own pool."""
    db = await app.database()  # this loop's pool; the last loop's one is ended
    conn = await app.connect()
    try:
        for _ in range(100):
            n = await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 "
                "AND pid <> pg_backend_pid()",
                f"soniq:{app.schema}",
            )
            if n <= db.pool.get_min_size() + OTHERS:
                break
            await asyncio.sleep(0.05)
    finally:
        await conn.close()
    return int(n) - OTHERS


def sequential() -> dict[str, object]:
    ids = [asyncio.run(add.enqueue(x=i, y=1)) for i in range(3)]  # type: ignore[attr-defined]
    asyncio.run(app.run_worker(run_once=True))
    results = [asyncio.run(app.get_result(i)) for i in ids]
    open_sessions = asyncio.run(sessions())
    asyncio.run(app.close())
    return {"ids": ids, "results": results, "sessions": open_sessions}


def other_thread() -> dict[str, object]:
    """The app's loop still runs in another thread: a call from this thread is refused."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    first = asyncio.run_coroutine_threadsafe(add.enqueue(x=1, y=1), loop).result(30)  # type: ignore[attr-defined]
    try:
        asyncio.run(add.enqueue(x=2, y=2))  # type: ignore[attr-defined]
        refused = None
    except SoniqError as exc:
        refused = {"code": exc.error_code, "message": exc.message}
    asyncio.run_coroutine_threadsafe(app.close(), loop).result(30)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    return {"first": first, "refused": refused}


if __name__ == "__main__":
    case = sys.argv[1]
    print(json.dumps(sequential() if case == "sequential" else other_thread()))
