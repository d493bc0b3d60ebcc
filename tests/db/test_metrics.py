"""Prometheus metrics: counters follow the app and worker, sampled gauges follow the database,
and `soniq worker --metrics-port` serves numbers that match the database during a drain."""

from __future__ import annotations

import asyncio
import socket
import urllib.request

from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from soniq import JobStatus, Snooze
from soniq.contrib import metrics
from tests.conftest import SONIQ_BIN, wait_for


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    got = registry.get_sample_value(name, labels)
    return 0.0 if got is None else got


async def test_counters_match_outcomes(app):
    registry = CollectorRegistry()
    observer = metrics.install(app, registry=registry, sample_interval=60)
    assert metrics.install(app, registry=registry) is observer  # once per registry
    snoozed: set[int] = set()

    @app.job(name="m.ok")
    async def ok(n: int) -> int:
        return n

    @app.job(name="m.flaky", queue="q2", retries=2)
    async def flaky(n: int) -> None:
        raise RuntimeError("always")

    @app.job(name="m.nap", queue="q2")
    async def nap(n: int) -> Snooze | None:
        if n not in snoozed:
            snoozed.add(n)
            return Snooze(0)
        return None

    await app.enqueue_many(ok, [{"n": i} for i in range(7)])
    for i in range(2):
        await flaky.enqueue(n=i)  # type: ignore[attr-defined]
    await nap.enqueue(n=1)  # type: ignore[attr-defined]
    await app.run_worker(run_once=True, concurrency=4)
    await observer.stop_sampler()

    stats = await app.get_queue_stats()
    assert stats["done"] == 8 and stats["dead_letter"] == 2
    ok_l = {"queue": "default", "task": "m.ok"}
    flaky_l = {"queue": "q2", "task": "m.flaky"}
    nap_l = {"queue": "q2", "task": "m.nap"}
    assert value(registry, "soniq_jobs_enqueued_total", **ok_l) == 7
    assert value(registry, "soniq_jobs_enqueued_total", **flaky_l) == 2
    assert value(registry, "soniq_jobs_started_total", **ok_l) == 7
    assert value(registry, "soniq_jobs_succeeded_total", **ok_l) == 7
    assert value(registry, "soniq_jobs_started_total", **flaky_l) == 6  # 3 attempts each
    assert value(registry, "soniq_jobs_retried_total", **flaky_l) == 4
    assert value(registry, "soniq_jobs_dead_lettered_total", **flaky_l) == 2
    assert value(registry, "soniq_jobs_failed_total", **flaky_l) == 6
    assert value(registry, "soniq_jobs_snoozed_total", **nap_l) == 1
    assert value(registry, "soniq_jobs_succeeded_total", **nap_l) == 1
    assert value(registry, "soniq_job_duration_seconds_count", **ok_l) == 7
    assert value(registry, "soniq_job_duration_seconds_count", **flaky_l) == 6
    in_flight = [
        s for m in registry.collect() if m.name == "soniq_worker_in_flight" for s in m.samples
    ]
    assert in_flight and all(s.value == 0 for s in in_flight)


async def test_sampled_gauges_match_database(app):
    registry = CollectorRegistry()
    observer = metrics.install(app, registry=registry, sample_interval=60)
    await observer.stop_sampler()

    @app.job(name="m.wait", queue="slow")
    async def wait(n: int) -> None:
        return None

    await app.enqueue_many(wait, [{"n": i} for i in range(5)])
    await app.enqueue_many(wait, [{"n": i} for i in range(3)], scheduled_at=3600)
    await observer.sample()
    rows = {q["queue"]: q for q in await app.list_queues()}
    assert value(registry, "soniq_queue_depth", queue="slow") == rows["slow"]["queued"] == 8
    age = value(registry, "soniq_queue_oldest_age_seconds", queue="slow")
    assert 0 <= age <= rows["slow"]["oldest_queued_age"] + 1
    assert value(registry, "soniq_queue_processing", queue="slow") == 0

    for job in await app.list_jobs(queue="slow", status="queued"):
        await app.cancel_job(job["id"])
    await observer.sample()  # a queue with nothing left reads 0, not its last value
    assert value(registry, "soniq_queue_depth", queue="slow") == 0
    assert value(registry, "soniq_queue_oldest_age_seconds", queue="slow") == 0


