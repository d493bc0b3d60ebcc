"""app.sync: blocking calls from threads, Flask and psycopg 3 transactions, on the real database."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest

from soniq import JobStatus, Soniq, SoniqError
from tests.conftest import FAST_SETTINGS, ROOT

psycopg = pytest.importorskip("psycopg")


def _drop(pg_url: str, schema: str) -> None:
    async def drop() -> None:
        conn = await asyncpg.connect(pg_url)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()

    asyncio.run(drop())


@pytest.fixture
def sync_schema(pg_url: str) -> Iterator[str]:
    name = f"s_{uuid.uuid4().hex[:12]}"
    yield name
    _drop(pg_url, name)


@pytest.fixture
def sapp(pg_url: str, sync_schema: str) -> Iterator[Soniq]:
    app = Soniq(pg_url, schema=sync_schema, **FAST_SETTINGS)
    app.sync.setup()
    yield app
    app.sync.close()


def define(app: Soniq) -> Any:
    @app.job(name="double")
    async def double(x: int) -> int:
        return 2 * x

    return double


def test_sync_enqueue_get_job_from_eight_threads(sapp: Soniq) -> None:
    double = define(sapp)
    ids: list[str] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def producer(k: int) -> None:
        try:
            start.wait(10)
            for i in range(25):
                job_id = sapp.sync.enqueue(double, x=k * 100 + i)
                job = sapp.sync.get_job(job_id)
                assert job is not None and job["status"] is JobStatus.QUEUED
                with lock:
                    ids.append(job_id)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=producer, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert len(set(ids)) == 200
    sapp.sync.run_worker(run_once=True)
    results = {sapp.sync.get_result(i) for i in ids}
    assert results == {2 * (k * 100 + i) for k in range(8) for i in range(25)}
    assert sapp.sync.get_queue_stats()["done"] == 200


def test_sync_with_psycopg_transaction(sapp: Soniq, pg_url: str) -> None:
    double = define(sapp)
    with psycopg.connect(pg_url) as conn:
        with conn.transaction():
            kept = sapp.sync.enqueue(double, x=1, connection=conn)
            # not visible to the pool's connections before the commit
            assert sapp.sync.get_job(kept) is None
        assert sapp.sync.get_job(kept) is not None
        with pytest.raises(RuntimeError), conn.transaction():
            dropped = sapp.sync.enqueue(double, x=2, connection=conn, queue="other")
            raise RuntimeError("roll back")
        assert sapp.sync.get_job(dropped) is None
        # the same rules as the async enqueue: nothing is written on bad input
        with pytest.raises(SoniqError) as e, conn.transaction():
            sapp.sync.enqueue(double, x=float("inf"), connection=conn)
        assert e.value.error_code == "SONIQ_TASK_ARGS_INVALID"
        # dedup keys behave as in the async enqueue
        with conn.transaction():
            a = sapp.sync.enqueue(double, x=3, dedup_key="k", connection=conn)
            b = sapp.sync.enqueue(double, x=3, dedup_key="k", connection=conn)
        assert a == b
        # enqueue_many on the same connection: all in, or (rolled back) none
        with conn.transaction():
            many = sapp.sync.enqueue_many(double, [{"x": 10}, {"x": 11}], connection=conn)
        with pytest.raises(RuntimeError), conn.transaction():
            gone = sapp.sync.enqueue_many(double, [{"x": 12}], connection=conn, priority=1)
            raise RuntimeError("roll back")
        assert sapp.sync.enqueue_many(double, [], connection=conn) == []
        later = sapp.sync.enqueue(double, x=13, scheduled_at=3600, connection=conn)
        conn.commit()
    assert sapp.sync.get_job(gone[0]) is None
    assert [sapp.sync.get_job(i)["args"] for i in many] == [{"x": 10}, {"x": 11}]
    job = sapp.sync.get_job(later)
    assert job is not None and job["scheduled_at"] > job["created_at"]
    job = sapp.sync.get_job(kept)
    assert job is not None and job["args"] == {"x": 1} and job["queue"] == "default"
    sapp.sync.run_worker(run_once=True)
    assert sapp.sync.get_result(kept) == 2
    assert [sapp.sync.get_result(i) for i in many] == [20, 22]
    assert sapp.sync.get_result(later) is None  # not due yet


def test_sync_from_flask(sapp: Soniq) -> None:
    flask = pytest.importorskip("flask")
    double = define(sapp)
    web = flask.Flask("shop")

    @web.post("/double/<int:x>")
    def enqueue(x: int) -> Any:
        return {"job_id": sapp.sync.enqueue(double, x=x)}

    @web.get("/jobs/<job_id>")
    def show(job_id: str) -> Any:
        job = sapp.sync.get_job(job_id)
        return {"status": str(job["status"]), "result": sapp.sync.get_result(job_id)}

    client = web.test_client()
    job_id = client.post("/double/21").get_json()["job_id"]
    assert client.get(f"/jobs/{job_id}").get_json() == {"status": "queued", "result": None}
    sapp.sync.run_worker(run_once=True)
    assert client.get(f"/jobs/{job_id}").get_json() == {"status": "done", "result": 42}


def test_sync_misuse_and_unknown_names(sapp: Soniq) -> None:
    define(sapp)
    with pytest.raises(AttributeError):
        sapp.sync.job  # noqa: B018  # not an async method
    with pytest.raises(SoniqError) as e:
        sapp.sync.enqueue("double", args={"x": 1}, connection=object())
    assert "asyncpg" in e.value.message and "psycopg" in e.value.message


def test_sync_close_and_reuse(sapp: Soniq) -> None:
    double = define(sapp)
    sapp.sync.enqueue(double, x=1)
    thread = sapp.sync._thread
    assert thread is not None and thread.daemon
    sapp.sync.close()
    thread.join(5)
    assert not thread.is_alive()
    assert sapp.sync.get_queue_stats()["queued"] == 1  # a new loop after close


def test_interpreter_exits_without_close(pg_url: str, sync_schema: str) -> None:
    script = textwrap.dedent(
        f"""
        from soniq import Soniq
        app = Soniq({pg_url!r}, schema={sync_schema!r})
        app.sync.setup()

        @app.job(name="noop")
        def noop() -> None:
            pass

        print("ENQUEUED", app.sync.enqueue(noop))
        """
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30, env=env
    )
    assert proc.returncode == 0, proc.stderr
    assert "ENQUEUED" in proc.stdout
    assert time.monotonic() - started < 20


def test_close_while_another_thread_waits(sapp: Soniq) -> None:
    @sapp.job(name="nap")
    async def nap() -> None:
        pass

    outcome: list[BaseException] = []

    def sleeper() -> None:
        try:
            sapp.sync.run(asyncio.sleep(60))
        except BaseException as exc:  # reported below
            outcome.append(exc)

    t = threading.Thread(target=sleeper)
    t.start()
    deadline = time.monotonic() + 10
    while sapp.sync._loop is None or len(asyncio.all_tasks(sapp.sync._loop)) < 1:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    sapp.sync.close(10)
    t.join(10)
    assert not t.is_alive() and outcome and type(outcome[0]).__name__ == "CancelledError"
