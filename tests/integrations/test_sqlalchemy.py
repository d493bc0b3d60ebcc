"""connection= with SQLAlchemy's asyncio AsyncConnection / AsyncSession on asyncpg."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from soniq import JobStatus, Soniq, SoniqError

sa = pytest.importorskip("sqlalchemy")
sa_asyncio = pytest.importorskip("sqlalchemy.ext.asyncio")


def sa_url(pg_url: str) -> Any:
    url = sa.engine.make_url(pg_url)
    return url.set(drivername="postgresql+asyncpg")


@pytest.fixture
async def engine(pg_url: str) -> AsyncIterator[Any]:
    eng = sa_asyncio.create_async_engine(sa_url(pg_url))
    yield eng
    await eng.dispose()


async def test_async_connection_commit_and_rollback(app: Soniq, engine: Any) -> None:
    @app.job(name="charge")
    async def charge(amount: int) -> int:
        return amount

    async with engine.begin() as conn:  # first statement of the transaction is ours
        kept = await app.enqueue(charge, amount=1, connection=conn)
    with pytest.raises(RuntimeError):
        async with engine.begin() as conn:
            await conn.execute(sa.text("SELECT 1"))
            dropped = await app.enqueue(charge, amount=2, connection=conn)
            ids = await app.enqueue_many(charge, [{"amount": 3}], connection=conn)
            raise RuntimeError("roll back")
    assert await app.get_job(dropped) is None
    assert await app.get_job(ids[0]) is None
    job = await app.get_job(kept)
    assert job is not None and job["status"] is JobStatus.QUEUED
    await app.run_worker(run_once=True)
    assert await app.get_result(kept) == 1


async def test_async_session_joins_its_transaction(app: Soniq, engine: Any) -> None:
    @app.job(name="mail")
    async def mail(to: str) -> None:
        pass

    maker = sa_asyncio.async_sessionmaker(engine)
    async with maker() as session:
        async with session.begin():
            kept = await app.enqueue(mail, to="a", connection=session)
        async with session.begin():
            dropped = await app.enqueue(mail, to="b", connection=session)
            # not visible outside the session's transaction yet
            assert await app.get_job(dropped) is None
            await session.rollback()
    assert await app.get_job(kept) is not None
    assert await app.get_job(dropped) is None


async def test_unsupported_connections_name_the_supported_ones(app: Soniq, pg_url: str) -> None:
    @app.job(name="x")
    async def x() -> None:
        pass

    for bad in (object(), "postgresql://..."):
        with pytest.raises(SoniqError) as e:
            await app.enqueue(x, connection=bad)
        assert e.value.error_code == "SONIQ_ENQUEUE_INVALID"
        assert "asyncpg" in e.value.message and "AsyncSession" in e.value.message
    sync_engine = sa.create_engine(sa_url(pg_url).set(drivername="postgresql+psycopg"))
    with sync_engine.connect() as conn, pytest.raises(SoniqError) as e:
        await app.enqueue(x, connection=conn)
    assert "AsyncConnection" in e.value.message
    sync_engine.dispose()
    assert await app.list_jobs() == []
