"""``soniq inspect``: workers and what they hold, or everything about one job."""

from __future__ import annotations

import functools
import json
from typing import Any

import click

from soniq.app import Soniq
from soniq.cli.apps import require_job, with_app
from soniq.cli.base import cli, common, json_option
from soniq.cli.render import (
    age,
    ago,
    console,
    details,
    emit_json,
    print_tracebacks,
    stamp,
    stamp_text,
    table,
    uptime,
    worker_state,
)
from soniq.states import JobStatus


@cli.command()
@common
@json_option
@click.option(
    "--workers", "show_workers", is_flag=True, help="Workers and what they hold (default)."
)
@click.option("--stale", is_flag=True, help="Only workers silent past heartbeat_timeout.")
@click.option("--job", "job_id", metavar="ID", help="Everything about one job.")
def inspect(as_json: bool, show_workers: bool, stale: bool, job_id: str | None) -> None:
    """Workers (--workers, --stale) or one job (--job ID)."""
    if job_id is not None and (show_workers or stale):
        raise click.UsageError("give --job ID, or --workers [--stale], not both")
    if job_id is not None:
        with_app(functools.partial(_inspect_job, job_id=job_id, as_json=as_json))
    else:
        with_app(functools.partial(_inspect_workers, stale=stale, as_json=as_json))


async def _inspect_workers(app: Soniq, *, stale: bool, as_json: bool) -> None:
    workers = await app.list_workers()
    held = await app.worker_jobs_held()
    for w in workers:
        w["state"] = worker_state(w)
        w["holding"] = held.get(w["id"], 0)
    if stale:
        workers = [w for w in workers if w["state"] == "stale"]
    if as_json:
        emit_json(workers)
        return
    timeout = app.settings.heartbeat_timeout
    title = (
        f"Stale workers (silent > {age(timeout)}): {len(workers)}"
        if stale
        else f"Workers: {len(workers)}"
    )
    out = console()
    out.print(
        table(
            title,
            [
                "Worker",
                "State",
                "Queues",
                "Concurrency",
                "In flight",
                "Holding",
                "Heartbeat",
                "Up",
            ],
            [
                [
                    w["id"],
                    w["state"],
                    ",".join(w["queues"] or []) or "all",
                    w["concurrency"],
                    w["in_flight"],
                    w["holding"],
                    ago(w["heartbeat_at"]),
                    uptime(w),
                ]
                for w in workers
            ],
        )
    )
    if any(w["state"] == "stale" and w["holding"] for w in workers):
        out.print(
            "Jobs held by stale workers go back to the queue at the next rescue pass "
            "(every cleanup_interval, by any running worker or scheduler)."
        )


async def _inspect_job(app: Soniq, *, job_id: str, as_json: bool) -> None:
    job = await require_job(app, job_id)
    result = await app.get_result(job_id) if job["status"] is JobStatus.DONE else None
    waited = ran = None
    if job["started_at"] is not None:
        waited = (job["started_at"] - job["scheduled_at"]).total_seconds()
        if job["finished_at"] is not None:
            ran = (job["finished_at"] - job["started_at"]).total_seconds()
    if as_json:
        emit_json({**job, "result": result, "wait_seconds": waited, "run_seconds": ran})
        return
    out = console()
    fields: list[tuple[str, Any]] = [
        ("task", job["job_name"]),
        ("queue", job["queue"]),
        ("status", job["status"].value),
        ("priority", job["priority"]),
        ("attempts", f"{job['attempts']} of {job['max_attempts']}"),
        ("args", json.dumps(job["args"], ensure_ascii=False)),
        ("created", stamp(job["created_at"])),
        ("scheduled", stamp(job["scheduled_at"])),
        ("started", stamp(job["started_at"])),
        ("finished", stamp(job["finished_at"])),
        ("waited", age(waited)),
        ("ran", age(ran)),
        ("worker", job["worker_id"]),
    ]
    if job.get("dedup_key"):
        fields.append(("dedup key", job["dedup_key"]))
    if job.get("tags"):
        tags = ", ".join(f"{k}={v}" for k, v in sorted(job["tags"].items()))
        fields.append(("tags", tags))
    if job.get("progress") is not None:
        note = f" ({job['progress_message']})" if job.get("progress_message") else ""
        fields.append(("progress", f"{job['progress']:.0%}{note}"))
    if job.get("expires_at") is not None:
        fields.append(("expires", stamp(job["expires_at"])))
    if job.get("cancel_reason"):
        fields.append(("cancel reason", job["cancel_reason"]))
    if job["status"] is JobStatus.DEAD_LETTER:
        fields += [
            ("dead reason", job.get("dead_reason") or "max_retries_exceeded"),
            ("dead since", stamp(job.get("dead_lettered_at"))),
        ]
    if job.get("resurrection_count"):
        fields.append(("replayed", f"{job['resurrection_count']} time(s)"))
    if job["status"] is JobStatus.DONE:
        fields.append(("result", json.dumps(result, ensure_ascii=False)))
    if job["last_error"]:
        fields.append(("last error", job["last_error"]))
    out.print(details(f"Job {job['id']}", fields))
    errors = job.get("errors") or []
    if errors:
        out.print(
            table(
                "Errors by attempt",
                ["Attempt", "At", "Worker", "Error"],
                [
                    [e.get("attempt"), stamp_text(e.get("at")), e.get("worker_id"), e.get("error")]
                    for e in errors
                ],
            )
        )
        print_tracebacks(out, errors)
