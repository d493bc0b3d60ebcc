"""Operator reads behind the dashboard (and usable by the CLI): keyset pages of jobs and dead
letters, per-minute finished/failed counts, the jobs running now and a batch status read.

``Soniq`` exposes each as a method that delegates here; the SQL is in ``sql/dashboard.sql``.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from soniq.db import parse_uuid
from soniq.enqueue import check_tags
from soniq.errors import ENQUEUE_INVALID, SoniqError
from soniq.states import JobStatus

if TYPE_CHECKING:
    from soniq.app import Soniq

MAX_PAGE = 500


def _job_dict(row: Any) -> dict[str, Any]:
    job = dict(row)
    job["id"] = str(job["id"])
    if "status" in job:
        job["status"] = JobStatus(job["status"])
    return job


def _cursor(before: str | None) -> Any:
    if before is None or before == "":
        return None
    uid = parse_uuid(before)
    if uid is None:
        raise SoniqError(
            ENQUEUE_INVALID, f"before={before!r} is not a job id; pass the last id of a page"
        )
    return uid


def _limit(limit: int) -> int:
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_PAGE:
        raise SoniqError(
            ENQUEUE_INVALID, f"limit={limit!r} is invalid; use an integer from 1 to {MAX_PAGE}"
        )
    return limit


def _status(status: str | JobStatus | None) -> str | None:
    if status is None or status == "":
        return None
    try:
        return JobStatus(status).value
    except ValueError:
        raise SoniqError(
            ENQUEUE_INVALID,
            f"unknown status {status!r}; use one of {', '.join(s.value for s in JobStatus)}",
        ) from None


async def page_jobs(
    app: Soniq,
    *,
    before: str | None = None,
    status: str | JobStatus | None = None,
    queue: str | None = None,
    job_name: str | None = None,
    tags: dict[str, str] | None = None,
    limit: int = 50,
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of jobs, newest first, older than the job id ``before``, carrying every pair
    of ``tags``; and the cursor of the next page (None on the last)."""
    db = await app.database()
    tags_json = json.dumps(check_tags(tags), sort_keys=True) if tags else None
    rows = await db.job_page(
        _cursor(before),
        _status(status),
        queue or None,
        job_name or None,
        _limit(limit) + 1,
        tags_json,
    )
    jobs = [_job_dict(r) for r in rows[:limit]]
    return jobs, (jobs[-1]["id"] if len(rows) > limit else None)


async def page_dead_letters(
    app: Soniq, *, before: str | None = None, job_name: str | None = None, limit: int = 50
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of dead-lettered jobs, newest first (keyset on id), and the next cursor."""
    db = await app.database()
    rows = await db.dead_letter_page(_cursor(before), job_name or None, _limit(limit) + 1)
    jobs = [_job_dict(r) for r in rows[:limit]]
    return jobs, (jobs[-1]["id"] if len(rows) > limit else None)


async def counts_per_minute(app: Soniq, minutes: int = 60) -> list[dict[str, Any]]:
    """``minutes`` entries, oldest first: ``minute`` (UTC, aware), ``finished`` (succeeded)
    and ``failed`` (dead-lettered) in that minute; minutes without jobs count 0."""
    if not isinstance(minutes, int) or not 1 <= minutes <= 24 * 60:
        raise SoniqError(ENQUEUE_INVALID, f"minutes={minutes!r}: use an integer from 1 to 1440")
    rows = await (await app.database()).job_minutes(minutes)
    seen = {r["minute"].astimezone(timezone.utc): r for r in rows}
    now = datetime.now(timezone.utc).replace(second=0, microsecond=0)
    out = []
    for i in range(minutes - 1, -1, -1):
        minute = now - timedelta(minutes=i)
        row = seen.get(minute)
        out.append(
            {
                "minute": minute,
                "finished": int(row["finished"]) if row else 0,
                "failed": int(row["failed"]) if row else 0,
            }
        )
    return out


async def running_jobs(app: Soniq, limit: int = 200) -> list[dict[str, Any]]:
    """Jobs in ``processing`` (id, job_name, queue, attempts, started_at, worker_id)."""
    rows = await (await app.database()).job_running(_limit(limit))
    return [_job_dict(r) for r in rows]


async def job_statuses(app: Soniq, job_ids: list[str]) -> dict[str, dict[str, Any]]:
    """Job id -> ``status``, ``attempts``, ``finished_at`` for those of ``job_ids`` that
    exist (malformed ids are skipped)."""
    uids = [u for u in (parse_uuid(i) for i in job_ids) if u is not None]
    if not uids:
        return {}
    rows = await (await app.database()).job_statuses(uids)
    return {str(r["id"]): {**_job_dict(r)} for r in rows}