async def test_two_instances_share_one_registry(make_app, pg_url):
    registry = CollectorRegistry()
    first = await make_app()
    second = await make_app()
    one = metrics.install(first, registry=registry, sample_interval=60)
    two = metrics.install(second, registry=registry, sample_interval=60)
    assert one is not two and one.m is two.m
    await one.stop_sampler()
    await two.stop_sampler()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name.startswith("soniq_"):
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def total(sample: dict, name: str, **labels: str) -> float:
    want = set(labels.items())
    return sum(v for (n, lab), v in sample.items() if n == name and want <= set(lab))


async def test_metrics_endpoint_during_a_drain_matches_database(make_app, cli_env):
    app = await make_app(enqueue_validation="none")
    n_ok, n_fail = 200, 5
    await app.enqueue_many("cli.slow", [{"seconds": 0.04} for _ in range(n_ok)])
    await app.enqueue_many(
        "cli.fail", [{"message": f"m{i}"} for i in range(n_fail)], queue="critical"
    )
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        SONIQ_BIN,
        "worker",
        "--jobs-modules",
        "cli.cli_jobs",
        "--concurrency",
        "4",
        "--metrics-port",
        str(port),
        "--metrics-interval",
        "0.2",
        env=cli_env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:

        async def served():
            try:
                return await asyncio.to_thread(scrape, port)
            except OSError:
                return None

        await wait_for(served, timeout=20, message="metrics endpoint up")
        mid_drain = 0
        last = 0.0
        while True:
            before = (await app.get_queue_stats())["done"]
            sample = await asyncio.to_thread(scrape, port)
            after = (await app.get_queue_stats())["done"]
            succeeded = total(sample, "soniq_jobs_succeeded_total", task="cli.slow")
            # outcomes are counted when decided and written just after, in batches
            assert before <= succeeded <= n_ok and succeeded >= last
            last = succeeded
            if 0 < after < n_ok:
                mid_drain += 1
            if after == n_ok:
                break
            await asyncio.sleep(0.1)
        assert mid_drain >= 2, "the drain ended before it could be observed"

        async def settled():
            stats = await app.get_queue_stats()
            s = await asyncio.to_thread(scrape, port)
            ok = (
                stats["queued"] == 0
                and stats["processing"] == 0
                and total(s, "soniq_queue_depth") == 0
                and total(s, "soniq_queue_dead_letter", queue="critical") == stats["dead_letter"]
            )
            return (stats, s) if ok else None

        stats, s = await wait_for(settled, timeout=20, message="drain settled in metrics")
        assert stats["done"] == n_ok and stats["dead_letter"] == n_fail
        dead = await app.list_jobs(status=JobStatus.DEAD_LETTER)
        assert {j["job_name"] for j in dead} == {"cli.fail"}
        fail_attempts = sum(j["attempts"] for j in dead)  # max_attempts set by the enqueuer
        assert fail_attempts == 4 * n_fail
        assert total(s, "soniq_jobs_started_total") == n_ok + fail_attempts
        assert total(s, "soniq_jobs_succeeded_total") == stats["done"]
        assert total(s, "soniq_jobs_dead_lettered_total") == stats["dead_letter"]
        assert total(s, "soniq_jobs_retried_total", queue="critical") == fail_attempts - n_fail
        assert total(s, "soniq_jobs_failed_total", queue="critical") == fail_attempts
        assert total(s, "soniq_job_duration_seconds_count", task="cli.slow") == n_ok
        assert total(s, "soniq_job_duration_seconds_sum", task="cli.slow") >= n_ok * 0.04
        assert total(s, "soniq_worker_in_flight") == 0
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 15)
            except asyncio.TimeoutError:
                proc.kill()
                await proc.wait()
    assert proc.returncode == 0
