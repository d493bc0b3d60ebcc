"""Enqueue on real PostgreSQL: every target form, transactions, scheduling, dedup,
enqueue_many, refused input (nothing written), ids, and the one-round-trip promise."""

from __future__ import annotations

import asyncio
import logging
import math
import struct
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit
from zoneinfo import ZoneInfo

import asyncpg
import pytest
from pydantic import BaseModel
from ulid import ULID

from soniq import JobStatus, Soniq, SoniqError, task_ref
from tests.conftest import FAST_SETTINGS, wait_for

MakeApp = Callable[..., Awaitable[Soniq]]


# -- helpers ---------------------------------------------------------------------------------


async def rows(app: Soniq) -> list[dict[str, Any]]:
    """Every job row of the app's schema, oldest id first."""
    async with app.backend.acquire() as conn:
        found = await conn.fetch(f'SELECT * FROM "{app.schema}".soniq_jobs ORDER BY id')
    return [dict(r) for r in found]


async def count(app: Soniq) -> int:
    async with app.backend.acquire() as conn:
        return int(await conn.fetchval(f'SELECT count(*) FROM "{app.schema}".soniq_jobs'))


async def refused(app: Soniq, code: str, call: Awaitable[Any]) -> SoniqError:
    """Await ``call``; assert it raised SoniqError(code) and wrote nothing."""
    before = await rows(app)
    with pytest.raises(SoniqError) as info:
        await call
    assert info.value.error_code == code, str(info.value)
    assert await rows(app) == before
    return info.value


