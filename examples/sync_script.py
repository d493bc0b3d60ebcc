"""A plain script (or a Flask view) that calls soniq with ``asyncio.run`` once per step, and
reads what went wrong in a failed job: each attempt's traceback.

    python examples/sync_script.py

Every ``asyncio.run`` starts a new event loop; the app notices that the loop owning its pool
has finished and opens a new pool on the current one.
"""

from __future__ import annotations

import asyncio

from soniq import JobStatus, Soniq

app = Soniq()


@app.job  # the bare decorator: every default
async def add(x: int, y: int) -> int:
    return x + y


@app.job(name="orders.charge", retries=1)
async def charge(order_id: int) -> None:
    raise RuntimeError(f"card declined for order {order_id}")


def main() -> None:
    asyncio.run(app.setup())
    # one asyncio.run per call, as a request handler would do
    ids = [asyncio.run(add.enqueue(x=i, y=10)) for i in range(3)]  # type: ignore[attr-defined]
    failing = asyncio.run(charge.enqueue(order_id=7))  # type: ignore[attr-defined]
    asyncio.run(app.run_worker(run_once=True))
    results = [asyncio.run(app.get_result(i)) for i in ids]
    print("results:", results)
    assert results == [10, 11, 12]

    job = asyncio.run(app.get_job(failing))
    assert job is not None and job["status"] is JobStatus.DEAD_LETTER
    for error in job["errors"]:
        print(f"attempt {error['attempt']}: {error['error']}")
        print(error["traceback"].rstrip())
    assert [e["attempt"] for e in job["errors"]] == [1, 2]
    asyncio.run(app.close())
    print("OK: three event loops in a row, and both attempts' tracebacks kept")


if __name__ == "__main__":
    main()
