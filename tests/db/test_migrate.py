"""Migrations: numbered files applied once under an advisory lock, idempotent, safe when
setups race; every table inside the configured schema; two schemas never share jobs."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import pytest

from soniq import JobStatus, Soniq, task_ref
from soniq.migrate import available
from tests.conftest import FAST_SETTINGS

MakeApp = Callable[..., Awaitable[Soniq]]
TABLES = {"soniq_jobs", "soniq_workers", "soniq_schedules", "soniq_periodic_ticks"}


@pytest.fixture
async def other_schema(pg_url: str) -> AsyncIterator[str]:
    """A second fresh schema name, dropped at teardown."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    yield name
    conn = await asyncpg.connect(pg_url)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
    finally:
        await conn.close()


async def tables_in(pg_url: str, schema: str) -> set[str]:
    conn = await asyncpg.connect(pg_url)
    try:
        found = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = $1", schema)
    finally:
        await conn.close()
    return {r["tablename"] for r in found}


def test_migration_files_are_numbered_in_order() -> None:
    migrations = available()
    assert migrations, "no migrations shipped"
    versions = [m.version for m in migrations]
    # numbers are handed out per feature branch, so one may land before a lower one
    assert versions == sorted(set(versions)) and versions[0] == 1
    assert migrations[0].name == "initial"
    for m in migrations:
        assert "{schema}" in m.sql  # every object is created inside the configured schema


async def test_setup_applies_once_and_is_idempotent(
    pg_url: str, schema_name: str, make_app: MakeApp
) -> None:
    app = Soniq(database_url=pg_url, schema=schema_name, **FAST_SETTINGS)
    try:
        pending = await app.migration_status()
        assert [s.applied_at for s in pending] == [None] * len(available())
        assert await app.setup() == len(available())
        assert await app.setup() == 0
        assert await app.setup() == 0
        status = await app.migration_status()
        assert [(s.version, s.name) for s in status] == [(m.version, m.name) for m in available()]
        assert all(s.applied_at is not None for s in status)
        assert TABLES | {"soniq_migrations"} <= await tables_in(pg_url, schema_name)
    finally:
        await app.close()


async def test_lost_version_row_is_reapplied_safely(app: Soniq) -> None:
    job_id = await app.enqueue(task_ref("t.keep"))
    async with app.backend.acquire() as conn:
        await conn.execute(f'DELETE FROM "{app.schema}".soniq_migrations WHERE version = 1')
    assert await app.setup() == 1  # the DDL is IF NOT EXISTS: nothing breaks, nothing lost
    assert await app.get_job(job_id) is not None


async def test_racing_setups_apply_once(pg_url: str, schema_name: str, make_app: MakeApp) -> None:
    apps = [Soniq(database_url=pg_url, schema=schema_name, **FAST_SETTINGS) for _ in range(5)]
    try:
        # open every pool first, so the setups really overlap at the database
        await asyncio.gather(*(a.ensure_initialized() for a in apps))
        applied = await asyncio.gather(*(a.setup() for a in apps))
        assert sorted(applied) == [0, 0, 0, 0, len(available())]
        async with apps[0].backend.acquire() as conn:
            versions = await conn.fetch(
                f'SELECT version FROM "{schema_name}".soniq_migrations ORDER BY version'
            )
        assert [r["version"] for r in versions] == [m.version for m in available()]
        job_id = await apps[3].enqueue(task_ref("t.after_race"))
        assert await apps[1].get_job(job_id) is not None
    finally:
        await asyncio.gather(*(a.close() for a in apps))


async def test_setup_creates_nothing_outside_its_schema(
    pg_url: str, schema_name: str, make_app: MakeApp
) -> None:
    query = (
        "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname <> $1 AND n.nspname NOT IN ('pg_catalog', 'information_schema', "
        "'pg_toast') AND n.nspname NOT LIKE 'pg_temp%' AND n.nspname NOT LIKE 't\\_%'"
    )
    conn = await asyncpg.connect(pg_url)
    try:
        before = set(await conn.fetch(query, schema_name))
        app = await make_app()
        after = set(await conn.fetch(query, schema_name))
    finally:
        await conn.close()
    assert before == after
    assert TABLES <= await tables_in(pg_url, app.schema)


async def test_two_schemas_are_isolated(pg_url: str, make_app: MakeApp, other_schema: str) -> None:
    first = await make_app()
    second = await make_app(schema=other_schema)
    ran: list[str] = []

    @first.job(name="t.iso")
    async def on_first(who: str) -> None:
        ran.append(f"first:{who}")

    @second.job(name="t.iso")
    async def on_second(who: str) -> None:
        ran.append(f"second:{who}")

    a_id = await on_first.enqueue(who="a")
    b_id = await on_second.enqueue(who="b", dedup_key="same-key")
    a_dup = await on_first.enqueue(who="a2", dedup_key="same-key")  # keys do not cross schemas
    assert a_dup != b_id

    assert await second.get_job(a_id) is None
    assert await first.get_job(b_id) is None
    assert {j["id"] for j in await first.list_jobs()} == {a_id, a_dup}
    assert {j["id"] for j in await second.list_jobs()} == {b_id}
    assert (await first.get_queue_stats())["total"] == 2
    assert (await second.get_queue_stats())["total"] == 1
    assert await second.cancel_job(a_id) is False
    assert await second.delete_job(a_id) is False

    await second.run_worker(run_once=True)
    assert ran == ["second:b"]
    job = await first.get_job(a_id)
    assert job is not None and job["status"] is JobStatus.QUEUED
    await first.run_worker(run_once=True)
    assert sorted(ran) == ["first:a", "first:a2", "second:b"]