class Listener:
    """A LISTEN connection on the app's wake-up channel that records payloads."""

    def __init__(self, conn: Any, channel: str) -> None:
        self.conn = conn
        self.channel = channel
        self.payloads: list[str] = []

    def _on(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        self.payloads.append(payload)

    @classmethod
    async def start(cls, url: str, schema: str) -> Listener:
        conn = await asyncpg.connect(url)
        self = cls(conn, f"soniq_{schema}")
        await conn.add_listener(self.channel, self._on)
        return self

    async def close(self) -> None:
        await self.conn.close()


# -- every target form -----------------------------------------------------------------------


async def test_decorated_handler_enqueue_forms(app: Soniq) -> None:
    @app.job(name="t.add", queue="math", priority=5, retries=2)
    async def add(x: int, y: int) -> int:
        return x + y

    id1 = await add.enqueue(x=1, y=2)
    id2 = await app.enqueue(add, x=3, y=4)
    id3 = await app.enqueue(add, args={"x": 5}, y=6)
    assert await add(x=1, y=1) == 2  # still callable as a plain function
    for job_id, args in [(id1, {"x": 1, "y": 2}), (id2, {"x": 3, "y": 4}), (id3, {"x": 5, "y": 6})]:
        job = await app.get_job(job_id)
        assert job is not None
        assert job["job_name"] == "t.add"
        assert job["args"] == args
        assert (job["queue"], job["priority"], job["max_attempts"]) == ("math", 5, 3)
        assert job["status"] is JobStatus.QUEUED
        assert job["attempts"] == 0


async def test_default_name_is_module_and_function(app: Soniq) -> None:
    @app.job()
    def plain() -> None:
        return None

    job = await app.get_job(await plain.enqueue())
    assert job is not None
    assert job["job_name"] == f"{__name__}.test_default_name_is_module_and_function.plain"
    assert job["args"] == {}


async def test_instance_defaults_apply(make_app: MakeApp) -> None:
    app = await make_app(max_retries=0, priority=42)

    @app.job(name="t.defaults")
    async def handler() -> None: ...

    job = await app.get_job(await handler.enqueue())
    assert job is not None
    assert (job["queue"], job["priority"], job["max_attempts"]) == ("default", 42, 1)


async def test_per_call_queue_and_priority_override(app: Soniq) -> None:
    @app.job(name="t.over", queue="a", priority=5)
    async def handler() -> None: ...

    job = await app.get_job(await handler.enqueue(queue="b", priority=-3))
    assert job is not None
    assert (job["queue"], job["priority"]) == ("b", -3)


async def test_enqueue_by_registered_name(app: Soniq) -> None:
    @app.job(name="t.named", queue="q1", retries=0)
    async def named(a: str) -> None: ...

    job = await app.get_job(await app.enqueue("t.named", args={"a": "x"}))
    assert job is not None
    assert (job["job_name"], job["queue"], job["args"], job["max_attempts"]) == (
        "t.named",
        "q1",
        {"a": "x"},
        1,
    )


class EmailArgs(BaseModel):
    to: str
    attempts: int = 1


async def test_task_ref_with_model_and_default_queue(app: Soniq) -> None:
    ref = task_ref("emails.send", args_model=EmailArgs, default_queue="emails")
    # not registered here, yet accepted under strict validation
    assert app.settings.enqueue_validation == "strict"
    job = await app.get_job(await app.enqueue(ref, args={"to": "a@b.c", "attempts": "3"}))
    assert job is not None
    assert job["job_name"] == "emails.send"
    assert job["queue"] == "emails"
    assert job["args"] == {"to": "a@b.c", "attempts": 3}  # as the model validated them
    other = await app.get_job(await app.enqueue(ref, args={"to": "x@y.z"}, queue="urgent"))
    assert other is not None and other["queue"] == "urgent"
    plain = await app.get_job(await app.enqueue(task_ref("reports.build"), args={"n": 1}))
    assert plain is not None and plain["queue"] == "default" and plain["args"] == {"n": 1}
    await refused(app, "SONIQ_TASK_ARGS_INVALID", app.enqueue(ref, args={"attempts": 2}))
    await refused(
        app, "SONIQ_TASK_ARGS_INVALID", app.enqueue(ref, args={"to": "a", "attempts": "x"})
    )


def test_task_ref_refuses_bad_names() -> None:
    with pytest.raises(SoniqError) as info:
        task_ref("has space")
    assert info.value.error_code == "SONIQ_TASK_INVALID"
    with pytest.raises(SoniqError):
        task_ref("ok.name", default_queue="bad queue")


# -- refused input: each names the code and writes nothing ------------------------------------


async def test_unknown_name_strict_refused(app: Soniq) -> None:
    err = await refused(app, "SONIQ_UNKNOWN_TASK_NAME", app.enqueue("nope.missing", args={}))
    assert "task_ref" in str(err)  # the message names a fix


async def test_unknown_name_warn_and_none(
    make_app: MakeApp, caplog: pytest.LogCaptureFixture
) -> None:
    warn = await make_app(enqueue_validation="warn")
    with caplog.at_level(logging.WARNING, logger="soniq"):
        job_id = await warn.enqueue("nope.warned", args={"a": 1})
    assert any("nope.warned" in r.getMessage() for r in caplog.records)
    job = await warn.get_job(job_id)
    assert job is not None and job["job_name"] == "nope.warned"

    caplog.clear()
    silent = await make_app(enqueue_validation="none")
    with caplog.at_level(logging.WARNING, logger="soniq"):
        job_id = await silent.enqueue("nope.silent")
    assert not [r for r in caplog.records if "nope.silent" in r.getMessage()]
    assert await silent.get_job(job_id) is not None


class Unserialisable:
    pass


@pytest.mark.parametrize(
    "value",
    [
        datetime(2024, 1, 1, tzinfo=timezone.utc),
        Decimal("1.5"),
        {1, 2},
        b"bytes",
        math.nan,
        math.inf,
        -math.inf,
        Unserialisable(),
        [1, {"deep": Decimal("2")}],
    ],
    ids=["datetime", "decimal", "set", "bytes", "nan", "inf", "-inf", "object", "nested"],
)
async def test_non_json_args_refused(app: Soniq, value: Any) -> None:
    @app.job(name="t.any")
    async def anything(v: Any) -> None: ...

    await refused(app, "SONIQ_TASK_ARGS_INVALID", anything.enqueue(v=value))
    await refused(app, "SONIQ_TASK_ARGS_INVALID", app.enqueue("t.any", args={"v": value}))
    ref = task_ref("t.elsewhere")
    err = await refused(app, "SONIQ_TASK_ARGS_INVALID", app.enqueue(ref, args={"v": value}))
    assert "JSON" in str(err)


async def test_validate_model_rejects_and_coerces(app: Soniq) -> None:
    class Args(BaseModel):
        n: int
        label: str = "x"

    @app.job(name="t.validated", validate=Args)
    async def validated(n: int, label: str) -> None: ...

    err = await refused(app, "SONIQ_TASK_ARGS_INVALID", validated.enqueue(n="many"))
    assert "Args" in str(err)
    await refused(app, "SONIQ_TASK_ARGS_INVALID", validated.enqueue(label="no n"))
    job = await app.get_job(await validated.enqueue(n="7"))
    assert job is not None and job["args"] == {"n": 7, "label": "x"}


async def test_arguments_the_handler_does_not_take_refused(app: Soniq) -> None:
    @app.job(name="t.strict_sig")
    async def sig(a: int) -> None: ...

    await refused(app, "SONIQ_TASK_ARGS_INVALID", sig.enqueue(a=1, b=2))
    await refused(app, "SONIQ_TASK_ARGS_INVALID", app.enqueue(sig, args={"a": 1}, a=2))
    await refused(app, "SONIQ_TASK_ARGS_INVALID", app.enqueue("t.strict_sig", args=[1]))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "queue",
    ["", "has space", "semi;colon", "x" * 101, "-lead", 5, "é"],
)
async def test_invalid_queue_refused(app: Soniq, queue: Any) -> None:
    @app.job(name="t.q")
    async def handler() -> None: ...

    await refused(app, "SONIQ_ENQUEUE_INVALID", handler.enqueue(queue=queue))
    await refused(app, "SONIQ_ENQUEUE_INVALID", app.enqueue(task_ref("t.r"), queue=queue))


