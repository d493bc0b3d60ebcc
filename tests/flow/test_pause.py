"""Pausing and resuming queues: durable rows, seen by real worker processes within 1 s."""

from __future__ import annotations

from typing import Any

from soniq import Soniq
from tests.conftest import wait_for
from tests.flow.conftest import start_worker
from tests.process.test_worker_process import WorkerProcess

# A long poll and heartbeat: the pause must reach the workers by NOTIFY, not by polling.
SLOW_POLL = {
    "SONIQ_POLL_INTERVAL": "30",
    "SONIQ_HEARTBEAT_INTERVAL": "10",
    "SONIQ_HEARTBEAT_TIMEOUT": "30",
}


async def _runs(monitor: Any, app: Soniq, queue: str, after: Any = None) -> int:
    sql = f'SELECT count(*) FROM "{app.schema}".flow_runs WHERE queue = $1'
    if after is None:
        return int(await monitor.fetchval(sql, queue))
    return int(await monitor.fetchval(sql + " AND started_at > $2", queue, after))


async def test_pause_stops_the_queue_within_a_second_and_resume_restarts_it(
    flow_app: Soniq,
    flow_workers: list[WorkerProcess],
    cli_env: dict[str, str],
    monitor: Any,
) -> None:
    app = flow_app
    for queue in ("a", "b"):
        await app.enqueue_many("tick", [{"delay": 0.02} for _ in range(3000)], queue=queue)
    for _ in range(2):
        start_worker(flow_workers, cli_env, "--concurrency", "4", **SLOW_POLL)
    await wait_for(lambda: _runs(monitor, app, "a"), timeout=30, message="queue a running")

    assert await app.pause_queue("a") is True
    paused_at = await monitor.fetchval("SELECT clock_timestamp()")
    assert await app.pause_queue("a") is False  # idempotent
    # other queues keep running: wait for b jobs started 1.5 s after the pause
    later = await monitor.fetchval("SELECT $1::timestamptz + interval '1.5 s'", paused_at)
    await wait_for(lambda: _runs(monitor, app, "b", later), timeout=30, message="b goes on")
    late = await _runs(monitor, app, "a", await monitor.fetchval(
        "SELECT $1::timestamptz + interval '1 s'", paused_at))  # fmt: skip
    assert late == 0, f"{late} job(s) of the paused queue started more than 1 s after pause"

    queues = {q["queue"]: q for q in await app.list_queues()}
    assert queues["a"]["paused"] is True and queues["a"]["paused_at"] is not None
    assert queues["b"]["paused"] is False
    assert queues["a"]["queued"] > 0  # held, not lost

    assert await app.resume_queue("a") is True
    resumed_at = await monitor.fetchval("SELECT clock_timestamp()")
    await wait_for(
        lambda: _runs(monitor, app, "a", resumed_at), timeout=5, message="a resumes by NOTIFY"
    )
    assert await app.resume_queue("a") is False


async def test_pause_is_durable_and_enqueue_still_works(app: Soniq) -> None:
    @app.job(name="tick")
    async def tick() -> None:
        pass

    await app.pause_queue("idle")
    rows = {q["queue"]: q for q in await app.list_queues()}
    assert rows["idle"]["paused"] is True and rows["idle"]["queued"] == 0  # no jobs yet
    await app.enqueue("tick", queue="idle")
    rows = {q["queue"]: q for q in await app.list_queues()}
    assert rows["idle"]["queued"] == 1 and rows["idle"]["paused"] is True
    # a worker started after the pause (run to idle) leaves the paused queue alone
    await app.enqueue("tick", queue="other")
    await app.run_worker(run_once=True, concurrency=2)
    rows = {q["queue"]: q for q in await app.list_queues()}
    assert rows["idle"]["queued"] == 1 and rows["other"]["done"] == 1
    # a worker restricted to paused queues only writes outcomes, claims nothing
    await app.run_worker(run_once=True, queues=["idle"])
    assert (await app.list_queues())[0]["queued"] == 1
    await app.resume_queue("idle")
    await app.run_worker(run_once=True, queues=["idle"])
    rows = {q["queue"]: q for q in await app.list_queues()}
    assert rows["idle"]["done"] == 1 and rows["idle"]["paused"] is False


async def test_pause_refuses_a_bad_name(app: Soniq) -> None:
    import pytest

    from soniq import SoniqError

    with pytest.raises(SoniqError) as err:
        await app.pause_queue("")
    assert err.value.error_code == "SONIQ_SETTINGS_INVALID"
    assert await app.list_queues() == []


async def test_cli_queues_pause_list_resume(cli_env: dict[str, str], app: Soniq) -> None:
    from tests.cli.cli_helpers import as_json, invoke

    out = as_json(await invoke(cli_env, "queues", "pause", "mail", "--json"))
    assert out == {"queue": "mail", "paused": True, "changed": True}
    rows = as_json(await invoke(cli_env, "queues", "list", "--json"))
    assert [(r["queue"], r["paused"]) for r in rows] == [("mail", True)]
    assert "paused" in (await invoke(cli_env, "queues", "list")).output
    assert "mail (paused)" in (await invoke(cli_env, "status")).output
    status = as_json(await invoke(cli_env, "status", "--json"))
    assert status["queues"][0]["paused"] is True
    assert "resumed" in (await invoke(cli_env, "queues", "resume", "mail")).output
    assert as_json(await invoke(cli_env, "queues", "list", "--json")) == []


async def test_cli_tasks_shows_limits(cli_env: dict[str, str]) -> None:
    from tests.cli.cli_helpers import as_json, invoke

    args = ("tasks", "--jobs-modules", "tests.flow.flow_jobs")
    rows = {t["name"]: t for t in as_json(await invoke(cli_env, *args, "--json"))}
    assert rows["capped"]["max_concurrency"] == 3
    assert rows["capped"]["max_concurrency_per_key"] is None
    assert rows["lane"]["max_concurrency_per_key"] == 1
    assert rows["tick"]["max_concurrency"] is None
    table = (await invoke(cli_env, *args)).output
    assert "max 3" in table and "max 1 per key" in table
