"""``soniq status``: queues, live workers and the scheduler leader at a glance."""

from __future__ import annotations

from soniq.app import Soniq
from soniq.cli.apps import with_app
from soniq.cli.base import cli, common, json_option
from soniq.cli.render import age, ago, console, emit_json, table, uptime, worker_state
from soniq.states import JobStatus


@cli.command()
@common
@json_option
def status(as_json: bool) -> None:
    """Queues, workers alive and the scheduler leader.

    Per queue: jobs by status, age of the oldest due job, jobs finished in the last minute.
    """

    async def go(app: Soniq) -> None:
        queues = await app.list_queues()
        throughput = await app.queue_throughput(60.0)
        workers = await app.list_workers()
        leader = await app.scheduler_leader()
        for q in queues:
            done = throughput.get(q["queue"], {})
            q["succeeded_last_minute"] = done.get("succeeded", 0)
            q["dead_lettered_last_minute"] = done.get("dead_lettered", 0)
        keys = [s.value for s in JobStatus]
        totals = {k: sum(int(q[k]) for q in queues) for k in keys}
        alive = [w for w in workers if worker_state(w) == "alive"]
        stale = [w for w in workers if worker_state(w) == "stale"]
        if as_json:
            emit_json(
                {
                    "schema": app.schema,
                    "totals": {"total": sum(totals.values()), **totals},
                    "queues": queues,
                    "workers": alive,
                    "stale_workers": len(stale),
                    "scheduler_leader": leader,
                }
            )
            return
        out = console()
        rows = [
            [
                q["queue"] + (" (paused)" if q.get("paused") else ""),
                q["queued"],
                q["processing"],
                q["done"],
                q["dead_letter"],
                q["cancelled"],
                age(q["oldest_queued_age"]),
                q["succeeded_last_minute"],
                q["dead_lettered_last_minute"],
            ]
            for q in queues
        ]
        rows.append(
            [
                "(all)",
                totals["queued"],
                totals["processing"],
                totals["done"],
                totals["dead_letter"],
                totals["cancelled"],
                age(max((q["oldest_queued_age"] or 0 for q in queues), default=0) or None),
                sum(q["succeeded_last_minute"] for q in queues),
                sum(q["dead_lettered_last_minute"] for q in queues),
            ]
        )
        out.print(
            table(
                f"Queues (schema {app.schema!r})",
                [
                    "Queue",
                    "Queued",
                    "Running",
                    "Done",
                    "Dead",
                    "Cancelled",
                    "Oldest due",
                    "Done/min",
                    "Dead/min",
                ],
                rows,
            )
        )
        out.print(
            table(
                f"Workers alive: {len(alive)}",
                ["Worker", "Queues", "Concurrency", "In flight", "Heartbeat", "Up"],
                [
                    [
                        w["id"],
                        ",".join(w["queues"] or []) or "all",
                        w["concurrency"],
                        w["in_flight"],
                        ago(w["heartbeat_at"]),
                        uptime(w),
                    ]
                    for w in alive
                ],
            )
        )
        if stale:
            out.print(f"{len(stale)} stale worker(s): see `soniq inspect --workers --stale`.")
        if leader is None:
            out.print("Scheduler leader: none (no `soniq scheduler` or --with-scheduler running)")
        else:
            who = leader.get("application_name") or "unnamed session"
            out.print(
                f"Scheduler leader: {who} (backend pid {leader['pid']}, "
                f"connected {ago(leader.get('backend_start'))})"
            )

    with_app(go)
