"""``app.dead_letter``: jobs whose last attempt failed, kept until someone deletes them."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from soniq.db import parse_uuid
from soniq.enqueue import replayed_job
from soniq.errors import NOT_FOUND, SoniqError

if TYPE_CHECKING:
    from soniq.app import Soniq


@dataclass(frozen=True)
class DeadLetterJob:
    """One dead-lettered job; ``id`` is the original job's id."""

    id: str
    job_name: str
    queue: str
    args: dict[str, Any]
    attempts: int
    last_error: str | None
    reason: str
    resurrection_count: int
    dead_lettered_at: datetime | None
    # one entry per failed attempt, oldest first: attempt, at, error, traceback; filled by
    # get_dead_letter_job (list_dead_letter_jobs leaves it None: tracebacks are large)
    errors: list[dict[str, Any]] | None = field(default=None, compare=False)

    @classmethod
    def from_row(cls, row: Any) -> DeadLetterJob:
        return cls(
            id=str(row["id"]),
            job_name=row["job_name"],
            queue=row["queue"],
            args=row["args"],
            attempts=row["attempts"],
            last_error=row["last_error"],
            reason=row["dead_reason"] or "max_retries_exceeded",
            resurrection_count=row["resurrection_count"],
            dead_lettered_at=row["dead_lettered_at"],
            errors=(row["errors"] or []) if "errors" in row.keys() else None,
        )


@dataclass(frozen=True)
class DeadLetterStats:
    total_count: int
    by_reason: dict[str, int]


class DeadLetter:
    """List, inspect, replay and delete dead-lettered jobs."""

    def __init__(self, app: Soniq) -> None:
        self._app = app

    async def list_dead_letter_jobs(
        self, *, limit: int = 100, offset: int = 0, job_name: str | None = None
    ) -> list[DeadLetterJob]:
        db = await self._app.database()
        rows = await db.dead_letter_list(limit, offset, job_name)
        return [DeadLetterJob.from_row(r) for r in rows]

    async def get_dead_letter_job(self, job_id: str) -> DeadLetterJob | None:
        uid = parse_uuid(job_id)
        if uid is None:
            return None
        db = await self._app.database()
        row = await db.dead_letter_get(uid)
        return None if row is None else DeadLetterJob.from_row(row)

    async def replay(self, job_id: str) -> str:
        """Enqueue a new job with the entry's task and arguments; returns the new id.

        The new job and the entry's ``resurrection_count`` are written in one transaction.
        """
        uid = parse_uuid(job_id)
        db = await self._app.database()
        row = None if uid is None else await db.dead_letter_get(uid)
        if row is None:
            raise SoniqError(
                NOT_FOUND,
                f"no dead-letter entry with id {job_id!r}; list them with "
                "`soniq dead-letter list` or app.dead_letter.list_dead_letter_jobs()",
            )
        async with db.acquire() as conn, conn.transaction():
            count = await db.dead_letter_mark_replayed(conn, uid)  # type: ignore[arg-type]
            if count is None:
                raise SoniqError(NOT_FOUND, f"dead-letter entry {job_id} was removed meanwhile")
            return await self._app.enqueue_job(replayed_job(row), connection=conn)

    async def delete_dead_letter_job(self, job_id: str) -> bool:
        uid = parse_uuid(job_id)
        if uid is None:
            return False
        db = await self._app.database()
        return await db.dead_letter_delete(uid)

    async def get_dead_letter_stats(self) -> DeadLetterStats:
        db = await self._app.database()
        by_reason = await db.dead_letter_stats()
        return DeadLetterStats(total_count=sum(by_reason.values()), by_reason=by_reason)
