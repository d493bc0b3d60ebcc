"""Steering jobs after they are enqueued: wait for a result, watch progress, abort a
running job, retry only what can heal, expire what is too late, enqueue once per key, tag.

    python examples/job_control.py
"""

from __future__ import annotations

import asyncio

from soniq import JobContext, JobStatus, Soniq, SoniqError

app = Soniq(poll_interval=0.5)


@app.job(name="control.report")
async def report(ctx: JobContext, pages: int) -> dict[str, int]:
    for page in range(1, pages + 1):
        await asyncio.sleep(0.02)  # render one page
        await ctx.set_progress(page / pages, f"page {page}/{pages}")
    return {"pages": pages}


@app.job(name="control.crawl")
async def crawl(url: str) -> None:
    try:
        await asyncio.sleep(3600)  # a long crawl; an abort cancels it here
    finally:
        print(f"crawl of {url}: cleaning up after the abort")


@app.job(name="control.charge", retries=5, no_retry_on=(ValueError,))
async def charge(order: int, amount: int) -> str:
    if amount <= 0:
        raise ValueError(f"order {order}: amount must be positive")  # never heals
    return f"charged order {order}"


@app.job(name="control.notify", expires_after=60)  # pointless after a minute
async def notify(user: str) -> None: ...


async def main() -> int:
    async with app:
        await app.setup()
        stop = asyncio.Event()
        worker = asyncio.create_task(app.run_worker(concurrency=4, shutdown_event=stop))
        try:
            # wait for a result, watching the progress on the way
            job_id = await report.enqueue(pages=10, tags={"tenant": "acme"})
            async for job in app.watch(job_id):
                if job["progress"] is not None:
                    print(f"report: {job['progress']:.0%} {job['progress_message']}")
            print("report result:", await app.get_result(job_id))

            # abort a running job
            crawl_id = await crawl.enqueue(url="https://example.com")
            async for job in app.watch(crawl_id):  # until a worker has started it
                if job["status"] is JobStatus.PROCESSING:
                    break
            await app.cancel_job(crawl_id, abort=True)
            crawled = await app.wait(crawl_id, timeout=10)
            print(f"crawl: {crawled['status']} ({crawled['cancel_reason']})")

            # an error that cannot heal is dead-lettered at once, not retried
            bad = await app.enqueue(charge, order=7, amount=0, idempotency_key="order:7")
            await app.wait(bad, timeout=10)
            entry = await app.dead_letter.get_dead_letter_job(bad)
            assert entry is not None
            print(f"charge: dead-lettered after {entry.attempts} attempt ({entry.reason})")

            # the same idempotency key and request: the first job's id, nothing written
            again = await app.enqueue(charge, order=7, amount=0, idempotency_key="order:7")
            try:
                await app.enqueue(charge, order=7, amount=5, idempotency_key="order:7")
            except SoniqError as exc:
                print("a different request under the same key:", exc.error_code)

            # tags
            acme = await app.list_jobs(tags={"tenant": "acme"})
            print("jobs tagged tenant=acme:", len(acme))
        finally:
            stop.set()
            await worker

        if not (
            crawled["cancel_reason"] == "aborted"
            and entry.reason == "not_retryable"
            and again == bad
            and len(acme) == 1
        ):
            print("FAILED: unexpected outcome")
            return 1
    print("OK: waited, watched, aborted, refused a retry and an idempotency conflict")
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
