"""Exactly-once database writes: the handler's insert and the job's ``done`` commit in one
transaction (``ctx.complete``), so a crash after the commit never runs the insert again.

    python examples/complete_in_transaction.py
"""

from __future__ import annotations

import asyncio
import uuid

from soniq import JobContext, Soniq

app = Soniq()


@app.job(name="ledger.post")
async def post(ctx: JobContext, account: str, cents: int) -> None:
    async with app.backend.acquire() as conn, conn.transaction():
        await conn.execute(
            f'INSERT INTO "{app.schema}".ledger (job_id, account, cents) VALUES ($1, $2, $3)',
            uuid.UUID(ctx.job_id),
            account,
            cents,
        )
        # done with this result exactly when the insert commits; SONIQ_JOB_LOST (and a
        # rollback) if this worker no longer owns the job
        await ctx.complete(conn, {"posted": cents})


async def main() -> int:
    async with app:
        await app.setup()
        async with app.backend.acquire() as conn:
            await conn.execute(
                f'CREATE TABLE IF NOT EXISTS "{app.schema}".ledger '
                "(job_id uuid PRIMARY KEY, account text, cents int)"
            )
        job_id = await post.enqueue(account="acme", cents=1250)
        await app.run_worker(run_once=True)
        job = await app.wait(job_id, timeout=10)
        async with app.backend.acquire() as conn:
            rows = await conn.fetchval(f'SELECT count(*) FROM "{app.schema}".ledger')
        print(f"job {job['status']}, result {await app.get_result(job_id)}, ledger rows {rows}")
        if rows != 1 or await app.get_result(job_id) != {"posted": 1250}:
            print("FAILED")
            return 1
    print("OK: the ledger row and the job's completion committed together")
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
