"""Retry by exception type, expiry, idempotency keys and tags, on the real database."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from soniq import JobStatus, Soniq, SoniqError
from soniq.maintenance import expire_queued, prune


async def columns(app: Soniq, job_id: str, *names: str) -> Any:
    async with app.backend.acquire() as conn:
        return await conn.fetchrow(
            f"SELECT {', '.join(names)} FROM \"{app.schema}\".soniq_jobs WHERE id = $1",
            uuid.UUID(job_id),
        )


async def count_jobs(app: Soniq) -> int:
    async with app.backend.acquire() as conn:
        return int(await conn.fetchval(f'SELECT count(*) FROM "{app.schema}".soniq_jobs'))


# -- retry_on / no_retry_on -------------------------------------------------------------------


async def test_no_retry_on_dead_letters_at_once(app: Soniq) -> None:
    calls: list[str] = []

    @app.job(name="pay", retries=5, no_retry_on=(ValueError,))
    async def pay(kind: str) -> None:
        calls.append(kind)
        raise ValueError("card declined") if kind == "bad" else ConnectionError("flaky")

    bad = await pay.enqueue(kind="bad")
    flaky = await pay.enqueue(kind="flaky")
    await app.run_worker(run_once=True)
    job = await app.get_job(bad)
    assert job is not None and job["status"] == JobStatus.DEAD_LETTER and job["attempts"] == 1
    entry = await app.dead_letter.get_dead_letter_job(bad)
    assert entry is not None and entry.reason == "not_retryable"
    flaky_job = await app.get_job(flaky)
    assert flaky_job is not None and flaky_job["attempts"] == 6  # retried to the end
    stats = await app.dead_letter.get_dead_letter_stats()
    assert stats.by_reason == {"not_retryable": 1, "max_retries_exceeded": 1}


async def test_retry_on_retries_only_the_listed_errors(app: Soniq) -> None:
    @app.job(name="fetch", retries=2, retry_on=(ConnectionError,))
    async def fetch(kind: str) -> None:
        if kind == "conn":
            raise ConnectionResetError("reset")  # a subclass counts
        raise KeyError("missing")

    conn = await fetch.enqueue(kind="conn")
    other = await fetch.enqueue(kind="key")
    await app.run_worker(run_once=True)
    a, b = await app.get_job(conn), await app.get_job(other)
    assert a is not None and a["attempts"] == 3 and a["status"] == JobStatus.DEAD_LETTER
    assert b is not None and b["attempts"] == 1
    entry = await app.dead_letter.get_dead_letter_job(other)
    assert entry is not None and entry.reason == "not_retryable"


async def test_timeouts_stay_retryable(app: Soniq) -> None:
    @app.job(name="slowpoke", retries=1, timeout=0.1, retry_on=(ConnectionError,))
    async def slowpoke() -> None:
        await asyncio.sleep(5)

    job_id = await slowpoke.enqueue()
    await app.run_worker(run_once=True)
    entry = await app.dead_letter.get_dead_letter_job(job_id)
    assert entry is not None and entry.attempts == 2 and entry.reason == "timeout"


@pytest.mark.parametrize("bad", [ValueError("x"), (int,), ("ValueError",), [ValueError, 3]])
async def test_retry_on_must_be_exception_classes(app: Soniq, bad: Any) -> None:
    with pytest.raises(SoniqError) as err:

        @app.job(name="bad_retry", retry_on=bad)
        async def handler() -> None: ...

    assert err.value.error_code == "SONIQ_TASK_INVALID"
    assert "bad_retry" not in app.tasks


# -- expiry ------------------------------------------------------------------------------------


async def test_an_expired_job_never_starts_even_when_claimed_late(app: Soniq) -> None:
    ran: list[int] = []

    @app.job(name="late")
    async def late(n: int) -> None:
        ran.append(n)

    expired = await app.enqueue(late, n=1, expires_at=timedelta(seconds=0.2))
    fresh = await app.enqueue(late, n=2, expires_at=3600)
    plain = await app.enqueue(late, n=3)
    await asyncio.sleep(0.3)  # expiry is a wall-clock deadline: let it pass
    await app.run_worker(run_once=True)
    assert sorted(ran) == [2, 3]
    job = await app.get_job(expired)
    assert job is not None
    assert (job["status"], job["cancel_reason"], job["attempts"]) == (
        JobStatus.CANCELLED,
        "expired",
        0,
    )
    assert (await app.get_job(fresh))["status"] == JobStatus.DONE  # type: ignore[index]
    assert (await app.get_job(plain))["cancel_reason"] is None  # type: ignore[index]


async def test_expires_after_on_the_decorator_and_enqueue_wins(app: Soniq) -> None:
    @app.job(name="short_lived", expires_after=60)
    async def short_lived() -> None: ...

    a = await short_lived.enqueue()
    later = datetime.now(timezone.utc) + timedelta(hours=2)
    b = await app.enqueue(short_lived, expires_at=later)
    row_a, row_b = await columns(app, a, "expires_at"), await columns(app, b, "expires_at")
    now = datetime.now(timezone.utc)
    assert timedelta(seconds=50) < row_a["expires_at"] - now < timedelta(seconds=61)
    assert abs((row_b["expires_at"] - later).total_seconds()) < 0.01


async def test_maintenance_expires_queued_jobs(app: Soniq) -> None:
    @app.job(name="sits")
    async def sits() -> None: ...

    job_id = await app.enqueue(sits, expires_at=0.1)
    keep = await app.enqueue(sits, expires_at=3600)
    await asyncio.sleep(0.2)
    assert await expire_queued(app) == 1
    job = await app.get_job(job_id)
    assert job is not None and job["status"] == JobStatus.CANCELLED
    assert job["cancel_reason"] == "expired"
    assert (await app.get_job(keep))["status"] == JobStatus.QUEUED  # type: ignore[index]


@pytest.mark.parametrize(
    "bad",
    [
        datetime(2030, 1, 1),  # naive
        datetime.now(timezone.utc) - timedelta(seconds=1),
        -5,
        0,
        timedelta(seconds=-1),
        "tomorrow",
        True,
    ],
)
async def test_bad_expires_at_writes_nothing(app: Soniq, bad: Any) -> None:
    @app.job(name="e")
    async def e() -> None: ...

    with pytest.raises(SoniqError) as err:
        await app.enqueue(e, expires_at=bad)
    assert err.value.error_code == "SONIQ_ENQUEUE_INVALID"
    assert await count_jobs(app) == 0


# -- idempotency keys --------------------------------------------------------------------------


async def test_idempotency_key_twenty_concurrent_producers_make_one_job(make_app: Any) -> None:
    producers = [await make_app() for _ in range(4)]
    for p in producers:

        @p.job(name="charge")
        async def charge(order: int) -> None: ...

    ids = await asyncio.gather(
        *(
            producers[i % 4].enqueue("charge", args={"order": 42}, idempotency_key="order:42")
            for i in range(20)
        )
    )
    assert len(set(ids)) == 1
    assert await count_jobs(producers[0]) == 1


async def test_idempotency_key_racing_payloads_exactly_one_wins(make_app: Any) -> None:
    producers = [await make_app() for _ in range(2)]
    for p in producers:

        @p.job(name="charge")
        async def charge(order: int) -> None: ...

    for round_ in range(5):
        key = f"race:{round_}"
        got = await asyncio.gather(
            producers[0].enqueue("charge", args={"order": 1}, idempotency_key=key),
            producers[1].enqueue("charge", args={"order": 2}, idempotency_key=key),
            return_exceptions=True,
        )
        wins = [g for g in got if isinstance(g, str)]
        errors = [g for g in got if isinstance(g, SoniqError)]
        assert len(wins) == 1 and len(errors) == 1, got
        assert errors[0].error_code == "SONIQ_IDEMPOTENCY_CONFLICT"
        assert wins[0] in errors[0].message  # the conflict names the winner's job
    assert await count_jobs(producers[0]) == 5


async def test_idempotency_key_outlives_the_job_and_expires_with_its_ttl(make_app: Any) -> None:
    app = await make_app(idempotency_ttl=0.5)

    @app.job(name="mail")
    async def mail(to: str) -> None: ...

    first = await mail.enqueue(to="a@x", idempotency_key="welcome:a")
    await app.run_worker(run_once=True)  # the job is done: the key still holds
    assert await mail.enqueue(to="a@x", idempotency_key="welcome:a") == first
    with pytest.raises(SoniqError) as err:
        await mail.enqueue(to="b@x", idempotency_key="welcome:a")
    assert err.value.error_code == "SONIQ_IDEMPOTENCY_CONFLICT"
    assert await count_jobs(app) == 1
    await asyncio.sleep(0.6)
    second = await mail.enqueue(to="b@x", idempotency_key="welcome:a")  # ttl over: a new job
    assert second != first
    await asyncio.sleep(0.6)
    await prune(app)
    async with app.backend.acquire() as conn:
        left = await conn.fetchval(f'SELECT count(*) FROM "{app.schema}".soniq_idempotency')
    assert left == 0


async def test_idempotency_key_in_a_rolled_back_transaction_is_free_again(app: Soniq) -> None:
    @app.job(name="k")
    async def k(n: int) -> None: ...

    async with app.backend.acquire() as conn:
        tr = conn.transaction()
        await tr.start()
        await app.enqueue(k, n=1, idempotency_key="tx", connection=conn)
        await tr.rollback()
    job_id = await app.enqueue(k, n=2, idempotency_key="tx")
    assert await count_jobs(app) == 1
    assert (await app.get_job(job_id))["args"] == {"n": 2}  # type: ignore[index]


@pytest.mark.parametrize("bad", ["", 5, None])
async def test_bad_idempotency_key(app: Soniq, bad: Any) -> None:
    @app.job(name="k2")
    async def k2() -> None: ...

    if bad is None:  # with a dedup key: refused, it would be ambiguous
        with pytest.raises(SoniqError) as err:
            await app.enqueue(k2, idempotency_key="x", dedup_key="y")
    else:
        with pytest.raises(SoniqError) as err:
            await app.enqueue(k2, idempotency_key=bad)
    assert err.value.error_code == "SONIQ_ENQUEUE_INVALID"
    assert await count_jobs(app) == 0


# -- tags --------------------------------------------------------------------------------------


async def test_tags_are_kept_and_filter_list_jobs(app: Soniq) -> None:
    @app.job(name="t")
    async def t() -> None: ...

    a = await app.enqueue(t, tags={"tenant": "acme", "kind": "report"})
    b = await app.enqueue(t, tags={"tenant": "acme"})
    await app.enqueue(t, tags={"tenant": "globex", "kind": "report"})
    await app.enqueue(t)
    job = await app.get_job(a)
    assert job is not None and job["tags"] == {"tenant": "acme", "kind": "report"}
    assert (await app.get_job(b))["tags"] == {"tenant": "acme"}  # type: ignore[index]
    acme = await app.list_jobs(tags={"tenant": "acme"})
    assert {j["id"] for j in acme} == {a, b}
    both = await app.list_jobs(tags={"tenant": "acme", "kind": "report"})
    assert [j["id"] for j in both] == [a]
    assert await app.list_jobs(tags={"tenant": "acme"}, status="done") == []


@pytest.mark.parametrize(
    "bad",
    [
        {"n": 1},
        {1: "x"},
        {f"k{i}": "v" for i in range(21)},
        {"k": "v" * 101},
        {"k" * 101: "v"},
        ["a", "b"],
        "tenant=acme",
    ],
)
async def test_bad_tags_write_nothing(app: Soniq, bad: Any) -> None:
    @app.job(name="tb")
    async def tb() -> None: ...

    with pytest.raises(SoniqError) as err:
        await app.enqueue(tb, tags=bad)
    assert err.value.error_code == "SONIQ_ENQUEUE_INVALID"
    assert await count_jobs(app) == 0


async def test_periodic_jobs_take_the_decorators_expires_after(app: Soniq) -> None:
    from soniq.scheduler import Scheduler

    @app.periodic(every=60, name="digest", expires_after=30)
    async def digest() -> None: ...

    @app.periodic(every=60, name="plain_digest")
    async def plain_digest() -> None: ...

    t0 = datetime(2030, 1, 1, tzinfo=timezone.utc)
    job_id = await Scheduler(app).enqueue_tick("digest", t0)
    plain = await Scheduler(app).enqueue_tick("plain_digest", t0)
    assert job_id is not None and plain is not None
    row = await columns(app, job_id, "expires_at")
    left = row["expires_at"] - datetime.now(timezone.utc)
    assert timedelta(seconds=20) < left <= timedelta(seconds=30)
    assert (await columns(app, plain, "expires_at"))["expires_at"] is None
