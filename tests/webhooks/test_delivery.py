"""Delivery to a real receiver on 127.0.0.1 by an in-process worker: Standard Webhooks interop,
rotation, retries with a stable webhook-id, nothing lost while the receiver is down."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter
from typing import Any

import pytest
import standardwebhooks

from soniq import JobContext, Soniq, SoniqError, task_ref
from soniq.webhooks import sign, verify
from tests.conftest import wait_for
from tests.webhooks.receiver import Receiver


def _both_verify(body: bytes, headers: dict[str, str], secret: str) -> dict[str, Any]:
    """Verify with the reference package and with soniq; both must agree."""
    ref = standardwebhooks.Webhook(secret).verify(body, headers)
    ours = verify(body, headers, secret)
    assert ref == ours
    return ours


def _both_fail(body: bytes, headers: dict[str, str], secret: str) -> str:
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        standardwebhooks.Webhook(secret).verify(body, headers)
    with pytest.raises(SoniqError) as err:
        verify(body, headers, secret)
    assert err.value.error_code == "SONIQ_WEBHOOK_INVALID"
    return err.value.message


async def _received(receiver: Receiver, n: int) -> bool:
    return len(receiver.requests) >= n


async def test_lifecycle_events_interoperate_with_standardwebhooks(
    hooks_app: Soniq, receiver: Receiver, run_worker: Any
) -> None:
    app = hooks_app
    hook = await app.webhooks.add(receiver.url)
    fails: Counter[str] = Counter()

    @app.job(name="ok")
    async def ok(n: int) -> int:
        return n

    @app.job(name="flaky", retries=1)
    async def flaky(ctx: JobContext) -> None:
        if ctx.attempt == 1:
            raise RuntimeError("first attempt fails")

    @app.job(name="broken", retries=0)
    async def broken() -> None:
        fails["broken"] += 1
        raise ValueError("always")

    ok_id = await ok.enqueue(n=1)  # type: ignore[attr-defined]
    flaky_id = await flaky.enqueue()  # type: ignore[attr-defined]
    broken_id = await broken.enqueue()  # type: ignore[attr-defined]
    cancelled_id = await ok.enqueue(n=2, scheduled_at=3600)  # type: ignore[attr-defined]
    assert await app.cancel_job(cancelled_id)
    run_worker(app, concurrency=4)
    await wait_for(lambda: _received(receiver, 5), timeout=30, message="5 events")
    await asyncio.sleep(0.3)  # (a sixth would be a bug: give it a moment to show up)
    assert len(receiver.requests) == 5
    events = []
    for req in receiver.requests:
        parsed = _both_verify(req.body, req.headers, hook["secret"])
        assert set(parsed) == {"type", "timestamp", "data"}
        assert parsed["timestamp"].endswith("Z")
        events.append((parsed["type"], parsed["data"]["id"]))
        assert req.headers["content-type"] == "application/json"
        assert len(req.headers["webhook-signature"].split()) == 1
    assert sorted(events) == sorted([
        ("job.succeeded", ok_id), ("job.failed", flaky_id), ("job.succeeded", flaky_id),
        ("job.dead_lettered", broken_id), ("job.cancelled", cancelled_id),
    ])  # fmt: skip
    done = next(
        json.loads(r.body) for r in receiver.requests if json.loads(r.body)["data"]["id"] == ok_id
    )
    assert done["data"]["status"] == "done" and done["data"]["job_name"] == "ok"
    assert done["data"]["args"] == {"n": 1} and "result" not in done["data"]

    # one byte changed, a stale timestamp, the wrong secret: both verifiers refuse
    req = receiver.requests[0]
    altered = req.body[:-2] + bytes([req.body[-2] ^ 1]) + req.body[-1:]
    assert "bad signature" in _both_fail(altered, req.headers, hook["secret"])
    old = int(time.time()) - 600
    old_sig = sign([hook["secret"]], req.headers["webhook-id"], old, req.body)
    stale = {**req.headers, "webhook-timestamp": str(old), "webhook-signature": old_sig}
    assert "stale timestamp" in _both_fail(req.body, stale, hook["secret"])
    other = (await app.webhooks.add("http://127.0.0.1:9/"))["secret"]
    assert "bad signature" in _both_fail(req.body, req.headers, other)
    missing = {k: v for k, v in req.headers.items() if k != "webhook-signature"}
    with pytest.raises(SoniqError, match="missing header 'webhook-signature'"):
        verify(req.body, missing, hook["secret"])
    assert verify(req.body, req.headers, [other, hook["secret"]])["type"]

    attempts = await app.webhooks.deliveries(webhook_id=hook["id"])
    assert len(attempts) == 5 and all(a["status_code"] == 200 for a in attempts)
    assert {a["message_id"] for a in attempts} == set(receiver.ids())


async def test_rotation_signs_with_both_secrets_during_the_grace_window(
    hooks_app: Soniq, receiver: Receiver, run_worker: Any
) -> None:
    app = hooks_app
    hook = await app.webhooks.add(receiver.url, events=["job.succeeded"])

    @app.job(name="ok")
    async def ok() -> None:
        return None

    run_worker(app, concurrency=2)
    new = await app.webhooks.rotate_secret(hook["id"], grace=3)
    await ok.enqueue()  # type: ignore[attr-defined]
    await wait_for(lambda: _received(receiver, 1), timeout=20, message="delivery in grace")
    req = receiver.requests[0]
    assert len(req.headers["webhook-signature"].split()) == 2
    _both_verify(req.body, req.headers, hook["secret"])
    _both_verify(req.body, req.headers, new)

    async def grace_over() -> bool:
        return not (await app.webhooks.list())[0]["rotating"]

    await wait_for(grace_over, timeout=10, message="grace window over")
    await ok.enqueue()  # type: ignore[attr-defined]
    await wait_for(lambda: _received(receiver, 2), timeout=20, message="delivery after grace")
    req = receiver.requests[1]
    assert len(req.headers["webhook-signature"].split()) == 1
    _both_verify(req.body, req.headers, new)
    _both_fail(req.body, req.headers, hook["secret"])


async def test_failing_receiver_gets_retries_with_the_same_webhook_id(
    hooks_app: Soniq, receiver: Receiver, run_worker: Any
) -> None:
    app = hooks_app
    receiver.answer = lambda req, n: 500 if n < 3 else 200
    hook = await app.webhooks.add(receiver.url)

    @app.job(name="ok")
    async def ok() -> None:
        return None

    job_id = await ok.enqueue()  # type: ignore[attr-defined]
    run_worker(app, concurrency=2)
    await wait_for(lambda: _received(receiver, 4), timeout=30, message="4 requests")
    assert len(set(receiver.ids())) == 1
    for req in receiver.requests:
        assert _both_verify(req.body, req.headers, hook["secret"])["data"]["id"] == job_id

    async def four_attempts() -> list[dict[str, Any]]:
        rows = await app.webhooks.deliveries()
        return rows if len(rows) == 4 else []

    rows = await wait_for(four_attempts, timeout=10, message="4 recorded attempts")
    assert [r["attempt"] for r in rows] == [4, 3, 2, 1]
    assert [r["status_code"] for r in rows] == [200, 500, 500, 500]
    assert rows[-1]["error"] == "receiver answered HTTP 500" and rows[0]["error"] is None
    assert {r["message_id"] for r in rows} == set(receiver.ids())
    assert all(r["event"] == "job.succeeded" and r["job_id"] == job_id for r in rows)
    assert all(r["duration"] >= 0 and r["time"] is not None for r in rows)

    async def recorded() -> Any:  # the outcome is written just after the handler returns
        job = await app.get_job(rows[0]["message_id"])
        return job if job is not None and job["status"] == "done" else None

    delivery = await wait_for(recorded, timeout=20, message="the delivery job done")
    assert delivery["attempts"] == 4


async def test_receiver_down_then_up_loses_nothing(
    hooks_app: Soniq, receiver: Receiver, run_worker: Any
) -> None:
    app = hooks_app
    await receiver.stop()  # down: connections are refused
    hook = await app.webhooks.add(receiver.url)

    @app.job(name="ok")
    async def ok(i: int) -> int:
        return i

    ids = await app.enqueue_many(ok, [{"i": i} for i in range(200)])
    run_worker(app, concurrency=8)

    async def refused() -> bool:
        rows = await app.webhooks.deliveries(limit=1000)
        return len({r["message_id"] for r in rows if r["status_code"] is None}) >= 200

    await wait_for(refused, timeout=60, message="every event refused at least once")
    assert len(receiver.requests) == 0
    await receiver.start()  # up again, same port
    await wait_for(lambda: _received(receiver, 200), timeout=90, interval=0.2,
                   message="200 events after the receiver came back")  # fmt: skip
    await asyncio.sleep(0.5)
    seen = Counter(receiver.ids())
    duplicates = sum(n - 1 for n in seen.values())
    assert len(seen) == 200 and duplicates == 0, f"{duplicates} duplicate deliveries"
    jobs = {
        _both_verify(r.body, r.headers, hook["secret"])["data"]["id"] for r in receiver.requests
    }
    assert jobs == set(ids)


async def test_load_every_event_arrives_once(
    hooks_app: Soniq, receiver: Receiver, run_worker: Any
) -> None:
    """2,000 jobs with one subscription (benchmarks/ drains 10,000: `--only webhooks`)."""
    app = hooks_app
    hook = await app.webhooks.add(receiver.url, events=["job.succeeded"])

    @app.job(name="ok")
    async def ok(i: int) -> int:
        return i

    total = 2000
    ids = await app.enqueue_many(ok, [{"i": i} for i in range(total)])
    run_worker(app, concurrency=10)
    # ~10 s alone (PostgreSQL 15 over TCP and 18); inside pytest-timeout's 120 s
    await wait_for(lambda: _received(receiver, total), timeout=90, interval=0.2,
                   message=f"{total} events")  # fmt: skip
    seen = Counter(receiver.ids())
    assert len(seen) == total and max(seen.values()) == 1
    sample = receiver.requests[:: total // 20]
    assert all(_both_verify(r.body, r.headers, hook["secret"]) for r in sample)
    got = {verify(r.body, r.headers, hook["secret"])["data"]["id"] for r in receiver.requests}
    assert got == set(ids)


async def test_without_httpx_the_delivery_fails_naming_the_extra(
    hooks_app: Soniq, receiver: Receiver, run_worker: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = hooks_app
    monkeypatch.setitem(sys.modules, "httpx", None)  # `import httpx` raises ImportError
    app.webhooks.deliverer._client = None
    await app.webhooks.add(receiver.url)
    job_id = await app.enqueue(task_ref("elsewhere.task"), args={}, queue="elsewhere")
    assert await app.cancel_job(job_id)
    run_worker(app, concurrency=2, queues=["soniq.webhooks"])

    async def failed_once() -> Any:
        jobs = await app.list_jobs(queue="soniq.webhooks")
        return jobs if jobs and jobs[0]["last_error"] else None

    (delivery,) = await wait_for(failed_once, timeout=20, message="a failed delivery attempt")
    assert "pip install 'soniq[webhooks]'" in delivery["last_error"]
    assert receiver.requests == []
