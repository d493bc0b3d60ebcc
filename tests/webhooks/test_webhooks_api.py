"""app.webhooks on the real database: bad input writes nothing, the trigger exists exactly
while a subscription does, secrets are never listed, every path that changes a job's state
records its event in the same transaction."""

from __future__ import annotations

from typing import Any

import pytest

from soniq import Soniq, SoniqError, task_ref

TRIGGER_SQL = """SELECT count(*) FROM pg_trigger
WHERE tgname = 'soniq_webhook_events' AND tgrelid = '"{s}".soniq_jobs'::regclass"""


async def _fetchval(app: Soniq, sql: str, *args: Any) -> Any:
    async with app.backend.acquire() as conn:
        return await conn.fetchval(sql.replace("{s}", app.schema), *args)


async def _trigger(app: Soniq) -> int:
    return int(await _fetchval(app, TRIGGER_SQL))


async def _deliveries(app: Soniq) -> list[Any]:
    async with app.backend.acquire() as conn:
        return list(await conn.fetch(
            f"""SELECT args FROM "{app.schema}".soniq_jobs
                WHERE queue = 'soniq.webhooks' ORDER BY id"""
        ))  # fmt: skip


@pytest.mark.parametrize(
    "kwargs",
    [
        {"url": "ftp://example.com/hook"},
        {"url": "example.com/hook"},
        {"url": "http:///nohost"},
        {"url": "https://example.com/hook", "events": ["job.exploded"]},
        {"url": "https://example.com/hook", "events": []},
        {"url": "https://example.com/hook", "tasks": []},
    ],
)
async def test_bad_add_raises_and_writes_nothing(app: Soniq, kwargs: dict[str, Any]) -> None:
    url = kwargs.pop("url")
    with pytest.raises(SoniqError) as err:
        await app.webhooks.add(url, **kwargs)
    assert err.value.error_code == "SONIQ_WEBHOOK_INVALID"
    assert await app.webhooks.list() == []
    assert await _trigger(app) == 0


async def test_bad_grace_raises_and_keeps_the_secret(app: Soniq) -> None:
    hook = await app.webhooks.add("https://example.com/hook")
    for grace in (-1, -0.5, "10", True, float("nan")):
        with pytest.raises(SoniqError) as err:
            await app.webhooks.rotate_secret(hook["id"], grace=grace)  # type: ignore[arg-type]
        assert err.value.error_code == "SONIQ_WEBHOOK_INVALID"
    sql = 'SELECT secret, prev_secret FROM "{s}".soniq_webhooks'
    async with app.backend.acquire() as conn:
        row = await conn.fetchrow(sql.replace("{s}", app.schema))
    assert row["secret"] == hook["secret"] and row["prev_secret"] is None
    with pytest.raises(SoniqError) as err:
        await app.webhooks.rotate_secret("00000000-0000-0000-0000-000000000000")
    assert err.value.error_code == "SONIQ_NOT_FOUND"


async def test_add_list_remove_and_the_trigger_follows(app: Soniq) -> None:
    assert await _trigger(app) == 0
    a = await app.webhooks.add("https://a.example/hook")
    assert a["secret"].startswith("whsec_") and a["events"] == [
        "job.succeeded", "job.failed", "job.dead_lettered", "job.cancelled",
        "workflow.succeeded", "workflow.failed",
    ]  # fmt: skip
    assert await _trigger(app) == 1
    b = await app.webhooks.add("http://b.example/hook", events=["job.failed"], queues=["q"])
    assert await _trigger(app) == 1
    listed = await app.webhooks.list()
    assert [h["id"] for h in listed] == [a["id"], b["id"]]
    assert all("secret" not in h and a["secret"] not in repr(h) for h in listed)
    assert listed[1]["events"] == ["job.failed"] and listed[1]["queues"] == ["q"]
    assert await app.webhooks.remove(a["id"]) is True
    assert await app.webhooks.remove(a["id"]) is False
    assert await app.webhooks.remove("not-an-id") is False
    assert await _trigger(app) == 1
    assert await app.webhooks.remove(b["id"]) is True
    assert await _trigger(app) == 0


