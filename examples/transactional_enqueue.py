"""Transactional enqueue: the job is written in your transaction, so it exists exactly when
your own rows do.

    python examples/transactional_enqueue.py

``connection=`` takes any asyncpg connection inside a transaction (here one this script
opens itself, not one of soniq's). Rollback: the job never existed. Commit: it exists and
workers are woken.
"""

from __future__ import annotations

import asyncio

import asyncpg

from soniq import JobStatus, Soniq

app = Soniq()
receipts: list[int] = []


@app.job(name="shop.send_receipt")
async def send_receipt(order_id: int) -> str:
    receipts.append(order_id)
    return f"receipt for order {order_id} sent"


async def place_order(conn: asyncpg.Connection, table: str, order_id: int, fail: bool) -> str:
    async with conn.transaction():
        await conn.execute(f"INSERT INTO {table} (id, item) VALUES ($1, 'book')", order_id)
        job_id = await send_receipt.enqueue(order_id=order_id, connection=conn)
        if fail:
            raise RuntimeError("payment declined")  # rolls back the order AND the job
    return job_id


async def main() -> int:
    async with app:
        await app.setup()
        table = f'"{app.schema}".example_orders'
        conn = await asyncpg.connect(await app.database_url())
        try:
            await conn.execute(
                f"CREATE TABLE IF NOT EXISTS {table} (id int PRIMARY KEY, item text)"
            )
            await conn.execute(f"DELETE FROM {table} WHERE id IN (1, 2)")
            kept = await place_order(conn, table, 1, fail=False)
            try:
                await place_order(conn, table, 2, fail=True)
            except RuntimeError as exc:
                print(f"order 2 rolled back: {exc}")
            orders = [r["id"] for r in await conn.fetch(f"SELECT id FROM {table} ORDER BY id")]
        finally:
            await conn.close()

        await app.run_worker(run_once=True)
        job = await app.get_job(kept)
        print(f"orders in the table: {orders}; receipts sent: {receipts}")
        print(f"job {kept}: {job and job['status']} -> {await app.get_result(kept)!r}")
        if orders != [1] or receipts != [1] or job is None or job["status"] is not JobStatus.DONE:
            print("FAILED: the job did not follow its transaction")
            return 1
    print("OK: the committed order got its receipt; the rolled-back one left no job")
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
