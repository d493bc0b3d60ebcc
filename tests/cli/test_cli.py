"""The operator CLI against a seeded database: tables for people, --json for scripts,
one-line errors and exit codes (0 ok, 1 failure, 2 usage)."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import datetime, timezone
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from soniq import JobStatus, Soniq
from soniq.migrate import available
from soniq.queries import advisory_key
from tests.cli.cli_helpers import CLI_JOBS, as_json, invoke, run_soniq, seed
from tests.conftest import SONIQ_BIN, wait_for


@pytest.fixture
def env(pg_url: str, schema_name: str) -> dict[str, str]:
    return {
        "SONIQ_DATABASE_URL": pg_url,
        "SONIQ_SCHEMA": schema_name,
        "SONIQ_HEARTBEAT_INTERVAL": "0.5",
        "SONIQ_HEARTBEAT_TIMEOUT": "2",
    }


async def test_help_lists_every_command(env):
    result = await invoke(env, "--help")
    assert result.exit_code == 0
    for name in [
        "setup",
        "worker",
        "scheduler",
        "status",
        "inspect",
        "dead-letter",
        "tasks",
        "migrate-status",
        "jobs",
        "enqueue",
        "embedded",
    ]:
        assert f"  {name} " in result.stdout, name
    for sub in (["jobs", "--help"], ["dead-letter", "--help"], ["embedded", "--help"]):
        result = await invoke(env, *sub)
        assert result.exit_code == 0
    result = await invoke(env, "nosuchcommand")
    assert result.exit_code == 2


async def test_status_table_and_json(app, env):
    s = await seed(app)
    result = await invoke(env, "status")
    assert result.exit_code == 0, result.output
    lines = {ln.split("│")[1].strip(): ln for ln in result.stdout.splitlines() if "│" in ln}
    cells = lambda q: [c.strip() for c in lines[q].split("│")[2:-1]]  # noqa: E731
    # Queued, Running, Done, Dead, Cancelled, Oldest due, Done/min, Dead/min
    assert cells("default")[:5] == ["1", "0", "3", "0", "1"]
    assert cells("critical")[:5] == ["0", "0", "0", "2", "0"]
    assert cells("emails")[:5] == ["2", "0", "0", "0", "0"]
    assert cells("default")[5] == "-"  # its only queued job is an hour away
    assert cells("critical")[6:] == ["0", "2"]
    assert "Scheduler leader: none" in result.stdout

    data = as_json(await invoke(env, "status", "--json"))
    assert data["totals"] == await app.get_queue_stats()
    by_queue = {q["queue"]: q for q in data["queues"]}
    assert by_queue["default"]["done"] == len(s.done)
    assert by_queue["default"]["succeeded_last_minute"] == 3
    assert by_queue["critical"]["dead_lettered_last_minute"] == 2
    assert by_queue["emails"]["oldest_queued_age"] >= 0
    assert by_queue["default"]["oldest_queued_age"] is None
    assert data["workers"] == [] and data["scheduler_leader"] is None


async def test_status_shows_running_worker_and_scheduler_leader(app, env, pg_url, schema_name):
    stop = asyncio.Event()
    worker = app.run_worker(concurrency=3, queues=["emails"], shutdown_event=stop)
    task = asyncio.create_task(worker)
    leader = await asyncpg.connect(pg_url, server_settings={"application_name": "sched-test"})
    try:
        workers = await wait_for(
            lambda: _alive_workers(env), timeout=10, message="worker visible in status"
        )
        assert workers[0]["concurrency"] == 3 and workers[0]["queues"] == ["emails"]
        assert await leader.fetchval(
            "SELECT pg_try_advisory_lock($1)", advisory_key(schema_name, "scheduler")
        )
        data = as_json(await invoke(env, "status", "--json"))
        assert data["scheduler_leader"]["application_name"] == "sched-test"
        result = await invoke(env, "status")
        assert "Workers alive: 1" in result.stdout and workers[0]["id"] in result.stdout
        assert "Scheduler leader: sched-test" in result.stdout
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)
        await leader.close()


async def _alive_workers(env):
    return as_json(await invoke(env, "status", "--json"))["workers"]


async def test_inspect_job_shows_errors_per_attempt(app, env):
    s = await seed(app)
    result = await invoke(env, "inspect", "--job", s.dead[1])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert f"Job {s.dead[1]}" in out and "seed.bad" in out and "dead_letter" in out
    assert '{"n": 1}' in out and "2 of 2" in out and "Errors by attempt" in out
    # last error + two attempts in the table + the last line of each attempt's traceback
    assert out.count("RuntimeError: bad input 1") == 5
    assert "Traceback of attempt 1" in out and "Traceback of attempt 2" in out
    assert 'raise RuntimeError(f"bad input {n}")' in out

    data = as_json(await invoke(env, "inspect", "--job", s.dead[1], "--json"))
    assert data["status"] == "dead_letter" and data["args"] == {"n": 1}
    assert [e["attempt"] for e in data["errors"]] == [1, 2]
    assert all("Traceback (most recent call last)" in e["traceback"] for e in data["errors"])
    assert data["run_seconds"] >= 0

    done = as_json(await invoke(env, "inspect", "--job", s.done[2], "--json"))
    assert done["result"] == 4 and done["status"] == "done"


async def test_inspect_unknown_or_malformed_job_is_one_line(app, env):
    await seed(app)
    for job_id, words in [(str(uuid.uuid4()), "no job with id"), ("nope", "not a job id")]:
        result = await invoke(env, "inspect", "--job", job_id)
        assert result.exit_code == 1
        assert result.stdout == ""
        assert result.stderr.count("\n") == 1 and words in result.stderr
    result = await invoke(env, "inspect", "--job", str(uuid.uuid4()), "--workers")
    assert result.exit_code == 2


async def test_inspect_workers_and_stale(app, env, cli_env):
    await seed(app)  # its run_once worker has stopped
    slow = await _enqueue_by_name(app, "cli.slow", {"seconds": 120})
    proc = await asyncio.create_subprocess_exec(
        SONIQ_BIN,
        "worker",
        "--jobs-modules",
        CLI_JOBS,
        env=cli_env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:

        async def running():
            job = await app.get_job(slow)
            return job["status"] is JobStatus.PROCESSING and job["worker_id"]

        worker_id = await wait_for(running, timeout=20, message="slow job running")
        workers = as_json(await invoke(env, "inspect", "--workers", "--json"))
        states = {w["id"]: w["state"] for w in workers}
        assert states[worker_id] == "alive" and list(states.values()).count("stopped") == 1
        proc.kill()
        await asyncio.wait_for(proc.wait(), 10)

        async def stale():
            return as_json(await invoke(env, "inspect", "--stale", "--json"))

        ghosts = await wait_for(stale, timeout=15, message="killed worker stale")
        assert [(w["id"], w["holding"]) for w in ghosts] == [(worker_id, 1)]
        result = await invoke(env, "inspect", "--workers", "--stale")
        assert "Stale workers" in result.stdout and worker_id in result.stdout
        assert "go back to the queue" in result.stdout
        status = await invoke(env, "status")
        assert "1 stale worker(s)" in status.stdout
    finally:
        if proc.returncode is None:
            proc.kill()
            await asyncio.wait_for(proc.wait(), 10)


async def _enqueue_by_name(app, name, args):
    from soniq import task_ref

    return await app.enqueue(task_ref(name), args=args)


async def test_jobs_list_filters_table_and_json(app, env):
    s = await seed(app)
    rows = as_json(await invoke(env, "jobs", "list", "--json"))
    assert len(rows) == 9
    assert [r["id"] for r in rows] == sorted((r["id"] for r in rows), reverse=True)
    dead = as_json(await invoke(env, "jobs", "list", "--status", "dead_letter", "--json"))
    assert sorted(r["id"] for r in dead) == sorted(s.dead)
    emails = as_json(await invoke(env, "jobs", "list", "--queue", "emails", "--json"))
    assert sorted(r["id"] for r in emails) == sorted(s.queued)
    named = as_json(
        await invoke(env, "jobs", "list", "--name", "seed.bad", "--limit", "1", "--json")
    )
    assert [r["id"] for r in named] == [max(s.dead)]

    result = await invoke(env, "jobs", "list", "--status", "queued")
    assert result.exit_code == 0
    for job_id in [*s.queued, s.later]:
        assert job_id in result.stdout
    assert s.done[0] not in result.stdout

    bad_status = await invoke(env, "jobs", "list", "--status", "failed")
    assert bad_status.exit_code == 2 and "failed" in bad_status.stderr
    no_queue = await invoke(env, "jobs", "list", "--queue", "nosuch")
    assert no_queue.exit_code == 1
    assert "no queue named 'nosuch'" in no_queue.stderr and "emails" in no_queue.stderr


async def test_jobs_cancel_and_retry(app, env):
    s = await seed(app)
    result = await invoke(env, "jobs", "cancel", s.queued[0])
    assert result.exit_code == 0 and "Cancelled" in result.stdout
    assert (await app.get_job(s.queued[0]))["status"] is JobStatus.CANCELLED

    result = await invoke(env, "jobs", "cancel", s.done[0])
    assert result.exit_code == 1 and "is done; only queued jobs" in result.stderr
    result = await invoke(env, "jobs", "cancel", str(uuid.uuid4()))
    assert result.exit_code == 1 and "no job with id" in result.stderr

    result = await invoke(env, "jobs", "retry", s.dead[0])
    assert result.exit_code == 0 and "queued again: attempt 3 of 3" in result.stdout
    job = await app.get_job(s.dead[0])
    assert job["status"] is JobStatus.QUEUED and job["max_attempts"] == 3
    result = await invoke(env, "jobs", "retry", s.queued[1])
    assert result.exit_code == 1 and "only dead-lettered jobs" in result.stderr
    assert (await app.get_job(s.queued[1]))["status"] is JobStatus.QUEUED


async def test_tasks_table_and_json(env):
    cli_env = env
    data = as_json(await invoke(cli_env, "tasks", "--jobs-modules", "tests.cli.cli_jobs", "--json"))
    by_name = {t["name"]: t for t in data}
    assert by_name["cli.email"] == {
        "name": "cli.email",
        "queue": "emails",
        "retries": 5,
        "priority": 10,
        "timeout": 30,
        "unique": False,
        "schedule": [],
        "next_run_at": [],
        "max_concurrency": None,
        "max_concurrency_per_key": None,
        "rate_limits": [],
        "execution_window": None,
        "timezone": None,
        "schema": by_name["cli.email"]["schema"],
    }
    assert by_name["cli.fail"]["retries"] == 1
    hourly = by_name["tests.cli.cli_jobs.hourly"]
    assert hourly["schedule"] == ["every 1h00m"]
    (next_run,) = hourly["next_run_at"]
    next_dt = datetime.fromisoformat(next_run)
    assert next_dt > datetime.now(timezone.utc)
    assert next_dt.minute == 0 and next_dt.second == 0  # every 1 h ticks on the hour (UTC)
    result = await invoke(cli_env, "tasks", "--jobs-modules", "tests.cli.cli_jobs")
    assert result.exit_code == 0
    assert "cli.email" in result.stdout and "every 1h00m" in result.stdout

    result = await invoke(env, "tasks")
    assert result.exit_code == 2 and "SONIQ_JOBS_MODULES" in result.stderr


async def test_migrate_status_before_and_after_setup(env, pg_url, schema_name):
    data = as_json(await invoke(env, "migrate-status", "--json"))
    assert data["pending"] >= 1 and all(m["status"] == "pending" for m in data["migrations"])
    result = await invoke(env, "migrate-status")
    assert result.exit_code == 0 and "run `soniq setup`" in result.stdout

    result = await invoke(env, "setup")
    assert result.exit_code == 0, result.output
    assert f"to schema '{schema_name}'" in result.stdout
    data = as_json(await invoke(env, "migrate-status", "--json"))
    assert data["pending"] == 0 and data["migrations"][0]["version"] == 1
    result = await invoke(env, "migrate-status")
    assert "001" in result.stdout and "applied" in result.stdout and "Up to date" in result.stdout

    again = await invoke(env, "setup")
    assert again.exit_code == 0 and "is up to date" in again.stdout
    conn = await asyncpg.connect(pg_url)
    try:
        await conn.execute(f'DROP SCHEMA "{schema_name}" CASCADE')
    finally:
        await conn.close()


async def test_setup_creates_a_missing_database(pg_url, schema_name):
    name = f"soniq_cli_{uuid.uuid4().hex[:8]}"
    parts = urlsplit(pg_url)
    url = urlunsplit(parts._replace(path=f"/{name}"))
    try:
        result = await invoke({}, "setup", "--database-url", url, "--schema", schema_name)
        assert result.exit_code == 0, result.output
        applied = f"Applied {len(available())} migration(s)"
        assert "Created database" in result.stdout and applied in result.stdout
        again = await invoke({}, "setup", "--database-url", url, "--schema", schema_name)
        assert again.exit_code == 0 and "Created" not in again.stdout
        app = Soniq(database_url=url, schema=schema_name)
        try:
            assert await app.get_queue_stats() == {
                "total": 0,
                "queued": 0,
                "processing": 0,
                "done": 0,
                "dead_letter": 0,
                "cancelled": 0,
                "waiting": 0,
            }
        finally:
            await app.close()
    finally:
        conn = await asyncpg.connect(pg_url)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        finally:
            await conn.close()


async def test_missing_tables_and_bad_schema_are_one_line(env):
    result = await invoke(env, "status")
    assert result.exit_code == 1
    assert "soniq setup" in result.stderr and result.stderr.count("\n") == 1
    bad = await invoke(env, "status", "--schema", "Not-A-Schema")
    assert bad.exit_code == 2 and "schema" in bad.stderr and "Traceback" not in bad.output


# -- real processes ------------------------------------------------------------------------


def test_unreachable_database_one_line_password_hidden(cli_env):
    url = "postgresql://someone:s3cret-pw@127.0.0.1:1/nowhere"
    for args in (["status"], ["dead-letter", "list"], ["jobs", "list", "--json"]):
        proc = run_soniq(cli_env, "--database-url", url, *args)
        assert proc.returncode == 1, proc
        assert proc.stdout == ""
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1, proc.stderr
        assert "127.0.0.1:1" in lines[0] and "***" in lines[0]
        assert "s3cret-pw" not in proc.stderr and "Traceback" not in proc.stderr
        assert "SONIQ_DATABASE_URL" in lines[0]  # names the fix
    debug = run_soniq(cli_env, "status", "--database-url", url, "--debug")
    assert debug.returncode != 0 and "Traceback" in debug.stderr


def test_worker_needs_jobs_modules(cli_env):
    proc = run_soniq(cli_env, "worker", "--run-once")
    assert proc.returncode == 2
    assert "SONIQ_JOBS_MODULES" in proc.stderr and "Traceback" not in proc.stderr

    proc = run_soniq({**cli_env, "SONIQ_JOBS_MODULES": "cli.no_such_module"}, "worker")
    assert proc.returncode == 1
    assert "cli.no_such_module" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1

    proc = run_soniq(cli_env, "worker", "--jobs-modules", "json")
    assert proc.returncode == 2 and "no Soniq instance" in proc.stderr

    proc = run_soniq(cli_env, "worker", "--jobs-modules", CLI_JOBS, "--queues", "bad queue!")
    assert proc.returncode == 2 and "--queues" in proc.stderr


def test_worker_unreachable_database_one_line(cli_env):
    env = {**cli_env, "SONIQ_JOBS_MODULES": CLI_JOBS}
    proc = run_soniq(
        env, "worker", "--run-once", "--database-url", "postgresql://app:hunter2@127.0.0.1:1/jobs"
    )
    assert proc.returncode == 1
    assert "127.0.0.1:1" in proc.stderr and "hunter2" not in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


async def test_worker_run_once_with_queue_and_schema_overrides(make_app, cli_env, schema_name):
    app = await make_app(enqueue_validation="none")
    adds = [await app.enqueue("cli.add", args={"x": i, "y": 1}) for i in range(3)]
    email = await app.enqueue("cli.email", args={"to": "a@example.com"}, queue="emails")
    env = {**cli_env, "SONIQ_JOBS_MODULES": CLI_JOBS, "SONIQ_SCHEMA": "public_not_this"}
    proc = await asyncio.to_thread(
        run_soniq, env, "worker", "--run-once", "--queues", "default", "--schema", schema_name
    )
    assert proc.returncode == 0, proc.stderr
    assert [await app.get_result(j) for j in adds] == [1, 2, 3]
    assert (await app.get_job(email))["status"] is JobStatus.QUEUED

    proc = await asyncio.to_thread(
        run_soniq, env, "worker", "--run-once", "--concurrency", "2", "--schema", schema_name
    )
    assert proc.returncode == 0, proc.stderr
    assert await app.get_result(email) == "sent to a@example.com"


def test_bad_usage_exits_2(cli_env):
    for args in (
        ["jobs", "list", "--limit", "0"],
        ["worker", "--concurrency", "0"],
        ["dead-letter", "replay"],
        ["dead-letter", "replay", "x", "--all"],
    ):
        proc = run_soniq(cli_env, *args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert "Traceback" not in proc.stderr


async def test_json_output_is_machine_readable(app, env):
    await seed(app)
    for args in (
        ["status"],
        ["jobs", "list"],
        ["dead-letter", "list"],
        ["inspect"],
        ["migrate-status"],
    ):
        result = await invoke(env, *args, "--json")
        assert result.exit_code == 0, (args, result.output)
        json.loads(result.stdout)
