"""``soniq tasks``: what the jobs modules register."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from soniq import limits
from soniq.cli.apps import load_apps
from soniq.cli.base import cli, common, current_config, json_option
from soniq.cli.render import age, console, emit_json, table


@cli.command()
@common
@json_option
def tasks(as_json: bool) -> None:
    """Tasks the jobs modules register: queue, retries, limits, schedule."""
    cfg = current_config()
    apps = load_apps(cfg)
    rows: list[dict[str, Any]] = []
    now = datetime.now(timezone.utc)
    for app in apps:
        schedules: dict[str, list[str]] = {}
        next_runs: dict[str, list[str]] = {}
        for sched in app.schedules.values():
            spec = (
                f"cron {sched.cron} {sched.timezone}"
                if sched.cron
                else (f"every {age(sched.every.total_seconds())}" if sched.every else "-")
            )
            schedules.setdefault(sched.job_name, []).append(spec)
            next_runs.setdefault(sched.job_name, []).append(sched.next_after(now).isoformat())
        for name in sorted(app.tasks):
            task = app.tasks[name]
            retries = task.retries if task.retries is not None else app.settings.max_retries
            timeout = task.timeout if task.timeout is not None else app.settings.job_timeout
            rows.append(
                {
                    "name": name,
                    "queue": task.queue,
                    "retries": retries,
                    "priority": task.priority
                    if task.priority is not None
                    else app.settings.priority,
                    "timeout": timeout,
                    "unique": task.unique,
                    "schedule": schedules.get(name, []),
                    **limits.describe(task),
                    "next_run_at": next_runs.get(name, []),
                    "schema": app.schema,
                }
            )
    if as_json:
        emit_json(rows)
        return
    several = len({r["schema"] for r in rows}) > 1
    columns = [
        "Task", "Queue", "Retries", "Priority", "Timeout", "Limits", "Schedule", "Next run (UTC)"
    ]  # fmt: skip
    console().print(
        table(
            f"{len(rows)} task(s)",
            columns + (["Schema"] if several else []),
            [
                [
                    r["name"],
                    r["queue"],
                    r["retries"],
                    r["priority"],
                    age(r["timeout"]) if r["timeout"] else "none",
                    limits.summary(r),
                    "; ".join(r["schedule"]) or "-",
                    "; ".join(t[:19].replace("T", " ") for t in r["next_run_at"]) or "-",
                ]
                + ([r["schema"]] if several else [])
                for r in rows
            ],
        )
    )