@pytest.mark.parametrize("priority", ["high", 1.5, True, 2**31, None.__class__])
async def test_invalid_priority_refused(app: Soniq, priority: Any) -> None:
    @app.job(name="t.p")
    async def handler() -> None: ...

    await refused(app, "SONIQ_ENQUEUE_INVALID", handler.enqueue(priority=priority))


@pytest.mark.parametrize(
    "when",
    [
        datetime(2030, 1, 1, 12, 0),  # naive
        "2030-01-01T00:00:00Z",
        True,
        object(),
        -1,
        -0.001,
        timedelta(seconds=-5),
        math.nan,
        math.inf,
    ],
    ids=["naive", "string", "bool", "object", "neg-int", "neg-float", "neg-delta", "nan", "inf"],
)
async def test_invalid_scheduled_at_refused(app: Soniq, when: Any) -> None:
    @app.job(name="t.s")
    async def handler() -> None: ...

    err = await refused(app, "SONIQ_ENQUEUE_INVALID", handler.enqueue(scheduled_at=when))
    if isinstance(when, datetime):
        assert "aware" in str(err)
    await refused(app, "SONIQ_ENQUEUE_INVALID", app.schedule(handler, when))
    await refused(app, "SONIQ_ENQUEUE_INVALID", app.enqueue_many(handler, [{}], scheduled_at=when))


async def test_non_handler_target_refused(app: Soniq) -> None:
    async def undecorated() -> None: ...

    await refused(app, "SONIQ_ENQUEUE_INVALID", app.enqueue(undecorated))
    await refused(app, "SONIQ_ENQUEUE_INVALID", app.enqueue(42))


async def test_enqueue_before_setup_names_fix(
    pg_url: str, schema_name: str, make_app: MakeApp
) -> None:
    app = Soniq(database_url=pg_url, schema=schema_name)
    try:
        with pytest.raises(SoniqError) as info:
            await app.enqueue(task_ref("t.x"))
        assert "soniq setup" in str(info.value)
    finally:
        await app.close()


# -- scheduling ------------------------------------------------------------------------------


async def db_now(app: Soniq) -> datetime:
    async with app.backend.acquire() as conn:
        value: datetime = await conn.fetchval("SELECT now()")
    return value


async def test_scheduled_at_forms(app: Soniq) -> None:
    @app.job(name="t.later")
    async def later() -> None: ...

    when = datetime(2031, 5, 6, 7, 8, 9, 123000, tzinfo=ZoneInfo("Europe/Paris"))
    job = await app.get_job(await later.enqueue(scheduled_at=when))
    assert job is not None and job["scheduled_at"] == when

    before = datetime.now(timezone.utc)
    by_delta = await app.get_job(await later.enqueue(scheduled_at=timedelta(minutes=10)))
    by_secs = await app.get_job(await later.enqueue(scheduled_at=90))
    by_float = await app.get_job(await later.enqueue(scheduled_at=2.5))
    by_schedule = await app.get_job(await app.schedule(later, timedelta(hours=1)))
    after = datetime.now(timezone.utc)
    for job, delay in [(by_delta, 600), (by_secs, 90), (by_float, 2.5), (by_schedule, 3600)]:
        assert job is not None
        assert before + timedelta(seconds=delay) <= job["scheduled_at"]
        assert job["scheduled_at"] <= after + timedelta(seconds=delay)

    now_job = await app.get_job(await later.enqueue())
    zero_job = await app.get_job(await later.enqueue(scheduled_at=0))
    for job in (now_job, zero_job):
        assert job is not None
        assert job["scheduled_at"] <= await db_now(app)


