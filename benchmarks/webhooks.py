"""Webhooks under load: the plain drain with one subscription against the same drain without.

Each run fills a fresh schema with no-op jobs and drains it with one `soniq worker` process
that takes every queue (so it delivers too). "With" adds one subscription (every event) to a
receiver in this process (plain asyncio HTTP, answers 200): the database trigger writes one
delivery job per finished job, and the worker POSTs them after (or between) the user jobs.
The drain rate is over the user jobs only (first start to last finish); the row's extra also
gives how long every event took to arrive, and checks that each arrived (by webhook-id).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import asyncpg

from benchmarks.common import Result, drop_schema, timed_rate
from benchmarks.drain import CONCURRENCY, WorkerProcess, _fill, _verify
from soniq import Soniq

USER_JOBS = "queue <> 'soniq.webhooks'"


class Receiver:
    """Counts POSTs by webhook-id; answers 200 on a kept-alive connection."""

    def __init__(self) -> None:
        self.ids: Counter[str] = Counter()
        self.server: asyncio.AbstractServer | None = None
        self.port = 0

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{self.port}/hook"

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await reader.readline():
                headers = {}
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    name, _, value = line.decode("latin-1").partition(":")
                    headers[name.strip().lower()] = value.strip()
                await reader.readexactly(int(headers.get("content-length", "0")))
                self.ids[headers.get("webhook-id", "")] += 1
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


async def drain_one(url: str, n: int, subscribe: bool) -> Result:
    schema = "bench_hooks_on" if subscribe else "bench_hooks_off"
    await _fill(url, schema, n)
    receiver = Receiver()
    app = Soniq(database_url=url, schema=schema)
    if subscribe:
        await app.webhooks.add(await receiver.start())
    worker = WorkerProcess(url, schema)
    conn = await asyncpg.connect(url)
    arrived_after = None
    try:
        spawned = worker.start()
        deadline = time.monotonic() + 600
        user_left = (
            f"SELECT count(*) FROM {schema}.soniq_jobs WHERE status IN ('queued', 'processing')"
        )
        while await conn.fetchval(f"{user_left} AND {USER_JOBS}"):
            worker.sample()
            if time.monotonic() > deadline:
                raise RuntimeError(f"the drain did not end in 600 s; see {worker.log_path}")
            await asyncio.sleep(0.25)
        if subscribe:
            while len(receiver.ids) < n:
                worker.sample()
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{len(receiver.ids)} of {n} events arrived in 600 s")
                await asyncio.sleep(0.1)
            arrived_after = time.time() - spawned
        row = await _verify(conn, schema, n, USER_JOBS)
        started_at = await conn.fetchval(f"SELECT min(started_at) FROM {schema}.soniq_workers")
        deliveries = await conn.fetchval(
            f"SELECT count(*) FROM {schema}.soniq_jobs WHERE NOT ({USER_JOBS})"
        )
    finally:
        worker.stop()
        await receiver.stop()
        await app.close()
        await conn.close()
        await drop_schema(url, schema)
    seconds = (row["last_finished"] - started_at).total_seconds()
    extra: dict[str, object] = {"delivery_jobs": int(deliveries)}
    if subscribe:
        extra.update(
            events_received=len(receiver.ids),
            duplicate_deliveries=sum(v - 1 for v in receiver.ids.values()),
            spawn_to_last_event_seconds=round(arrived_after or 0.0, 2),
        )
    what = "with 1 webhook subscription" if subscribe else "no subscription"
    return Result(
        f"soniq.drain_hooks_{'on' if subscribe else 'off'}",
        f"drain {n:,} no-op jobs, 1 worker x{CONCURRENCY}, {what}",
        n,
        seconds,
        timed_rate(n, seconds),
        extra=extra,
    )


def _combine(rows: list[Result]) -> Result:
    """One row for several rounds of the same side: total jobs over total seconds."""
    first = rows[0]
    count = sum(r.count for r in rows)
    seconds = sum(r.seconds for r in rows)
    extra = {**first.extra, "round_rates": [round(r.rate or 0) for r in rows]}
    for key in ("events_received", "duplicate_deliveries"):
        if key in first.extra:
            extra[key] = sum(int(r.extra[key]) for r in rows)
    if "spawn_to_last_event_seconds" in first.extra:
        extra["spawn_to_last_event_seconds"] = [
            r.extra["spawn_to_last_event_seconds"] for r in rows
        ]
    what = first.what + (f", {len(rows)} rounds" if len(rows) > 1 else "")
    return Result(first.key, what, count, seconds, timed_rate(count, seconds), extra=extra)


async def webhooks(url: str, n: int, rounds: int = 2) -> tuple[Result, Result]:
    """(without, with), each over ``rounds`` alternating rounds of ``n`` jobs (the machine's
    weather moves; both sides see the same). Every event of every round must arrive."""
    off: list[Result] = []
    on: list[Result] = []
    for i in range(rounds):
        for subscribe in (False, True) if i % 2 == 0 else (True, False):
            row = await drain_one(url, n, subscribe)
            (on if subscribe else off).append(row)
            if subscribe and row.extra["events_received"] != n:
                raise RuntimeError(f"{row.extra['events_received']} of {n} events arrived")
    return _combine(off), _combine(on)
