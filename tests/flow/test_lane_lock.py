"""Simple lanes (a task whose only limit is max_concurrency or max_concurrency_per_key) keep
no counter: a claim holds the lane's advisory lock and counts its jobs in `processing` in a
statement that starts after the lock (soniq/limits.py). These tests drive the claim
statement from several connections at once, at the SQL level, where the races are."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest

from soniq import Soniq, migrate
from soniq.limits import WorkerGates
from soniq.outcomes import EMPTY_BATCH, Batch

RING = ["key:t.lane"]
CAP = ["task:t.cap"]


def _done(rows: list[Any]) -> Batch:
    ids = [r["id"] for r in rows]
    return Batch(done_ids=ids, done_results=[None] * len(ids), other=[], requeue_now=False)


async def _claim(
    app: Soniq, conn: Any, worker: str, n: int, batch: Batch = EMPTY_BATCH, ring: list[str] = RING
) -> list[Any]:
    db = await app.database()
    return await db.job_report_and_claim_gated(  # type: ignore[no-any-return]
        conn, worker, n, batch, ring, None, [], ring, None
    )


async def _capped(app: Soniq) -> None:
    """Task t.cap (max_concurrency=3, lane CAP) with 6 queued jobs."""

    @app.job(name="t.cap", max_concurrency=3)
    async def cap() -> None: ...

    await _register(app, ["a"])
    await app.enqueue_many("t.cap", [{} for _ in range(6)])


async def _register(app: Soniq, workers: list[str]) -> None:
    @app.job(name="t.lane", max_concurrency_per_key=1)
    async def lane() -> None: ...

    async with app.backend.acquire() as conn:
        for w in workers:
            await conn.execute(
                f'INSERT INTO "{app.schema}".soniq_workers (id, hostname, pid, concurrency, '
                "heartbeat_at) VALUES ($1, 'h', 1, 10, now())",
                w,
            )


async def test_a_lane_held_by_an_uncommitted_claim_is_skipped(app: Soniq) -> None:
    await _register(app, ["a", "b"])
    for _ in range(3):
        await app.enqueue("t.lane", concurrency_key="acme")
    async with app.backend.acquire() as a, app.backend.acquire() as b:
        async with a.transaction():
            mine = await _claim(app, a, "a", 5)
            assert len(mine) == 1  # one at a time in the lane
            # a has not committed: b's snapshot shows no job of the lane running, but the
            # lane is a's until it commits
            assert await _claim(app, b, "b", 5) == []
        assert await _claim(app, b, "b", 5) == []  # committed: its job runs
        limits = {(r["scope"], r["key"]): r for r in await (await app.database()).limit_list()}
        assert limits[("key:t.lane", "acme")]["running"] == 1
        async with app.backend.acquire() as c:  # the lane row itself is never written
            raw = await c.fetchval(
                f'SELECT running FROM "{app.schema}".soniq_limits WHERE key = $1', "acme"
            )
        assert raw == 0
        await (await app.database()).job_report(a, "a", _done(mine))
        assert len(await _claim(app, b, "b", 5)) == 1  # a's job ended: the slot is free


async def test_claimers_racing_on_few_lanes_never_run_two_of_one_key(app: Soniq) -> None:
    workers = [f"w{i}" for i in range(6)]
    await _register(app, workers)
    keys = ["k0", "k1", "k2", "k3"]
    for k in keys:
        await app.enqueue_many("t.lane", [{} for _ in range(150)], concurrency_key=k)
    overlaps: list[list[Any]] = []
    claimed = 0

    async def claimer(worker: str) -> None:
        nonlocal claimed
        held: list[Any] = []
        async with app.backend.acquire() as conn:
            for _ in range(5000):  # bounded: 600 jobs, each claim takes at least one or waits
                held = await _claim(app, conn, worker, 3, _done(held))
                claimed += len(held)
                # every claim has committed: two running jobs of one key would both show
                found = await conn.fetch(
                    f'SELECT limit_key, count(*) AS n FROM "{app.schema}".soniq_jobs '
                    "WHERE status = 'processing' GROUP BY limit_key HAVING count(*) > 1"
                )
                if found:
                    overlaps.append([tuple(r) for r in found])
                if not held and claimed >= 600:
                    return
                if not held:
                    await asyncio.sleep(0)

    await asyncio.wait_for(asyncio.gather(*(claimer(w) for w in workers)), 120)
    print(f"claims overlapping in one key: {len(overlaps)}")
    assert overlaps == []
    assert claimed == 600
    stats = await app.get_queue_stats()
    assert int(stats["done"]) == 600


async def test_the_claim_refuses_to_run_outside_read_committed(app: Soniq) -> None:
    await _register(app, ["a"])
    await app.enqueue("t.lane", concurrency_key="acme")
    async with app.backend.acquire() as a:
        # one snapshot per transaction would count running jobs as of before the lane lock
        with pytest.raises(asyncpg.RaiseError, match="READ COMMITTED"):
            async with a.transaction(isolation="repeatable_read"):
                await _claim(app, a, "a", 5)
    async with app.backend.acquire() as a:
        assert len(await _claim(app, a, "a", 5)) == 1


def test_a_worker_goes_round_the_lanes_from_where_its_last_claim_left_off(app: Soniq) -> None:
    @app.job(name="t.a", max_concurrency_per_key=1)
    async def a() -> None: ...

    @app.job(name="t.b", max_concurrency=2)
    async def b() -> None: ...

    gates = WorkerGates(app.registry.tasks)
    lanes = gates.open_lanes()
    assert gates.ring(lanes) == (["key:t.a", "task:t.b"], None)
    gates.served([{"lane_cursor": None}])  # a claim of plain jobs only: no change
    assert gates.ring(lanes) == (["key:t.a", "task:t.b"], None)
    gates.served([{"lane_cursor": '["task:t.b", ""]'}])
    assert gates.ring(lanes) == (["task:t.b", "key:t.a"], "")
    gates.served([{"lane_cursor": '["key:t.a", "acme"]'}])
    assert gates.ring(lanes) == (["key:t.a", "task:t.b"], "acme")


async def _notified_by(app: Soniq, listener: Any, run: Any) -> list[str]:
    """The wake-ups sent while ``run()`` ran: a sentinel NOTIFY sent after it arrives after
    them (notifications are delivered in commit order), so an empty list is proof."""
    got: asyncio.Queue[str] = asyncio.Queue()
    db = await app.database()

    def heard(_c: Any, _pid: int, _channel: str, payload: str) -> None:
        got.put_nowait(payload)

    await listener.add_listener(db.channel, heard)
    try:
        await run()
        await listener.execute("SELECT pg_notify($1, '!sentinel')", db.channel)
        seen = []
        while (payload := await asyncio.wait_for(got.get(), 10)) != "!sentinel":
            seen.append(payload)
        return seen
    finally:
        await listener.remove_listener(db.channel, heard)


async def test_a_freed_lane_with_room_left_wakes_the_other_workers(app: Soniq) -> None:
    await _capped(app)
    async with app.backend.acquire() as a, app.backend.acquire() as listener:
        first = await _claim(app, a, "a", 1, ring=CAP)
        assert len(first) == 1
        second: list[Any] = []

        async def report_and_claim_one() -> None:
            second.extend(await _claim(app, a, "a", 1, _done(first), ring=CAP))

        # it frees the lane, takes one job, and leaves room for two more: others may take them
        assert await _notified_by(app, listener, report_and_claim_one) == ["default"]
        assert len(second) == 1


async def test_a_lane_its_claim_filled_again_wakes_nobody(app: Soniq) -> None:
    await _register(app, ["a"])
    await app.enqueue_many("t.lane", [{} for _ in range(3)], concurrency_key="acme")
    async with app.backend.acquire() as a, app.backend.acquire() as listener:
        first = await _claim(app, a, "a", 1)
        second: list[Any] = []

        async def report_and_claim_one() -> None:
            second.extend(await _claim(app, a, "a", 1, _done(first)))

        # the lane's next job is this worker's: nothing for anyone else to take
        assert await _notified_by(app, listener, report_and_claim_one) == []
        assert len(second) == 1


async def test_a_freed_lane_the_claim_passed_by_wakes_the_workers_of_its_queue(
    app: Soniq,
) -> None:
    await _register(app, ["a"])
    for key in ("acme", "beta"):
        await app.enqueue_many("t.lane", [{} for _ in range(2)], concurrency_key=key)
    async with app.backend.acquire() as a, app.backend.acquire() as listener:
        gates = WorkerGates(app.registry.tasks)
        db = await app.database()

        async def claim(batch: Batch) -> list[Any]:
            ring, after = gates.ring(RING)
            rows = await db.job_report_and_claim_gated(
                a, "a", 1, batch, RING, None, [], ring, after
            )
            gates.served(rows)
            return rows  # type: ignore[no-any-return]

        first = await claim(EMPTY_BATCH)
        second: list[Any] = []

        async def report_and_claim_one() -> None:
            second.extend(await claim(_done(first)))

        # the round-robin goes on to the other lane: the one it freed is left for others
        assert await _notified_by(app, listener, report_and_claim_one) == ["default"]
        assert len(second) == 1
        lanes = await a.fetch(
            f'SELECT limit_key FROM "{app.schema}".soniq_jobs WHERE id = ANY($1::uuid[])',
            [first[0]["id"], second[0]["id"]],
        )
        assert sorted(r["limit_key"] for r in lanes) == ["acme", "beta"]


async def test_the_claim_gives_back_its_own_slots_without_the_release_trigger(
    app: Soniq,
) -> None:
    """The claim statement records its outcomes with the release trigger switched off (the
    trigger would only have returned); an outcome recorded any other way still fires it."""
    await _register(app, ["a"])
    await app.enqueue_many("t.lane", [{} for _ in range(2)], concurrency_key="acme")
    db = await app.database()
    fired = (
        "SELECT COALESCE(sum(calls), 0) FROM pg_stat_user_functions "
        "WHERE schemaname = $1 AND funcname = 'soniq_limit_release'"
    )
    async with app.backend.acquire() as a, app.backend.acquire() as reader:
        await a.execute("SET track_functions = 'all'")
        first = await _claim(app, a, "a", 1)
        second = await _claim(app, a, "a", 1, _done(first))  # records first's outcome
        assert len(second) == 1
        await db.job_report(a, "a", _done(second))  # the outcome on its own: the trigger
        await a.execute("SELECT pg_stat_force_next_flush()")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while (calls := await reader.fetchval(fired, app.schema)) < 1:
            assert loop.time() < deadline, "the release trigger's call never showed"
            await reader.execute("SELECT pg_stat_clear_snapshot()")
            await asyncio.sleep(0.05)
        assert calls == 1  # the second outcome's, none for the first


async def test_a_lane_left_with_room_by_a_full_batch_wakes_the_other_workers(app: Soniq) -> None:
    await _capped(app)
    async with app.backend.acquire() as a, app.backend.acquire() as listener:
        got: list[Any] = []

        async def claim_one() -> None:  # no outcome to report: only the lane's room tells
            got.extend(await _claim(app, a, "a", 1, ring=CAP))

        # another worker's claim that met the lane locked skipped it: it must hear of the room
        assert await _notified_by(app, listener, claim_one) == ["default"]
        assert len(got) == 1
        got.clear()

        async def claim_the_rest() -> None:
            got.extend(await _claim(app, a, "a", 5, ring=CAP))

        assert await _notified_by(app, listener, claim_the_rest) == []  # filled: no room
        assert len(got) == 2


async def test_a_worker_of_the_previous_version_claims_by_the_same_rules(app: Soniq) -> None:
    await _register(app, ["a", "b"])
    await app.enqueue_many("t.lane", [{} for _ in range(2)], concurrency_key="acme")
    db = await app.database()
    old_claim = (  # what a worker of migration 009 sends: seven arguments
        f'SELECT * FROM "{app.schema}".soniq_gate_claim($1::text[], $1::text[], NULL, '
        "'{}'::text[], 5, NULL, $2)"
    )
    async with app.backend.acquire() as a, app.backend.acquire() as b:
        async with a.transaction():
            assert len(await _claim(app, a, "a", 5)) == 1
            assert await b.fetch(old_claim, RING, db.channel) == []  # the lane is a's
        assert await b.fetch(old_claim, RING, db.channel) == []  # its job runs


async def test_the_upgrade_recounts_what_runs_against_each_counter(app: Soniq) -> None:
    @app.job(name="t.combo", max_concurrency=2, max_concurrency_per_key=1)
    async def combo() -> None: ...

    await _register(app, ["a"])
    await app.enqueue("t.lane", concurrency_key="acme")
    await app.enqueue("t.combo", concurrency_key="acme")
    db = await app.database()
    async with app.backend.acquire() as a:
        lanes = ["key:t.lane", "key:t.combo"]
        got = await db.job_report_and_claim_gated(
            a, "a", 5, EMPTY_BATCH, lanes, None, [], ["key:t.lane"], None
        )
        assert len(got) == 2
        # as a worker of 009 would have left them: the simple lane's counter raised too,
        # and a counter that drifted
        await a.execute(f'UPDATE "{app.schema}".soniq_limits SET running = 1')
        await a.execute(
            f'UPDATE "{app.schema}".soniq_limits SET running = 2 WHERE scope = $1', "task:t.combo"
        )
        (upgrade,) = [m for m in migrate.available() if m.name == "lane_counts"]
        await a.execute(upgrade.sql.replace("{schema}", f'"{app.schema}"'))
        raw = {
            (r["scope"], r["key"]): r["running"]
            for r in await a.fetch(f'SELECT scope, key, running FROM "{app.schema}".soniq_limits')
        }
    # the combined job holds its lane and the task row; the simple lane keeps no counter
    assert raw == {("key:t.lane", "acme"): 0, ("key:t.combo", "acme"): 1, ("task:t.combo", ""): 1}
    shown = {(r["scope"], r["key"]): r["running"] for r in await db.limit_list()}
    assert shown[("key:t.lane", "acme")] == 1  # counted from its running job


def test_a_worker_without_limited_tasks_keeps_the_plain_claim(app: Soniq) -> None:
    @app.job(name="t.plain")
    async def plain() -> None: ...

    assert not WorkerGates(app.registry.tasks)  # the worker runs the plain statement

    @app.job(name="t.lane", max_concurrency_per_key=1)
    async def lane() -> None: ...

    assert WorkerGates(app.registry.tasks)