async def test_rotate_secret_keeps_the_old_one_for_the_grace_window(app: Soniq) -> None:
    hook = await app.webhooks.add("https://example.com/hook")
    new = await app.webhooks.rotate_secret(hook["id"], grace=60)
    assert new.startswith("whsec_") and new != hook["secret"]
    (listed,) = await app.webhooks.list()
    assert listed["rotating"] is True and listed["grace_until"] is not None
    assert new not in repr(listed) and hook["secret"] not in repr(listed)
    await app.webhooks.rotate_secret(hook["id"], grace=0)
    (listed,) = await app.webhooks.list()
    assert listed["rotating"] is False


async def test_every_path_records_its_event_and_a_rollback_records_none(app: Soniq) -> None:
    """Paths without a worker: cancel, manual SQL, a rescue-like requeue, and a transaction
    that rolls back (nothing) next to one that commits (its events)."""
    await app.webhooks.add("https://example.com/hook")
    t = f'"{app.schema}".soniq_jobs'
    async with app.backend.acquire() as conn:
        tr = conn.transaction()
        await tr.start()
        gone = await app.enqueue(task_ref("some.task"), args={}, connection=conn)
        await conn.execute(f"UPDATE {t} SET status = 'done' WHERE id = $1::uuid", gone)
        assert await conn.fetchval(f"SELECT count(*) FROM {t} WHERE queue = 'soniq.webhooks'") == 1
        await tr.rollback()
    assert await _deliveries(app) == []
    assert await app.get_job(gone) is None

    cancelled = await app.enqueue(task_ref("some.task"), args={})
    assert await app.cancel_job(cancelled)
    done = await app.enqueue(task_ref("some.task"), args={})
    retried = await app.enqueue(task_ref("some.task"), args={})
    snoozed = await app.enqueue(task_ref("some.task"), args={})
    async with app.backend.acquire() as conn:
        for jid in (retried, snoozed):  # as a claim leaves them
            await conn.execute(
                f"UPDATE {t} SET status = 'processing', attempts = 1 WHERE id = $1::uuid", jid
            )
        await conn.execute(f"UPDATE {t} SET status = 'done' WHERE id = $1::uuid", done)
        # a rescue (or a failed attempt): back to queued with the attempt spent
        await conn.execute(f"UPDATE {t} SET status = 'queued' WHERE id = $1::uuid", retried)
        # a snooze or a shutdown return refunds the attempt: no event
        await conn.execute(
            f"UPDATE {t} SET status = 'queued', attempts = 0 WHERE id = $1::uuid", snoozed
        )
        await conn.execute(f"UPDATE {t} SET status = 'dead_letter' WHERE id = $1::uuid", retried)
    got = [(r["args"]["event"], r["args"]["job"]["id"]) for r in await _deliveries(app)]
    assert got == [
        ("job.cancelled", cancelled),
        ("job.succeeded", done),
        ("job.failed", retried),
        ("job.dead_lettered", retried),
    ]
    # delivery jobs never produce events of their own
    async with app.backend.acquire() as conn:
        await conn.execute(f"UPDATE {t} SET status = 'done' WHERE queue = 'soniq.webhooks'")
    assert len(await _deliveries(app)) == 4


