"""Where an enqueue's time goes (``python -m benchmarks.enqueue_ab``).

Alternating rounds, one by one and from many producers, of:
- the ceiling's INSERT into its own minimal table;
- soniq's bare INSERT into ``soniq_jobs`` (prepared, raw connection, no NOTIFY): the table;
- soniq's statement for a due job, INSERT and NOTIFY (one by one only): the wake-up;
- ``await app.enqueue(...)``: soniq's own Python on top.
Each figure is the median over rounds, with the client's CPU (user + system) per statement.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import asyncpg

from benchmarks import ceiling
from benchmarks.common import drop_schema, fresh_schema
from benchmarks.jobs import register
from benchmarks.run import database_url
from soniq import Soniq
from soniq.ids import _IDS

SCHEMA = "bench_enqueue_ab"
ARGS = '{"n": 1}'
CEILING_INSERT = (
    f"INSERT INTO {SCHEMA}.jobs (id, queue, args) VALUES ($1::text::uuid, $2, $3::jsonb)"
)


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def _timed(n: int, run: Callable[[], Awaitable[None]]) -> tuple[float, float]:
    """(statements per second, client CPU microseconds per statement)."""
    cpu, start = _cpu(), time.perf_counter()
    await run()
    return n / (time.perf_counter() - start), (_cpu() - cpu) / n * 1e6


async def _raw(url: str, conns: int, n: int, sql: str, args: Callable[[], tuple[Any, ...]]) -> Any:
    """``n`` executions of ``sql`` spread over ``conns`` raw connections."""
    cs = await asyncio.gather(*(asyncpg.connect(url) for _ in range(conns)))
    try:
        stmts = await asyncio.gather(*(c.prepare(sql) for c in cs))
        work = [[args() for _ in range(n // conns)] for _ in stmts]

        async def run() -> None:
            async def one(stmt: Any, mine: list[tuple[Any, ...]]) -> None:
                for a in mine:
                    await stmt.fetch(*a)

            await asyncio.gather(*(one(s, w) for s, w in zip(stmts, work, strict=True)))

        return await _timed(n // conns * conns, run)
    finally:
        await asyncio.gather(*(c.close() for c in cs))


async def _soniq(url: str, producers: int, n: int) -> tuple[float, float]:
    app = Soniq(database_url=url, schema=SCHEMA, pool_max_size=max(4, 2 * producers))
    register(app)
    try:
        await asyncio.gather(*(app.enqueue("bench.noop", n=0) for _ in range(producers)))
        per = n // producers

        async def run() -> None:
            async def one() -> None:
                for i in range(per):
                    await app.enqueue("bench.noop", args={"n": i})

            await asyncio.gather(*(one() for _ in range(producers)))

        return await _timed(per * producers, run)
    finally:
        await app.close()


async def main(url: str | None, n: int, rounds: int, producers: int) -> None:
    url = await database_url(url)
    await fresh_schema(url, SCHEMA)
    setup = Soniq(database_url=url, schema=SCHEMA)
    await setup.setup()
    q = (await setup.database()).q
    await setup.close()
    conn = await asyncpg.connect(url)
    await conn.execute(ceiling.CREATE.replace(ceiling.SCHEMA, SCHEMA))
    await conn.close()

    def job() -> tuple[Any, ...]:
        return (_IDS.text(_IDS.take()), "bench.noop", "default", 100, ARGS, 4)

    variants: dict[str, Callable[[int], Awaitable[tuple[float, float]]]] = {
        "ceiling INSERT": lambda c: _raw(
            url, c, n, CEILING_INSERT, lambda: (_IDS.text(_IDS.take()), "default", ARGS)
        ),
        "soniq_jobs INSERT, raw": lambda c: _raw(url, c, n, q["job_insert_quiet"], job),
        "soniq_jobs INSERT + NOTIFY, raw": lambda c: _raw(
            url, c, n, q["job_insert_plain"], lambda: (*job(), None, f"soniq_{SCHEMA}")
        ),
        "app.enqueue": lambda c: _soniq(url, c, n),
    }
    try:
        for conns in (1, producers):
            names = [k for k in variants if conns == 1 or "NOTIFY" not in k]
            got: dict[str, list[tuple[float, float]]] = {k: [] for k in names}
            for i in range(rounds):
                for name in names if i % 2 == 0 else reversed(names):
                    got[name].append(await variants[name](conns))
            base = statistics.median(r for r, _ in got["ceiling INSERT"])
            print(f"{conns} producer(s), {n:,} statements per round, medians of {rounds} rounds")
            for name, rs in got.items():
                rate = statistics.median(r for r, _ in rs)
                cpu = statistics.median(c for _, c in rs)
                print(
                    f"  {name:<34} {rate:>8,.0f}/s  {rate / base:.2f} x ceiling  cpu {cpu:.0f} us"
                )
    finally:
        await drop_schema(url, SCHEMA)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--database-url")
    parser.add_argument("--statements", type=int, default=5_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--producers", type=int, default=50)
    a = parser.parse_args()
    started = time.monotonic()
    asyncio.run(main(a.database_url, a.statements, a.rounds, a.producers))
    print(f"({time.monotonic() - started:.0f} s)")
