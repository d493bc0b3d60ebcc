"""The worker side: drains by one `soniq worker` process, and enqueue-to-start latency.

Every figure is read from the database: the worker's own registration time is its start,
the jobs' ``finished_at`` its end, so neither interpreter start-up nor our polling interval
is counted. The worker's memory is sampled with psutil while it runs.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import psutil

from benchmarks.common import Result, drop_schema, fresh_schema, pct, timed_rate
from benchmarks.jobs import register
from soniq import Soniq

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
CONCURRENCY = 10


def soniq_command() -> list[str]:
    """The `soniq` console script of this interpreter (or an equivalent)."""
    script = Path(sys.executable).with_name("soniq")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from soniq.cli import main; sys.exit(main())"]


@dataclass
class WorkerProcess:
    """A `soniq worker --concurrency 10` subprocess on one schema, and its memory samples."""

    url: str
    schema: str
    profile: Path | None = None
    concurrency: int = CONCURRENCY
    tag: str = ""  # tells apart the logs of several workers on one schema
    extra_env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    ps: psutil.Process | None = None
    rss: list[tuple[float, int]] = field(default_factory=list)  # (time, bytes)
    log_path: Path | None = None
    jobs_module: str = "benchmarks.jobs"

    def start(self) -> float:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("SONIQ_") or k == "SONIQ_LOG_LEVEL"
        }
        env.update(
            SONIQ_DATABASE_URL=self.url,
            SONIQ_SCHEMA=self.schema,
            SONIQ_JOBS_MODULES=self.jobs_module,
            PYTHONPATH=os.pathsep.join(p for p in [str(ROOT), env.get("PYTHONPATH", "")] if p),
        )
        env.update(self.extra_env)
        cmd = [*soniq_command(), "worker", "--concurrency", str(self.concurrency)]
        RESULTS.mkdir(parents=True, exist_ok=True)
        self.log_path = RESULTS / f"worker-{self.schema}{self.tag}.log"
        log = self.log_path.open("wb")
        started = time.time()
        self.proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=log, stderr=log)
        log.close()
        self.ps = psutil.Process(self.proc.pid)
        return started

    def start_profile(self) -> None:
        """Record the running worker with py-spy (idle time included) until it exits."""
        assert self.proc is not None and self.profile is not None
        py_spy = Path(sys.executable).with_name("py-spy")
        self._spy = subprocess.Popen(
            [
                str(py_spy),
                "record",
                "--pid",
                str(self.proc.pid),
                "--rate",
                "250",
                "--format",
                "raw",
                "--output",
                str(self.profile),
                "--nonblocking",
                "--idle",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def sample(self) -> int:
        assert self.ps is not None and self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(
                f"the worker exited with {self.proc.returncode}; see {self.log_path}"
            )
        rss = int(self.ps.memory_info().rss)
        self.rss.append((time.time(), rss))
        return rss

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        spy = getattr(self, "_spy", None)
        if spy is not None:
            try:
                spy.wait(timeout=30)
            except subprocess.TimeoutExpired:
                spy.kill()
                spy.wait(timeout=10)


async def _fill(url: str, schema: str, n: int, task: str = "bench.noop") -> None:
    """A fresh schema with ``n`` queued no-op jobs."""
    await fresh_schema(url, schema)
    app = Soniq(database_url=url, schema=schema)
    register(app)
    try:
        await app.setup()
        for start in range(0, n, 1000):
            await app.enqueue_many(task, [{"n": i} for i in range(start, min(start + 1000, n))])
    finally:
        await app.close()


async def _wait_registered(conn: Any, schema: str, worker: WorkerProcess, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not await conn.fetchval(f"SELECT count(*) FROM {schema}.soniq_workers"):
        worker.sample()
        if time.monotonic() > deadline:
            raise RuntimeError(f"the worker did not start within {timeout}s; see {worker.log_path}")
        await asyncio.sleep(0.05)


async def _wait_drained(
    conn: Any,
    schema: str,
    n: int,
    worker: WorkerProcess,
    timeout: float,
    interval: float,
    on_progress: Any = None,
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        worker.sample()
        # each half walks its own partial index, so polling costs the server little (it
        # shares the machine with the worker being measured)
        left = await conn.fetchval(
            f"SELECT (SELECT count(*) FROM {schema}.soniq_jobs WHERE status = 'queued')"
            f" + (SELECT count(*) FROM {schema}.soniq_jobs WHERE status = 'processing')"
        )
        if on_progress is not None:
            on_progress(n - left)
        if left == 0:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{left} of {n} jobs still not done after {timeout}s")
        await asyncio.sleep(interval)


async def _verify(conn: Any, schema: str, n: int, where: str = "TRUE", *args: Any) -> Any:
    """Every job done exactly once (attempts = 1); the first start and last finish."""
    row = await conn.fetchrow(
        f"""SELECT count(*) AS total,
                   count(*) FILTER (WHERE status = 'done' AND attempts = 1) AS once,
                   min(created_at) AS first_created, min(started_at) AS first_started,
                   max(finished_at) AS last_finished
            FROM {schema}.soniq_jobs WHERE {where}""",
        *args,
    )
    if row["total"] != n or row["once"] != n:
        raise RuntimeError(
            f"drain check failed in {schema}: {row['total']} jobs of {n} expected, "
            f"{row['once']} done with exactly one attempt"
        )
    return row


@dataclass
class Drained:
    """One drain of a filled schema by one fresh worker process (see ``drain_filled``)."""

    seconds: float  # the worker's registration to the last finish
    row: Any  # _verify's row: first start, last finish
    spawned: float  # time.time() at spawn
    ended: float  # time.time() when the last job was seen done
    worker: WorkerProcess
    backends: Counter[str]


async def drain_filled(
    url: str,
    schema: str,
    n: int,
    *,
    jobs_module: str = "benchmarks.jobs",
    profile: Path | None = None,
) -> Drained:
    """Drain the ``n`` jobs queued in ``schema`` with one fresh worker process, check every
    job ran exactly once, then drop the schema."""
    worker = WorkerProcess(url, schema, profile=profile, jobs_module=jobs_module)
    conn = await asyncpg.connect(url)
    backends: Counter[str] = Counter()
    try:
        spawned = worker.start()
        await _wait_registered(conn, schema, worker, timeout=60)
        if profile is not None:
            worker.start_profile()
            watch = asyncio.create_task(_watch_backends(url, schema, backends))
        await _wait_drained(conn, schema, n, worker, timeout=600, interval=0.25)
        ended = time.time()
        if profile is not None:
            watch.cancel()
            await asyncio.gather(watch, return_exceptions=True)
        row = await _verify(conn, schema, n)
        started_at = await conn.fetchval(f"SELECT min(started_at) FROM {schema}.soniq_workers")
    finally:
        worker.stop()
        await conn.close()
        await drop_schema(url, schema)
    seconds = (row["last_finished"] - started_at).total_seconds()
    return Drained(seconds, row, spawned, ended, worker, backends)


async def drain(url: str, n: int, profile: Path | None = None) -> Result:
    """``n`` queued no-op jobs drained by one fresh worker process."""
    await fill_plain(url, n)
    return await drain_plain(url, n, profile)


async def fill_plain(url: str, n: int) -> None:
    """Queue the jobs of :func:`drain` (its schema, fresh)."""
    await _fill(url, "bench_drain", n)


async def drain_plain(url: str, n: int, profile: Path | None = None) -> Result:
    """The drain of :func:`drain`, on the jobs :func:`fill_plain` queued."""
    d = await drain_filled(url, "bench_drain", n, profile=profile)
    row = d.row
    return Result(
        "soniq.drain",
        f"drain {n:,} no-op jobs, 1 worker process, concurrency {CONCURRENCY}",
        n,
        d.seconds,
        timed_rate(n, d.seconds),
        extra={
            "spawn_to_done_seconds": round(d.ended - d.spawned, 3),
            "first_start_to_last_finish_seconds": round(
                (row["last_finished"] - row["first_started"]).total_seconds(), 3
            ),
            "peak_rss_mb": round(max(r for _, r in d.worker.rss) / 2**20, 1),
            **({"worker_backends": dict(d.backends.most_common())} if d.backends else {}),
        },
    )


async def _watch_backends(url: str, schema: str, seen: Counter[str]) -> None:
    """Sample what the worker's database sessions are doing (every 5 ms), until cancelled."""
    conn = await asyncpg.connect(url)
    try:
        while True:
            rows = await conn.fetch(
                "SELECT state, wait_event_type, wait_event, left(query, 40) AS query "
                "FROM pg_stat_activity WHERE application_name LIKE $1 "
                "AND pid <> pg_backend_pid()",
                f"soniq:{schema}%",
            )
            for r in rows:
                what = r["state"] or "?"
                if r["wait_event"]:
                    what += f" / {r['wait_event_type']}:{r['wait_event']}"
                if r["state"] == "active":
                    what += f" / {' '.join(r['query'].split())}"
                seen[what] += 1
            await asyncio.sleep(0.005)
    finally:
        await conn.close()


