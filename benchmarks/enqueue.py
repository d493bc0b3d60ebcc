"""soniq's enqueue side: one by one, from many producers, and in bulk.

Each class has the shape of its ceiling counterpart (setup, timed rounds, teardown), so the
runner can alternate rounds of the two and both see the same noise.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from benchmarks.common import drop_schema, fresh_schema
from benchmarks.jobs import register
from soniq import Soniq

SCHEMA = "bench_enqueue"


class _SoniqSide:
    pool_size = 4

    async def setup(self, url: str) -> None:
        self.url = url
        await fresh_schema(url, SCHEMA)
        await self.open()

    async def open(self) -> None:
        self.app = Soniq(
            database_url=self.url, schema=SCHEMA, pool_min_size=2, pool_max_size=self.pool_size
        )
        register(self.app)
        await self.app.setup()
        await self.warm()

    async def warm(self) -> None:
        for _ in range(20):
            await self.app.enqueue("bench.noop", args={"n": 0})

    async def teardown(self) -> None:
        await self.app.close()
        await drop_schema(self.url, SCHEMA)


class EnqueueSequential(_SoniqSide):
    """``await app.enqueue(...)`` in a loop."""

    async def round(self, n: int) -> float:
        enqueue = self.app.enqueue
        start = time.perf_counter()
        for i in range(n):
            await enqueue("bench.noop", args={"n": i})
        return time.perf_counter() - start


class EnqueueConcurrent(_SoniqSide):
    """``tasks`` producers calling ``await app.enqueue(...)`` on one app."""

    def __init__(self, tasks: int) -> None:
        self.tasks = tasks
        self.pool_size = 2 * tasks  # soniq holds at most half its pool for enqueues

    async def warm(self) -> None:
        await asyncio.gather(
            *(self.app.enqueue("bench.noop", args={"n": 0}) for _ in range(self.tasks * 2))
        )

    async def setup(self, url: str) -> None:
        self.url = url
        await fresh_schema(url, SCHEMA)
        await self.open()
        await self.app.close()  # each round opens its own pool (see InsertConcurrent)

    async def round(self, n: int) -> float:
        await self.open()
        try:
            enqueue = self.app.enqueue

            async def produce(count: int) -> None:
                for i in range(count):
                    await enqueue("bench.noop", args={"n": i})

            per = [n // self.tasks + (1 if i < n % self.tasks else 0) for i in range(self.tasks)]
            start = time.perf_counter()
            await asyncio.gather(*(produce(k) for k in per))
            return time.perf_counter() - start
        finally:
            await self.app.close()


class EnqueueMany(_SoniqSide):
    """``await app.enqueue_many(...)`` with ``batch`` jobs per call."""

    def __init__(self, batch: int) -> None:
        self.batch = batch

    async def round(self, n: int) -> float:
        calls: list[list[dict[str, Any]]] = [
            [{"n": i} for i in range(s, min(s + self.batch, n))] for s in range(0, n, self.batch)
        ]
        start = time.perf_counter()
        for args_list in calls:
            await self.app.enqueue_many("bench.noop", args_list)
        return time.perf_counter() - start