# -- transactional enqueue -------------------------------------------------------------------


async def test_connection_rollback_and_commit(app: Soniq, pg_url: str) -> None:
    @app.job(name="t.tx")
    async def handler(n: int) -> None: ...

    listener = await Listener.start(pg_url, app.schema)
    conn = await asyncpg.connect(pg_url)  # not created by soniq: no codecs, no pool
    try:
        with pytest.raises(RuntimeError):
            async with conn.transaction():
                rolled = await handler.enqueue(n=1, connection=conn)
                raise RuntimeError("abort")
        assert await app.get_job(rolled) is None
        assert await count(app) == 0

        async with conn.transaction():
            kept = await handler.enqueue(n=2, connection=conn)
            many = await app.enqueue_many(handler, [{"n": 3}, {"n": 4}], connection=conn)
            # invisible to others until commit, and no wake-up yet
            assert await app.get_job(kept) is None
            await asyncio.sleep(0)
            assert listener.payloads == []
        assert await app.get_job(kept) is not None
        assert [j["args"]["n"] for j in await rows(app)] == [2, 3, 4]
        assert [(await app.get_job(i) or {}).get("status") for i in many] == ["queued"] * 2
        await wait_for(lambda: _true(len(listener.payloads) >= 1), timeout=10, message="NOTIFY")
        assert set(listener.payloads) == {"default"}
    finally:
        await conn.close()
        await listener.close()


async def _true(value: bool) -> bool:
    return value


async def test_connection_from_a_foreign_pool(app: Soniq, pg_url: str) -> None:
    @app.job(name="t.pool")
    async def handler(n: int) -> None: ...

    pool = await asyncpg.create_pool(pg_url, min_size=1, max_size=2)
    try:
        async with pool.acquire() as conn:
            with pytest.raises(RuntimeError):
                async with conn.transaction():
                    await app.enqueue("t.pool", args={"n": 1}, connection=conn)
                    raise RuntimeError("abort")
            async with conn.transaction():
                job_id = await app.enqueue("t.pool", args={"n": 2}, connection=conn)
                # the caller's own writes and the job commit together
                await conn.execute("SELECT 1")
        job = await app.get_job(job_id)
        assert job is not None and job["args"] == {"n": 2}
        assert await count(app) == 1
    finally:
        await pool.close()


async def test_refused_enqueue_leaves_caller_transaction_usable(app: Soniq, pg_url: str) -> None:
    conn = await asyncpg.connect(pg_url)
    try:
        async with conn.transaction():
            with pytest.raises(SoniqError):
                await app.enqueue(task_ref("t.x"), args={"v": {1}}, connection=conn)
            assert await conn.fetchval("SELECT 41 + 1") == 42
            await app.enqueue(task_ref("t.x"), args={"v": 1}, connection=conn)
        assert await count(app) == 1
    finally:
        await conn.close()


# -- dedup -----------------------------------------------------------------------------------


async def test_dedup_key_returns_existing_while_active(app: Soniq) -> None:
    @app.job(name="t.dedup")
    async def handler(n: int) -> None: ...

    first = await handler.enqueue(n=1, dedup_key="k1")
    assert await handler.enqueue(n=2, dedup_key="k1") == first
    other = await handler.enqueue(n=3, dedup_key="k2")
    assert other != first
    assert await count(app) == 2
    # processing still holds the key
    await set_status(app, first, "processing")
    assert await handler.enqueue(n=4, dedup_key="k1") == first
    await refused(app, "SONIQ_ENQUEUE_INVALID", handler.enqueue(n=1, dedup_key=""))
    await refused(app, "SONIQ_ENQUEUE_INVALID", handler.enqueue(n=1, dedup_key=5))


async def set_status(app: Soniq, job_id: str, status: str) -> None:
    async with app.backend.acquire() as conn:
        await conn.execute(
            f'UPDATE "{app.schema}".soniq_jobs SET status = $2, finished_at = now() WHERE id = $1',
            uuid.UUID(job_id),
            status,
        )


