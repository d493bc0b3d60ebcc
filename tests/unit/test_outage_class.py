"""Which failures read as a database outage in the logs (soniq.outage.is_outage)."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from soniq.errors import DATABASE_UNAVAILABLE, ENQUEUE_INVALID, SoniqError
from soniq.outage import is_outage


@pytest.mark.parametrize(
    "exc",
    [
        ConnectionResetError(),
        asyncio.TimeoutError(),
        asyncpg.ConnectionDoesNotExistError("connection was closed"),
        asyncpg.AdminShutdownError("terminating connection due to administrator command"),
        asyncpg.CannotConnectNowError("the database system is starting up"),
        asyncpg.TooManyConnectionsError("sorry, too many clients already"),
        SoniqError(DATABASE_UNAVAILABLE, "cannot reach PostgreSQL"),
    ],
)
def test_a_lost_or_refused_database_is_an_outage(exc: BaseException) -> None:
    assert is_outage(exc)


@pytest.mark.parametrize(
    "exc",
    [
        asyncpg.ObjectNotInPrerequisiteStateError('record "lane" is not assigned yet'),
        asyncpg.UndefinedTableError('relation "x" does not exist'),
        asyncpg.DeadlockDetectedError("deadlock detected"),
        asyncpg.UniqueViolationError("duplicate key"),
        SoniqError(ENQUEUE_INVALID, "bad input"),
        ValueError("a bug"),
    ],
)
def test_a_statement_the_server_refused_is_not_an_outage(exc: BaseException) -> None:
    assert not is_outage(exc)
