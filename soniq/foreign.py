"""Connections soniq did not open, for ``connection=``.

- asyncpg connections (and pool connections) are used as they are;
- SQLAlchemy asyncio ``AsyncConnection``/``AsyncSession`` on the asyncpg driver give their
  asyncpg connection (so the job joins their transaction);
- psycopg 3 connections and Django's connection are DB-API: the job is built by the same
  rules (``soniq.enqueue.new_job``) and inserted by the same named query
  (``soniq.db.job_insert_dbapi``), synchronously, on the caller's cursor.

Nothing here imports SQLAlchemy, psycopg or Django: objects are recognised by their type's
module, so ``import soniq`` stays free of them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from soniq import otel
from soniq.db import begin_sqlalchemy, job_insert_dbapi, job_insert_many_dbapi
from soniq.enqueue import NewJob, new_job, new_jobs
from soniq.errors import ENQUEUE_INVALID, SoniqError

if TYPE_CHECKING:
    from soniq.app import Soniq

SUPPORTED = (
    "an asyncpg connection (or one from an asyncpg pool) inside a transaction, or a "
    "SQLAlchemy asyncio AsyncConnection/AsyncSession on the asyncpg driver; for "
    "app.sync.enqueue also a psycopg 3 connection (Django: soniq.contrib.django.enqueue)"
)
# enqueue's own keyword options; every other keyword is a handler argument
OPTIONS = ("queue", "priority", "scheduled_at", "dedup_key")


def _module(obj: Any) -> str:
    return type(obj).__module__ or ""


def is_psycopg(conn: Any) -> bool:
    """True for a psycopg 3 connection (sync), recognised without importing psycopg."""
    return _module(conn).startswith("psycopg") and hasattr(conn, "cursor")


def unsupported(conn: Any) -> SoniqError:
    return SoniqError(
        ENQUEUE_INVALID,
        f"connection= got {type(conn).__module__}.{type(conn).__qualname__}; "
        f"soniq accepts {SUPPORTED}",
    )


async def as_asyncpg(conn: Any) -> Any:
    """The asyncpg connection to run an enqueue on for ``connection=conn``."""
    if isinstance(conn, (asyncpg.Connection, PoolConnectionProxy)):
        return conn
    if _module(conn).startswith("sqlalchemy."):
        return await _sqlalchemy(conn)
    if is_psycopg(conn):
        raise SoniqError(
            ENQUEUE_INVALID,
            "a psycopg connection is synchronous: enqueue on it with app.sync.enqueue(..., "
            "connection=conn) or app.sync.enqueue_many; await app.enqueue takes "
            + SUPPORTED.split("; ")[0],
        )
    raise unsupported(conn)


async def _sqlalchemy(conn: Any) -> Any:
    name = type(conn).__name__
    if name == "AsyncSession":
        conn = await conn.connection()  # begins the session's transaction if needed
        name = type(conn).__name__
    if name != "AsyncConnection":
        raise unsupported(conn)
    raw = await conn.get_raw_connection()
    driver = raw.driver_connection
    if not isinstance(driver, asyncpg.Connection):
        raise SoniqError(
            ENQUEUE_INVALID,
            f"connection= is a SQLAlchemy connection on the {conn.dialect.driver!r} driver; "
            "soniq joins transactions on asyncpg only: use a postgresql+asyncpg:// URL",
        )
    if conn.in_transaction() and not driver.is_in_transaction():
        # SQLAlchemy begins the driver's transaction lazily, at the first statement
        await begin_sqlalchemy(conn)
    return driver


def build_job(app: Soniq, target: Any, args: dict[str, Any] | None, kw: dict[str, Any]) -> NewJob:
    """The job ``app.enqueue(target, args=args, **kw)`` would insert (the same rules)."""
    kwargs = dict(kw)
    opts = [kwargs.pop(name, None) for name in OPTIONS]
    return new_job(app.registry, app.settings, target, args, kwargs, *opts)


def enqueue_dbapi(
    app: Soniq, conn: Any, target: Any, args: dict[str, Any] | None, kw: dict[str, Any]
) -> str:
    """Enqueue on a DB-API connection (psycopg 3 or Django's), in its transaction."""
    job = build_job(app, target, args, kw)
    with conn.cursor() as cursor:
        if otel.active():
            with otel.producer(job.queue, job.job_name, job_id=job.id) as trace:
                job_id = job_insert_dbapi(cursor, app.schema, job, trace)
        else:
            job_id = job_insert_dbapi(cursor, app.schema, job)
    if job_id == job.id:
        for observer in app.observers:
            observer.job_enqueued(job.queue, job.job_name, 1)
    return job_id


def enqueue_many_dbapi(
    app: Soniq, conn: Any, target: Any, args_list: Any, kw: dict[str, Any]
) -> list[str]:
    """``enqueue_many`` on a DB-API connection (psycopg 3), in its transaction."""
    unknown = kw.keys() - {"queue", "priority", "scheduled_at"}
    if unknown:
        raise TypeError(f"enqueue_many() got unexpected keyword argument(s) {sorted(unknown)}")
    jobs = new_jobs(
        app.registry, app.settings, target, args_list, *(kw.get(k) for k in OPTIONS[:3])
    )
    if jobs is None:
        return []
    with conn.cursor() as cursor:
        if otel.active():
            with otel.producer(jobs.queue, jobs.job_name, count=len(jobs.ids)) as trace:
                job_insert_many_dbapi(cursor, app.schema, jobs, trace)
        else:
            job_insert_many_dbapi(cursor, app.schema, jobs)
    for observer in app.observers:
        observer.job_enqueued(jobs.queue, jobs.job_name, len(jobs.ids))
    return jobs.ids