@pytest.mark.parametrize("end", ["done", "cancelled", "dead_letter"])
async def test_dedup_key_free_once_job_ended(app: Soniq, end: str) -> None:
    @app.job(name="t.dedup_end")
    async def handler() -> None: ...

    first = await handler.enqueue(dedup_key="k")
    if end == "cancelled":
        assert await app.cancel_job(first)
    else:
        await set_status(app, first, end)
    second = await handler.enqueue(dedup_key="k")
    assert second != first
    assert await handler.enqueue(dedup_key="k") == second
    assert await count(app) == 2


async def test_concurrent_dedup_makes_one_job(app: Soniq) -> None:
    @app.job(name="t.race")
    async def handler(n: int) -> None: ...

    for round_ in range(3):
        key = f"race-{round_}"
        ids = await asyncio.gather(*(handler.enqueue(n=i, dedup_key=key) for i in range(20)))
        assert len(set(ids)) == 1
        async with app.backend.acquire() as conn:
            n = await conn.fetchval(
                f'SELECT count(*) FROM "{app.schema}".soniq_jobs WHERE dedup_key = $1', key
            )
        assert n == 1


async def test_unique_keys_by_name_and_arguments(app: Soniq) -> None:
    @app.job(name="t.unique", unique=True)
    async def handler(a: int, b: int = 0) -> None: ...

    first = await handler.enqueue(a=1, b=2)
    assert await app.enqueue(handler, b=2, a=1) == first  # argument order does not matter
    assert await app.enqueue("t.unique", args={"a": 1, "b": 2}) == first
    assert await handler.enqueue(a=1, b=3) != first
    ids = await asyncio.gather(*(handler.enqueue(a=9) for _ in range(20)))
    assert len(set(ids)) == 1
    assert await count(app) == 3
    assert await app.cancel_job(first)
    assert await handler.enqueue(a=1, b=2) != first


# -- enqueue_many ----------------------------------------------------------------------------


async def test_enqueue_many_ids_in_input_order(app: Soniq) -> None:
    @app.job(name="t.many", queue="bulk", priority=7, retries=1)
    async def handler(i: int) -> None: ...

    args = [{"i": i} for i in range(500)]
    ids = await app.enqueue_many(handler, args)
    assert len(ids) == 500 == len(set(ids))
    assert ids == sorted(ids)  # ULIDs: creation order, hence claim order within a batch
    stored = {r["id"]: r for r in await rows(app)}
    for i, job_id in enumerate(ids):
        row = stored[uuid.UUID(job_id)]
        assert row["args"] == {"i": i}
        assert (row["queue"], row["priority"], row["max_attempts"]) == ("bulk", 7, 2)
    assert await app.enqueue_many(handler, []) == []


async def test_enqueue_many_forms_and_options(app: Soniq) -> None:
    @app.job(name="t.many_named")
    async def handler(i: int) -> None: ...

    by_name = await app.enqueue_many("t.many_named", [{"i": 1}], queue="x", priority=3)
    ref = task_ref("t.remote", args_model=EmailArgs, default_queue="mail")
    by_ref = await app.enqueue_many(ref, [{"to": "a"}, {"to": "b", "attempts": "2"}])
    later = await app.enqueue_many(handler, [{"i": 2}], scheduled_at=timedelta(hours=1))
    job = await app.get_job(by_name[0])
    assert job is not None and (job["queue"], job["priority"]) == ("x", 3)
    refs = [await app.get_job(i) for i in by_ref]
    assert [(j["queue"], j["args"]) for j in refs if j] == [
        ("mail", {"to": "a", "attempts": 1}),
        ("mail", {"to": "b", "attempts": 2}),
    ]
    job = await app.get_job(later[0])
    assert job is not None and job["scheduled_at"] > await db_now(app) + timedelta(minutes=59)


