"""Enqueue in a SQLAlchemy (asyncio) transaction: pass the AsyncSession or AsyncConnection
as ``connection=``; on the asyncpg driver the job joins its transaction.

    python examples/sqlalchemy_enqueue.py
"""

from __future__ import annotations

import asyncio
import sys

try:
    from sqlalchemy import text
    from sqlalchemy.engine import make_url
    from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
except ImportError as exc:
    print(f"SKIP {exc.name} is not installed: pip install 'soniq[sqlalchemy]'")
    sys.exit(0)

from soniq import Soniq

app = Soniq()


@app.job(name="shop.send_invoice")
async def send_invoice(order_id: int) -> str:
    return f"invoice {order_id} sent"


async def main() -> None:
    async with app:
        await app.setup()
        url = make_url(await app.database_url()).set(drivername="postgresql+asyncpg")
        engine = create_async_engine(url)
        table = f'"{app.schema}".sa_orders'
        async with engine.begin() as conn:
            await conn.execute(text(f"CREATE TABLE IF NOT EXISTS {table} (id int PRIMARY KEY)"))
            await conn.execute(text(f"DELETE FROM {table}"))
        sessions = async_sessionmaker(engine)

        async with sessions() as session, session.begin():  # commits at the end
            await session.execute(text(f"INSERT INTO {table} VALUES (1)"))
            kept = await app.enqueue(send_invoice, order_id=1, connection=session)

        try:
            async with sessions() as session, session.begin():
                await session.execute(text(f"INSERT INTO {table} VALUES (2)"))
                dropped = await app.enqueue(send_invoice, order_id=2, connection=session)
                raise RuntimeError("card declined")  # rolls back the row and the job
        except RuntimeError:
            pass
        await engine.dispose()

        assert await app.get_job(dropped) is None
        await app.run_worker(run_once=True)
        print("result:", await app.get_result(kept))
        assert await app.get_result(kept) == "invoice 1 sent"
    print("OK sqlalchemy")


if __name__ == "__main__":
    asyncio.run(main())