async def drain_deep(url: str, n: int, shallow: int, rounds: int) -> tuple[Result, Result, Result]:
    """A drain of ``n`` queued jobs, its worker's memory, then the same worker's rate at
    ``shallow`` queued (``rounds`` batches of that many, each enqueued in one call)."""
    schema = "bench_deep"
    await _fill(url, schema, n)
    worker = WorkerProcess(url, schema)
    conn = await asyncpg.connect(url)
    app = Soniq(database_url=url, schema=schema)
    register(app)
    marks: dict[str, int] = {}

    def progress(done: int) -> None:
        # memory once the worker is warm (a tenth of the drain done), and at the end
        if done >= n // 10 and "warm" not in marks:
            marks["warm"] = worker.rss[-1][1]

    try:
        worker.start()
        await _wait_registered(conn, schema, worker, timeout=60)
        await _wait_drained(
            conn, schema, n, worker, timeout=900, interval=0.5, on_progress=progress
        )
        end_rss = worker.sample()
        row = await _verify(conn, schema, n)
        started_at = await conn.fetchval(f"SELECT min(started_at) FROM {schema}.soniq_workers")
        deep_seconds = (row["last_finished"] - started_at).total_seconds()
        rates = []
        for _ in range(rounds):
            ids = await app.enqueue_many("bench.noop", [{"n": i} for i in range(shallow)])
            await _wait_drained(conn, schema, shallow, worker, timeout=120, interval=0.1)
            batch = await _verify(conn, schema, shallow, "id = ANY($1::uuid[])", ids)
            seconds = (batch["last_finished"] - batch["first_started"]).total_seconds()
            rates.append(timed_rate(shallow, seconds))
    finally:
        await app.close()
        worker.stop()
        await conn.close()
        await drop_schema(url, schema)
    rates.sort()
    shallow_rate = rates[len(rates) // 2]
    deep = Result(
        "soniq.drain_deep",
        f"drain {n:,} queued, same worker setup",
        n,
        deep_seconds,
        timed_rate(n, deep_seconds),
    )
    shallow_row = Result(
        "soniq.drain_shallow",
        f"drain {shallow:,} queued (median of {rounds}), same worker",
        shallow,
        shallow / shallow_rate,
        shallow_rate,
        extra={"round_rates": [round(r) for r in rates]},
    )
    start_rss = worker.rss[0][1]
    warm = marks.get("warm", start_rss)
    peak = max(r for _, r in worker.rss)
    memory = Result(
        "soniq.worker_rss",
        f"worker RSS over the {n:,}-job drain (MB: warm -> end, peak)",
        extra={
            "start_mb": round(start_rss / 2**20, 1),
            "warm_mb": round(warm / 2**20, 1),
            "end_mb": round(end_rss / 2**20, 1),
            "peak_mb": round(peak / 2**20, 1),
            "growth": round(end_rss / warm - 1, 4),
        },
    )
    return deep, shallow_row, memory


@asynccontextmanager
async def idle_worker(url: str, schema: str) -> AsyncIterator[tuple[Soniq, Any, WorkerProcess]]:
    """A fresh ``schema`` with benchmarks.jobs registered, one registered worker process on
    it, and a connection of the benchmark's own: (app, conn, worker). All gone afterwards."""
    await fresh_schema(url, schema)
    app = Soniq(database_url=url, schema=schema)
    register(app)
    await app.setup()
    worker = WorkerProcess(url, schema)
    conn = await asyncpg.connect(url)
    try:
        worker.start()
        await _wait_registered(conn, schema, worker, timeout=60)
        yield app, conn, worker
    finally:
        await app.close()
        worker.stop()
        await conn.close()
        await drop_schema(url, schema)


async def latency(url: str, jobs: int, every: float = 0.01) -> Result:
    """An idle worker; one job every ``every`` seconds; enqueue call to handler start."""
    schema = "bench_latency"
    returned: dict[str, float] = {}
    async with idle_worker(url, schema) as (app, conn, worker):
        await asyncio.sleep(1.0)  # let it settle into waiting (LISTEN set up, first poll done)
        for _ in range(5):  # warm the enqueue path
            await app.enqueue("bench.stamp", args={"t": time.time()})
        await _wait_drained(conn, schema, 5, worker, timeout=30, interval=0.02)
        await conn.execute(f"DELETE FROM {schema}.soniq_jobs")
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        for i in range(jobs):
            delay = t0 + i * every - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            job_id = await app.enqueue("bench.stamp", args={"t": time.time()})
            returned[job_id] = time.time()
        await _wait_drained(conn, schema, jobs, worker, timeout=60, interval=0.02)
        await _verify(conn, schema, jobs)
        rows = await conn.fetch(
            f"SELECT id::text, (args->>'t')::float8 AS t, result::float8 AS began "
            f"FROM {schema}.soniq_jobs"
        )
    from_call = sorted((r["began"] - r["t"]) * 1000 for r in rows)
    from_commit = sorted((r["began"] - returned[r["id"]]) * 1000 for r in rows)
    return Result(
        "soniq.latency",
        f"enqueue-to-start, idle worker, 1 job / {every * 1000:.0f} ms",
        jobs,
        extra={
            "p50_ms": pct(from_call, 50),
            "p95_ms": pct(from_call, 95),
            "p99_ms": pct(from_call, 99),
            "max_ms": round(from_call[-1], 2),
            "from_commit_p50_ms": pct(from_commit, 50),
            "from_commit_p99_ms": pct(from_commit, 99),
        },
    )
