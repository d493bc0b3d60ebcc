"""soniq.testing: inline and manual modes (no database) and the helpers, also on a real app."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from typing import Any

import pytest

from soniq import JobContext, JobStatus, Snooze, Soniq, SoniqError, task_ref
from soniq.inline import MAX_DEPTH
from soniq.testing import (
    assert_enqueued,
    drain,
    enqueued,
    perform_job,
    refute_enqueued,
    testing_mode,
)
from tests.conftest import ROOT


def inline_app(**settings: Any) -> Soniq:
    # an unreachable URL: any attempt to use a database would fail loudly
    return Soniq("postgresql://nobody@127.0.0.1:1/none", testing="inline", **settings)


async def test_inline_runs_at_enqueue_and_keeps_results() -> None:
    app = inline_app()
    seen: list[int] = []

    @app.job()
    async def add(a: int, b: int) -> int:
        seen.append(a + b)
        return a + b

    job_id = await add.enqueue(a=2, b=3)
    assert seen == [5]  # ran before enqueue returned
    job = await app.get_job(job_id)
    assert job is not None and job["status"] is JobStatus.DONE and job["attempts"] == 1
    assert await app.get_result(job_id) == 5
    assert [j["id"] for j in await app.list_jobs(status="done")] == [job_id]
    assert await app.get_job("not-an-id") is None
    stats = await app.get_queue_stats()
    assert stats["done"] == 1 and stats["total"] == 1


async def test_inline_same_rules_as_enqueue() -> None:
    app = inline_app()

    @app.job()
    async def f(x: int) -> None:
        pass

    with pytest.raises(SoniqError) as e:
        await f.enqueue(x=float("nan"))
    assert e.value.error_code == "SONIQ_TASK_ARGS_INVALID"
    with pytest.raises(SoniqError) as e:
        await app.enqueue("nope")
    assert e.value.error_code == "SONIQ_UNKNOWN_TASK_NAME"
    with pytest.raises(SoniqError) as e:
        await f.enqueue(y=1)
    assert e.value.error_code == "SONIQ_TASK_ARGS_INVALID"
    assert await app.list_jobs() == []  # nothing written


async def test_inline_retries_then_dead_letter_never_raises() -> None:
    app = inline_app()
    calls: list[int] = []

    @app.job(retries=2)
    async def flaky(ctx: JobContext) -> str:
        calls.append(ctx.attempt)
        if ctx.attempt < 3:
            raise ValueError(f"boom {ctx.attempt}")
        return "ok"

    @app.job(retries=1)
    def always_fails() -> None:
        raise RuntimeError("always")

    ok = await flaky.enqueue()
    assert calls == [1, 2, 3]
    job = await app.get_job(ok)
    assert job is not None and job["status"] is JobStatus.DONE
    assert [e["error"] for e in job["errors"]] == ["ValueError: boom 1", "ValueError: boom 2"]

    bad = await always_fails.enqueue()  # does not raise
    job = await app.get_job(bad)
    assert job is not None and job["status"] is JobStatus.DEAD_LETTER
    assert job["attempts"] == 2 and job["dead_reason"] == "max_retries_exceeded"
    assert "always" in job["last_error"]
    assert await app.get_result(bad) is None


async def test_inline_timeout_and_snooze() -> None:
    app = inline_app()

    @app.job(timeout=0.2, retries=0)
    async def slow() -> None:
        await asyncio.sleep(10)

    snoozes: list[int] = []

    @app.job()
    async def sleepy(ctx: JobContext) -> Any:
        snoozes.append(ctx.attempt)
        return Snooze(60) if len(snoozes) == 1 else "woke"

    job = await app.get_job(await slow.enqueue())
    assert job is not None and job["status"] is JobStatus.DEAD_LETTER
    assert job["dead_reason"] == "timeout"

    job_id = await sleepy.enqueue()
    job = await app.get_job(job_id)
    # a snooze waits, as in a worker: still queued, attempt refunded, due in about a minute
    assert job is not None and job["status"] is JobStatus.QUEUED and job["attempts"] == 0
    assert await drain(app) == {"done": 0, "dead_letter": 0, "cancelled": 0}
    assert await drain(app, with_scheduled=True) == {"done": 1, "dead_letter": 0, "cancelled": 0}
    assert await app.get_result(job_id) == "woke"
    assert snoozes == [1, 1]  # the snoozed attempt did not count


async def test_inline_nested_enqueue_and_depth_limit() -> None:
    app = inline_app()
    order: list[str] = []

    @app.job()
    async def child(n: int) -> None:
        order.append(f"child {n}")

    @app.job()
    async def parent() -> None:
        order.append("parent start")
        await child.enqueue(n=1)
        order.append("parent end")

    await parent.enqueue()
    assert order == ["parent start", "child 1", "parent end"]

    depth: list[int] = []

    @app.job(retries=0)
    async def forever(n: int) -> None:
        depth.append(n)
        await forever.enqueue(n=n + 1)

    first = await forever.enqueue(n=1)  # does not raise, does not recurse without end
    assert len(depth) == MAX_DEPTH
    deepest = (await app.list_jobs(job_name=forever.__soniq_task__.name))[0]  # newest
    assert deepest["status"] is JobStatus.DEAD_LETTER
    assert f"nested {MAX_DEPTH} deep" in deepest["last_error"]
    first_job = await app.get_job(first)
    assert first_job is not None and first_job["status"] is JobStatus.DONE


async def test_manual_mode_drain_and_assertions() -> None:
    app = Soniq("postgresql://nobody@127.0.0.1:1/none", testing="manual")
    ran: list[str] = []

    @app.job(queue="mail")
    async def send(to: str, subject: str = "hi") -> None:
        ran.append(to)
        if to == "bad@x":
            raise ValueError("bounce")

    await send.enqueue(to="a@x", subject="welcome")
    await send.enqueue(to="bad@x")
    await assert_enqueued(app, send, args={"to": "a@x"}, queue="mail")
    await assert_enqueued(app, send, count=2)
    await assert_enqueued(app, send.__soniq_task__.name, args={"subject": "welcome"}, count=1)
    await refute_enqueued(app, send, args={"to": "c@x"})
    assert [j["args"]["to"] for j in await enqueued(app, send)] == ["a@x", "bad@x"]
    assert ran == []

    with pytest.raises(AssertionError) as e:
        await assert_enqueued(app, send, args={"to": "zzz"})
    message = str(e.value)
    assert "found 0" in message and "a@x" in message and "bad@x" in message
    with pytest.raises(AssertionError) as e:
        await refute_enqueued(app, send, args={"to": "a@x"})
    assert "found 1" in str(e.value)

    counts = await drain(app)
    assert counts == {"done": 1, "dead_letter": 1, "cancelled": 0}
    assert sorted(ran) == ["a@x", "bad@x", "bad@x", "bad@x", "bad@x"]
    assert await enqueued(app) == []
    with pytest.raises(AssertionError) as e:
        await assert_enqueued(app, send)
    assert "nothing was enqueued" in str(e.value)


async def test_perform_job_runs_handler_with_context() -> None:
    app = Soniq("postgresql://nobody@127.0.0.1:1/none")

    @app.job(queue="q1", retries=5)
    async def work(x: int, ctx: JobContext) -> dict[str, Any]:
        return {"x": x, "queue": ctx.queue, "attempt": ctx.attempt, "max": ctx.max_attempts}

    @app.job()
    def boom() -> None:
        raise KeyError("nope")

    @app.job(timeout=0.1)
    async def slow() -> None:
        await asyncio.sleep(5)

    assert await perform_job(work, x=3) == {"x": 3, "queue": "q1", "attempt": 1, "max": 6}
    with pytest.raises(KeyError):
        await perform_job(boom)
    with pytest.raises(TimeoutError):
        await perform_job(slow)
    with pytest.raises(SoniqError) as e:
        await perform_job(work, x=1, y=2)
    assert e.value.error_code == "SONIQ_TASK_ARGS_INVALID"
    with pytest.raises(SoniqError):
        await perform_job(work, x={1, 2})


async def test_testing_mode_switches_an_existing_app_and_back() -> None:
    app = Soniq("postgresql://nobody@127.0.0.1:1/none")

    @app.job()
    async def f() -> int:
        return 1

    with testing_mode(app, "inline"):
        job_id = await f.enqueue()
        assert await app.get_result(job_id) == 1
    assert app.testing is None and "enqueue_job" not in app.__dict__
    with pytest.raises(SoniqError) as e:
        Soniq(testing="bogus")
    assert e.value.error_code == "SONIQ_SETTINGS_INVALID"


async def test_enqueue_many_and_task_ref_inline() -> None:
    app = inline_app()
    got: list[int] = []

    @app.job(name="sq")
    async def sq(n: int) -> int:
        got.append(n)
        return n * n

    ids = await app.enqueue_many(sq, [{"n": 1}, {"n": 2}])
    assert got == [1, 2] and [await app.get_result(i) for i in ids] == [1, 4]
    await app.enqueue(task_ref("sq"), args={"n": 3})
    await assert_enqueued(app, "sq", args={"n": 3})


async def test_drain_and_assertions_on_a_database_app(app: Soniq) -> None:
    done: list[int] = []

    @app.job()
    async def step(n: int) -> None:
        done.append(n)
        if n < 3:
            await step.enqueue(n=n + 1)

    @app.job(retries=0)
    async def broken() -> None:
        raise ValueError("x")

    await step.enqueue(n=1)
    await broken.enqueue()
    await assert_enqueued(app, step, args={"n": 1}, count=1)
    await refute_enqueued(app, step, args={"n": 2})
    counts = await drain(app)
    assert counts == {"done": 3, "dead_letter": 1, "cancelled": 0}
    assert done == [1, 2, 3]
    assert await enqueued(app) == []


def test_pytest_plugin_loads_with_p(tmp_path: Any) -> None:
    test = tmp_path / "test_user.py"
    test.write_text(
        "from soniq import Soniq\n"
        "from soniq.testing import assert_enqueued\n"
        "app = Soniq('postgresql://nobody@127.0.0.1:1/none')\n"
        "@app.job()\n"
        "async def hello(name: str) -> str:\n"
        "    return 'hi ' + name\n"
        "async def test_it(soniq_testing):\n"
        "    soniq_testing(app, 'inline')\n"
        "    job_id = await hello.enqueue(name='x')\n"
        "    assert await app.get_result(job_id) == 'hi x'\n"
        "    await assert_enqueued(app, hello, args={'name': 'x'})\n"
    )
    started = time.monotonic()
    base = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(test)]
    opts = ["-o", "asyncio_mode=auto", "--rootdir", str(tmp_path)]
    ok = subprocess.run([*base, *opts, "-p", "soniq.testing"], capture_output=True, text=True,
                        cwd=tmp_path, timeout=60)  # fmt: skip
    assert ok.returncode == 0, ok.stdout + ok.stderr
    missing = subprocess.run([*base, *opts], capture_output=True, text=True, cwd=tmp_path,
                             timeout=60)  # fmt: skip
    assert missing.returncode != 0 and "soniq_testing" in missing.stdout  # never auto-loaded
    assert time.monotonic() - started < 60
    assert ROOT.exists()


async def test_inline_sync_handlers_enqueue_through_app_sync() -> None:
    app = inline_app()
    order: list[str] = []

    @app.job()
    def leaf(n: int) -> int:
        order.append(f"leaf {n}")
        return n

    @app.job()
    def branch() -> None:
        order.append("branch")
        app.sync.enqueue(leaf, n=1)

    @app.job(retries=0)
    def loop(n: int) -> None:
        app.sync.enqueue(loop, n=n + 1)

    try:
        await branch.enqueue()
        assert order == ["branch", "leaf 1"]
        # a sync handler enqueueing itself: stopped by the depth limit, no hang
        first = await asyncio.wait_for(loop.enqueue(n=1), 30)
        jobs = await app.list_jobs(job_name=loop.__soniq_task__.name, limit=1000)
        assert len(jobs) == MAX_DEPTH and (await app.get_job(first) or {})["status"] == "done"
        assert f"nested {MAX_DEPTH} deep" in jobs[0]["last_error"]
    finally:
        await asyncio.to_thread(app.sync.close)