async def test_enqueue_many_all_or_nothing_on_bad_item(app: Soniq) -> None:
    class Args(BaseModel):
        i: int

    @app.job(name="t.many_bad", validate=Args)
    async def handler(i: int) -> None: ...

    @app.job(name="t.many_plain")
    async def plain(i: Any) -> None: ...

    good = [{"i": n} for n in range(10)]
    bad_json = [*good[:5], {"i": Decimal(1)}, *good[5:]]
    bad_model = [*good, {"i": "not a number"}]
    not_dict = [*good, 5]
    await refused(app, "SONIQ_TASK_ARGS_INVALID", app.enqueue_many(plain, bad_json))
    await refused(app, "SONIQ_TASK_ARGS_INVALID", app.enqueue_many("t.many_plain", bad_json))
    await refused(app, "SONIQ_TASK_ARGS_INVALID", app.enqueue_many(plain, [*good, {"j": 1}]))
    await refused(app, "SONIQ_TASK_ARGS_INVALID", app.enqueue_many(handler, bad_model))
    await refused(app, "SONIQ_TASK_ARGS_INVALID", app.enqueue_many(handler, not_dict))  # type: ignore[list-item]
    await refused(app, "SONIQ_TASK_ARGS_INVALID", app.enqueue_many(handler, {"i": 1}))  # type: ignore[arg-type]
    await refused(app, "SONIQ_ENQUEUE_INVALID", app.enqueue_many(handler, good, queue="no way"))
    await refused(app, "SONIQ_UNKNOWN_TASK_NAME", app.enqueue_many("t.absent", good))


async def test_enqueue_many_is_one_statement_all_or_nothing(app: Soniq) -> None:
    """A row the database refuses (here: a trigger) fails the whole batch."""
    async with app.backend.acquire() as conn:
        await conn.execute(f"""
            CREATE FUNCTION "{app.schema}".refuse_boom() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN RAISE EXCEPTION 'boom refused'; END $$;
            CREATE TRIGGER refuse_boom BEFORE INSERT ON "{app.schema}".soniq_jobs
            FOR EACH ROW WHEN (NEW.args ? 'boom') EXECUTE FUNCTION "{app.schema}".refuse_boom();
        """)
    items = [{"i": 1}, {"i": 2}, {"boom": True}, {"i": 4}]
    with pytest.raises(asyncpg.RaiseError, match="boom refused"):
        await app.enqueue_many(task_ref("t.batch"), items)
    assert await count(app) == 0
    assert len(await app.enqueue_many(task_ref("t.batch"), [items[0], items[1]])) == 2


# -- ids ---------------------------------------------------------------------------------------


async def test_ids_are_ulids_in_uuid_form_sorted_by_creation(app: Soniq) -> None:
    @app.job(name="t.ids")
    async def handler() -> None: ...

    start = datetime.now(timezone.utc)
    ids = [await handler.enqueue() for _ in range(50)]
    ids += await app.enqueue_many(handler, [{}] * 50)
    ids += [await app.enqueue(task_ref("t.ids"))]
    end = datetime.now(timezone.utc)
    for job_id in ids:
        assert str(uuid.UUID(job_id)) == job_id  # canonical UUID text
        created = ULID.from_uuid(uuid.UUID(job_id)).datetime
        assert start - timedelta(milliseconds=1) <= created <= end + timedelta(milliseconds=1)
    assert ids == sorted(ids)
    async with app.backend.acquire() as conn:
        col_type = await conn.fetchval(
            "SELECT data_type FROM information_schema.columns "
            "WHERE table_schema = $1 AND table_name = 'soniq_jobs' AND column_name = 'id'",
            app.schema,
        )
        db_order = await conn.fetch(f'SELECT id FROM "{app.schema}".soniq_jobs ORDER BY id')
    assert col_type == "uuid"
    assert [str(r["id"]) for r in db_order] == ids


# -- one round trip ----------------------------------------------------------------------------


