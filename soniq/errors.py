"""Exceptions whose messages name the problem and the fix.

Every error soniq raises on bad input is a :class:`SoniqError` with a stable
``error_code`` that scripts and tests can match on.
"""

from __future__ import annotations

import asyncio

import asyncpg

SETTINGS_INVALID = "SONIQ_SETTINGS_INVALID"
UNKNOWN_TASK_NAME = "SONIQ_UNKNOWN_TASK_NAME"
TASK_ARGS_INVALID = "SONIQ_TASK_ARGS_INVALID"
ENQUEUE_INVALID = "SONIQ_ENQUEUE_INVALID"
TASK_INVALID = "SONIQ_TASK_INVALID"
SCHEDULE_INVALID = "SONIQ_SCHEDULE_INVALID"
DATABASE_UNAVAILABLE = "SONIQ_DATABASE_UNAVAILABLE"
EMBEDDED_UNAVAILABLE = "SONIQ_EMBEDDED_UNAVAILABLE"
EXTRA_MISSING = "SONIQ_EXTRA_MISSING"
JOBS_MODULES_MISSING = "SONIQ_JOBS_MODULES_MISSING"
JOBS_MODULE_IMPORT = "SONIQ_JOBS_MODULE_IMPORT"
NOT_FOUND = "SONIQ_NOT_FOUND"
SCHEMA_MISSING = "SONIQ_SCHEMA_MISSING"
EVENT_LOOP_MISMATCH = "SONIQ_EVENT_LOOP_MISMATCH"
WEBHOOK_INVALID = "SONIQ_WEBHOOK_INVALID"
# job control (API.md Part 2)
JOB_NOT_FOUND = "SONIQ_JOB_NOT_FOUND"
IDEMPOTENCY_CONFLICT = "SONIQ_IDEMPOTENCY_CONFLICT"
JOB_LOST = "SONIQ_JOB_LOST"
PROGRESS_INVALID = "SONIQ_PROGRESS_INVALID"

# What a lost or refused database looks like from asyncpg: the one list every retry loop
# and fallback catches.
DB_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
)


class SoniqError(Exception):
    """An error with a stable ``error_code`` and a message that names the fix."""

    def __init__(self, error_code: str, message: str) -> None:
        super().__init__(message)
        self.error_code = error_code
        self.message = message

    def __str__(self) -> str:
        return f"[{self.error_code}] {self.message}"


def schema_missing(schema: str) -> SoniqError:
    """The error for a database whose ``schema`` was never set up."""
    return SoniqError(
        SCHEMA_MISSING,
        f"soniq's tables are not in schema {schema!r} of this database. "
        "Fix: run `soniq setup` (or `await app.setup()`) once.",
    )
