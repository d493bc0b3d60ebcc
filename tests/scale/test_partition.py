"""A network partition between one worker and PostgreSQL, made with a network namespace.

Worker A runs in a namespace of the test's own and reaches PostgreSQL over a veth pair; worker
B runs beside PostgreSQL. While A runs a job, every packet between A and PostgreSQL is silently
dropped for 60 s (iptables DROP: no reset, no ICMP). Then:
- A's job is rescued by B once A's heartbeat is older than heartbeat_timeout, and B finishes it;
- no query of A's hangs for ever: A notices the loss within its timeouts and, once the network
  heals, is back at work (it runs a new job) within seconds, not TCP's retransmission minutes;
- when A's handler finally returns, A's stale outcome does not overwrite B's (the guarded
  outcome write refuses it).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from soniq import Soniq
from tests.conftest import SONIQ_BIN, wait_for
from tests.process.worker_jobs import RUNS_TABLE
from tests.process.worker_jobs import app as jobs_app
from tests.scale.servers import NetNamespace, PgCluster, server_dir

SCHEMA = "partition"
PARTITION_SECONDS = 60
HANDLER_SECONDS = PARTITION_SECONDS + 8


class Worker:
    """A `soniq worker` process, optionally inside a network namespace."""

    def __init__(self, env: dict[str, str], netns: str | None = None) -> None:
        self.log = tempfile.NamedTemporaryFile("w+", prefix="soniq-worker-", suffix=".log")
        cmd = [SONIQ_BIN, "worker", "--jobs-modules", "tests.process.worker_jobs",
               "--concurrency", "2"]
        if netns is not None:
            cmd = ["ip", "netns", "exec", netns, *cmd]
        self.proc = subprocess.Popen(cmd, env=env, stdout=self.log, stderr=subprocess.STDOUT)

    def output(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text()

    async def stop(self, timeout: float = 30) -> int:
        self.proc.terminate()
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                self.proc.kill()
                raise AssertionError(f"worker did not stop in {timeout}s:\n{self.output()}")
            await asyncio.sleep(0.1)
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def network() -> Iterator[tuple[NetNamespace, PgCluster]]:
    why = NetNamespace.available()
    if why is not None:
        print(f"SKIP partition test: {why}")
        pytest.skip(why)
    ns = NetNamespace(f"sq{os.getpid() % 100000}", subnet=os.getpid() % 250)
    root = server_dir("partition")
    ns.create()
    cluster = PgCluster(root / "pg")
    try:
        cluster.initdb(listen_addresses=f"'127.0.0.1,{ns.host_addr}'")
        cluster.start()
        yield ns, cluster
    finally:
        try:
            cluster.stop("immediate")
        except Exception as exc:
            print(f"stopping the cluster: {exc}\n{cluster.log_text()[-2000:]}")
        ns.delete()
        shutil.rmtree(root, ignore_errors=True)


async def test_partitioned_worker_is_rescued_and_cannot_overwrite(
    network: tuple[NetNamespace, PgCluster], cli_env: dict[str, str]
) -> None:
    ns, cluster = network
    app = Soniq(database_url=cluster.url(), schema=SCHEMA)
    app.tasks.update(jobs_app.tasks)
    await app.setup()
    db = await asyncpg.connect(cluster.url())
    workers: list[Worker] = []
    try:
        await db.execute(RUNS_TABLE.format(schema=SCHEMA))
        env = {**cli_env, "SONIQ_SCHEMA": SCHEMA}
        a = Worker({**env, "SONIQ_DATABASE_URL": (
            f"postgresql://postgres@{ns.host_addr}:{cluster.port}/postgres")}, netns=ns.name)
        workers.append(a)
        job = await app.enqueue("hang_first", seconds=HANDLER_SECONDS)

        async def started() -> bool:
            return bool(await db.fetchval(f"SELECT count(*) FROM {SCHEMA}.test_runs"))

        await wait_for(started, timeout=30, message="worker A started the job")
        a_pid = await db.fetchval(f"SELECT pid FROM {SCHEMA}.test_runs")

        ns.partition()
        cut = time.monotonic()
        b = Worker({**env, "SONIQ_DATABASE_URL": cluster.url()})
        workers.append(b)

        async def done() -> bool:
            j = await app.get_job(job)
            return bool(j and j["status"] == "done")

        await wait_for(done, timeout=30, message="B finished A's rescued job")
        rescued_after = time.monotonic() - cut
        finished = await app.get_job(job)
        assert finished is not None
        assert await app.get_result(job) == "attempt 2"
        assert await db.fetchval(f"SELECT count(DISTINCT pid) FROM {SCHEMA}.test_runs") == 2

        await asyncio.sleep(max(0.0, PARTITION_SECONDS - (time.monotonic() - cut)))
        assert await b.stop() == 0, b.output()  # from now on only A can run new jobs
        ns.heal()
        healed = time.monotonic()
        later = await app.enqueue("record")

        async def ran_later() -> bool:
            return bool(await db.fetchval(
                f"SELECT count(*) FROM {SCHEMA}.test_runs WHERE job_id = $1::uuid", later))

        await wait_for(ran_later, timeout=30, message="A back at work after the heal")
        back_after = time.monotonic() - healed
        assert await db.fetchval(
            f"SELECT pid FROM {SCHEMA}.test_runs WHERE job_id = $1::uuid", later) == a_pid

        # A's first handler returns HANDLER_SECONDS after it started; A's SIGTERM waits for
        # it and records (tries to record) its outcome before exiting
        assert await a.stop(timeout=HANDLER_SECONDS + 30) == 0, a.output()
        after = await app.get_job(job)
        assert after is not None
        assert after["status"] == "done" and after["attempts"] == finished["attempts"]
        assert after["finished_at"] == finished["finished_at"]
        assert await app.get_result(job) == "attempt 2", "A's stale outcome overwrote B's"
        print(f"\npartition: A's job rescued and done by B {rescued_after:.1f}s after the cut; "
              f"A back at work {back_after:.1f}s after the heal; B's outcome kept")
    except BaseException:
        for w in workers:
            print(f"--- worker {w.proc.pid} ---\n{w.output()[-5000:]}")
        raise
    finally:
        for w in workers:
            w.kill()
        await db.close()
        await app.close()