class CountingProxy:
    """A TCP proxy in front of PostgreSQL that counts the client's round trips.

    Every round trip ends in a Sync ('S') message of the extended protocol or is one simple
    Query ('Q') message; each gets its own ReadyForQuery. Counting them counts round trips,
    including any a pool makes behind the caller's back (such as a reset on release).
    """

    def __init__(self, upstream_url: str) -> None:
        self.upstream_url = upstream_url
        self.round_trips = 0
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def _open_upstream(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        parts = urlsplit(self.upstream_url)
        params = dict(parse_qsl(parts.query))
        host = params.get("host") or parts.hostname or "localhost"
        port = int(params.get("port") or parts.port or 5432)
        if host.startswith("/"):
            return await asyncio.open_unix_connection(f"{host}/.s.PGSQL.{port}")
        return await asyncio.open_connection(host, port)

    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        parts = urlsplit(self.upstream_url)
        params = [(k, v) for k, v in parse_qsl(parts.query) if k not in {"host", "port", "sslmode"}]
        params.append(("sslmode", "disable"))
        userinfo = quote(parts.username or "postgres", safe="")
        if parts.password:
            userinfo += ":" + quote(parts.password, safe="")
        return f"postgresql://{userinfo}@127.0.0.1:{port}{parts.path}?{urlencode(params)}"

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self.url()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await self._open_upstream()
        back = asyncio.create_task(self._pipe(up_reader, writer))
        self._tasks.add(back)
        try:
            await self._client_to_server(reader, up_writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            up_writer.close()
            back.cancel()
            writer.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def _client_to_server(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        while True:  # startup messages: length, then code; SSL/GSS requests come first
            head = await reader.readexactly(8)
            length, code = struct.unpack("!ii", head)
            body = await reader.readexactly(length - 8)
            writer.write(head + body)
            await writer.drain()
            if code not in (80877103, 80877104):
                break
        while True:
            kind = await reader.readexactly(1)
            (length,) = struct.unpack("!i", await reader.readexactly(4))
            body = await reader.readexactly(length - 4)
            if kind in (b"S", b"Q"):
                self.round_trips += 1
            writer.write(kind + struct.pack("!i", length) + body)
            await writer.drain()


@pytest.fixture
async def proxied_app(
    pg_url: str, schema_name: str, make_app: MakeApp
) -> AsyncIterator[tuple[Soniq, CountingProxy]]:
    """An app whose every byte to PostgreSQL passes a round-trip counter."""
    proxy = CountingProxy(pg_url)
    url = await proxy.start()
    app = Soniq(database_url=url, schema=schema_name, **FAST_SETTINGS)
    try:
        await app.setup()
        yield app, proxy
    finally:
        await app.close()
        await proxy.close()


async def measure(proxy: CountingProxy, call: Callable[[], Awaitable[Any]]) -> int:
    before = proxy.round_trips
    await call()
    return proxy.round_trips - before


async def test_enqueue_is_one_round_trip(proxied_app: tuple[Soniq, CountingProxy]) -> None:
    app, proxy = proxied_app

    @app.job(name="t.rt")
    async def handler(n: int) -> None: ...

    for n in range(3):  # warm up: pool connections and their prepared statements
        await handler.enqueue(n=n)
        await app.enqueue_many(handler, [{"n": n}])
    for n in range(20):
        assert await measure(proxy, lambda n=n: handler.enqueue(n=n)) == 1
    assert await measure(proxy, lambda: app.enqueue(task_ref("t.rt"), args={"n": 1})) == 1
    assert (
        await measure(proxy, lambda: app.enqueue_many(handler, [{"n": i} for i in range(1000)]))
        == 1
    )
    # a duplicate costs one more (the look-up of the holder's id), never more
    await handler.enqueue(n=0, dedup_key="d")
    assert await measure(proxy, lambda: handler.enqueue(n=0, dedup_key="d")) <= 2
    # refused input never reaches the database
    before = proxy.round_trips
    with pytest.raises(SoniqError):
        await handler.enqueue(n=Decimal(1))
    assert proxy.round_trips == before


async def test_enqueue_on_callers_connection_is_one_statement(app: Soniq, pg_url: str) -> None:
    @app.job(name="t.rt_conn")
    async def handler(n: int) -> None: ...

    conn = await asyncpg.connect(pg_url)
    logged: list[str] = []
    try:
        conn.add_query_logger(lambda q: logged.append(q.query))
        async with conn.transaction():
            # first use of each statement on a fresh connection prepares it (and asyncpg may
            # introspect types); count the steady state
            await handler.enqueue(n=0, connection=conn)
            await app.enqueue_many(handler, [{"n": 0}], connection=conn)
            await asyncio.sleep(0)  # asyncpg calls query loggers with loop.call_soon
            logged.clear()
            for n in range(10):
                await handler.enqueue(n=n, connection=conn)
            await app.enqueue_many(handler, [{"n": 1}, {"n": 2}], connection=conn)
        await asyncio.sleep(0)
        soniq_statements = [q for q in logged if "soniq_jobs" in q]
        assert len(soniq_statements) == 11, "\n---\n".join(logged)
        assert [q for q in logged if "soniq_jobs" not in q] == ["COMMIT;"]  # the caller's own
    finally:
        await conn.close()