async def test_filters_by_event_task_and_queue(app: Soniq) -> None:
    await app.webhooks.add("https://a.example/", events=["job.succeeded"], tasks=["keep"])
    await app.webhooks.add("https://b.example/", queues=["fast"])
    t = f'"{app.schema}".soniq_jobs'
    ids = [
        await app.enqueue(task_ref("keep"), args={}),
        await app.enqueue(task_ref("other"), args={}),
        await app.enqueue(task_ref("other"), args={}, queue="fast"),
    ]
    async with app.backend.acquire() as conn:
        await conn.execute(f"UPDATE {t} SET status = 'done' WHERE id = ANY($1::uuid[])", ids)
        await conn.execute(f"UPDATE {t} SET status = 'queued' WHERE queue <> 'soniq.webhooks'")
        await conn.execute(f"UPDATE {t} SET status = 'cancelled' WHERE queue <> 'soniq.webhooks'")
    hooks = {h["url"]: h["id"] for h in await app.webhooks.list()}
    got = sorted(
        (r["args"]["webhook"] == hooks["https://a.example/"], r["args"]["event"],
         r["args"]["job"]["id"])
        for r in await _deliveries(app)
    )  # fmt: skip
    assert got == sorted([
        (True, "job.succeeded", ids[0]),
        (False, "job.succeeded", ids[2]),
        (False, "job.cancelled", ids[2]),
    ])  # fmt: skip


async def test_workflow_events_fire_once_per_workflow_end(app: Soniq) -> None:
    """The two last steps of a workflow end in two transactions at once: one event."""
    import asyncio
    import uuid

    hook = await app.webhooks.add(
        "https://example.com/", events=["workflow.succeeded", "workflow.failed"]
    )
    assert hook["events"] == ["workflow.succeeded", "workflow.failed"]
    wf = app.workflow(name="two")
    a, b = wf.add(task_ref("t.a")), wf.add(task_ref("t.b"))
    await wf.enqueue()
    table = f'"{app.schema}".soniq_jobs'
    db = await app.database()
    async with db.acquire() as c1, db.acquire() as c2:
        t1, t2 = c1.transaction(), c2.transaction()
        await t1.start()
        await t2.start()
        await c1.execute(f"UPDATE {table} SET status = 'done' WHERE id = $1", uuid.UUID(a.id))
        second = asyncio.ensure_future(
            c2.execute(f"UPDATE {table} SET status = 'done' WHERE id = $1", uuid.UUID(b.id))
        )
        await asyncio.sleep(0.2)  # the second waits on the workflow's row lock
        assert not second.done()
        await t1.commit()
        await asyncio.wait_for(second, 10)
        await t2.commit()
        events = await c1.fetch(
            f"SELECT args->>'event' AS event, args->'job'->>'id' AS wf FROM {table} "
            "WHERE queue = 'soniq.webhooks' AND args->>'event' LIKE 'workflow.%'"
        )
    assert [(e["event"], e["wf"]) for e in events] == [("workflow.succeeded", wf.id)]
    got = await app.get_workflow(wf.id)
    assert got is not None and got["status"] == "done"

    failing = app.workflow()
    x = failing.add(task_ref("t.x"))
    failing.add(task_ref("t.y"), after=[x])
    await failing.enqueue()
    async with db.acquire() as c:
        await c.execute(f"UPDATE {table} SET status = 'dead_letter' WHERE id = $1", uuid.UUID(x.id))
        failed = await c.fetchval(
            f"SELECT count(*) FROM {table} WHERE args->>'event' = 'workflow.failed' "
            "AND args->'job'->>'id' = $1",
            failing.id,
        )
    assert failed == 1


async def test_concurrent_add_and_remove_keep_the_trigger_in_step(app: Soniq) -> None:
    import asyncio

    async def churn(i: int) -> None:
        for _ in range(5):
            hook = await app.webhooks.add(f"https://h{i}.example/")
            assert await app.webhooks.remove(hook["id"])

    keeper = await app.webhooks.add("https://keep.example/")
    await asyncio.gather(*(churn(i) for i in range(6)))
    assert await _trigger(app) == 1 and len(await app.webhooks.list()) == 1
    await asyncio.gather(*(churn(i) for i in range(3)), app.webhooks.remove(keeper["id"]))
    assert await _trigger(app) == 0 and await app.webhooks.list() == []
