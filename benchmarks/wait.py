"""``app.wait`` latency: from a job's end to the waiter's return, over the instance's one
LISTEN connection, with a real `soniq worker` process running the jobs."""

from __future__ import annotations

import asyncio
import time

from benchmarks.common import Result, pct
from benchmarks.drain import idle_worker

HOLD = 0.02  # each job runs this long, so its waiter is listening before it ends


async def wait_latency(url: str, jobs: int) -> Result:
    """One job at a time: enqueue, ``wait``; latency = waiter return - the job's end (its
    ``finished_at``, and, second figure, the handler's return)."""
    from_end: list[float] = []
    from_return: list[float] = []
    async with idle_worker(url, "bench_wait") as (app, _, _):
        for i in range(jobs + 5):  # the first five warm up both sides
            job_id = await app.enqueue("bench.hold", args={"seconds": HOLD})
            job = await app.wait(job_id, timeout=30)
            back = time.time()
            if i < 5:
                continue
            from_end.append((back - job["finished_at"].timestamp()) * 1000)
            result = await app.get_result(job_id)
            from_return.append((back - float(result)) * 1000)
    from_end.sort()
    from_return.sort()

    return Result(
        "soniq.wait",
        "wait: job end -> waiter return",
        jobs,
        extra={
            "p50_ms": pct(from_end, 50),
            "p95_ms": pct(from_end, 95),
            "p99_ms": pct(from_end, 99),
            "max_ms": round(from_end[-1], 2),
            "from_handler_return_p50_ms": pct(from_return, 50),
            "from_handler_return_p99_ms": pct(from_return, 99),
        },
    )


if __name__ == "__main__":  # python -m benchmarks.wait URL
    import sys

    print(asyncio.run(wait_latency(sys.argv[1], 200)).extra)
