"""Shared pieces: counts per mode, result rows, schema handling, timing."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import asyncpg

# Workload sizes: the full run follows DESIGN.md; --quick shrinks every count.
FULL = {
    "insert_seq": 5_000,
    "insert_concurrent": 20_000,
    "producers": 50,
    "copy": 100_000,
    "claim": 20_000,
    "enqueue_seq": 5_000,
    "enqueue_concurrent": 20_000,
    "enqueue_many": 100_000,
    "enqueue_many_batch": 1_000,
    "drain": 20_000,
    "drain_deep": 200_000,
    "drain_shallow": 1_000,
    "drain_shallow_rounds": 9,
    "latency_jobs": 500,
    "scale": 200_000,
    "scale_many": 32,  # workers of concurrency 4
    "dashboard_rows": 1_000_000,
    "webhooks": 10_000,
    "wait_jobs": 300,
}
QUICK = {
    **FULL,
    "insert_seq": 1_000,
    "insert_concurrent": 4_000,
    "copy": 20_000,
    "claim": 5_000,
    "enqueue_seq": 1_000,
    "enqueue_concurrent": 4_000,
    "enqueue_many": 20_000,
    "drain": 5_000,
    "drain_deep": 20_000,
    "drain_shallow_rounds": 3,
    "latency_jobs": 150,
    "scale": 20_000,
    "scale_many": 16,
    "dashboard_rows": 100_000,
    "webhooks": 2_000,
    "wait_jobs": 100,
}


@dataclass
class Result:
    """One row of the table."""

    key: str
    what: str
    count: int = 0
    seconds: float = 0.0
    rate: float | None = None  # jobs (or rows) per second
    ceiling: str | None = None  # key of the row this one is compared with
    ratio: float | None = None
    target: str = ""
    passed: bool | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def timed_rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


def pct(values: list[float], p: float) -> float:
    """The ``p``-th percentile of ``values`` (sorted ascending), rounded to 0.01."""
    return round(values[min(len(values) - 1, int(p / 100 * len(values)))], 2)


class Clock:
    """``with Clock() as c: ...; c.seconds``."""

    seconds: float = 0.0

    def __enter__(self) -> Clock:
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self._start


async def fresh_schema(url: str, schema: str) -> None:
    """Drop ``schema`` (and everything in it) and create it empty."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await conn.execute(f'CREATE SCHEMA "{schema}"')
    finally:
        await conn.close()


async def drop_schema(url: str, schema: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()
