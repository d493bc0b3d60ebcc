"""Retries, backoff and the dead-letter queue, with a worker running in the background.

    python examples/retries.py

A flaky job fails twice and then succeeds (same job id, attempts counted); a broken job
spends its attempts and is dead-lettered, where it stays until replayed or deleted.
"""

from __future__ import annotations

import asyncio

from soniq import JobContext, JobStatus, Soniq

# Retries scheduled for later are found by the worker's poll (default every 5 s); poll
# often here so this demo's short delays are picked up promptly.
app = Soniq(poll_interval=0.5)


@app.job(name="retries.flaky", retries=3, retry_delay=[0.1, 0.2])  # 4 attempts at most
async def flaky(ctx: JobContext) -> str:
    if ctx.attempt < 3:
        raise ConnectionError(f"upstream unavailable (attempt {ctx.attempt})")
    return f"succeeded on attempt {ctx.attempt}"


@app.job(name="retries.broken", retries=1, retry_delay=0.1, retry_backoff=True)
async def broken(n: int) -> None:
    raise ValueError(f"cannot process {n}")


async def wait_until_finished(job_ids: list[str], timeout: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        jobs = [await app.get_job(i) for i in job_ids]
        waiting = (JobStatus.QUEUED, JobStatus.PROCESSING)
        if all(j is not None and j["status"] not in waiting for j in jobs):
            return
        await asyncio.sleep(0.1)
    raise TimeoutError("jobs did not finish in time")


async def main() -> int:
    async with app:
        await app.setup()
        stop = asyncio.Event()
        worker = asyncio.create_task(app.run_worker(concurrency=2, shutdown_event=stop))
        try:
            ok_id = await flaky.enqueue()
            bad_id = await broken.enqueue(n=7)
            await wait_until_finished([ok_id, bad_id])
        finally:
            stop.set()
            await worker

        ok = await app.get_job(ok_id)
        assert ok is not None
        print(
            f"flaky:  {ok['status']} after {ok['attempts']} attempts -> "
            f"{await app.get_result(ok_id)!r}"
        )
        entry = await app.dead_letter.get_dead_letter_job(bad_id)
        assert entry is not None
        print(
            f"broken: dead-lettered ({entry.reason}) after {entry.attempts} attempts: "
            f"{entry.last_error!r}"
        )
        replayed = await app.dead_letter.replay(bad_id)
        print(f"replayed as new job {replayed}; the entry stays for inspection")
        await app.cancel_job(replayed)  # this demo does not want it to fail again

        if ok["status"] is not JobStatus.DONE or ok["attempts"] != 3 or entry.attempts != 2:
            print("FAILED: unexpected outcome")
            return 1
    print("OK: retried until success, dead-lettered when attempts ran out")
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
