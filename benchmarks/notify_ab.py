"""A/B of the enqueue path's two devices, 50 producers (``python -m benchmarks.notify_ab``).

Rounds alternate between: bare INSERTs (the ceiling); soniq as shipped (lanes + coalesced
NOTIFY); soniq with a NOTIFY in every insert (lanes only); and soniq through the pool with a
NOTIFY in every insert (neither device). The differences are what each device buys.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import ceiling, enqueue
from benchmarks.common import timed_rate
from benchmarks.run import database_url
from soniq.db import Database
from soniq.enqueue import NewJob


def _every_insert_notifies(db: Database, through_pool: bool) -> None:
    """Replace the coalesced insert with one that always carries its NOTIFY."""

    async def insert_due(job: NewJob) -> None:
        runner: Any = db.pool if through_pool else db.lanes
        await runner.fetchval(
            db.q["job_insert_plain"],
            job.id,
            job.job_name,
            job.queue,
            job.priority,
            job.args,
            job.max_attempts,
            None,
            db.channel,
        )

    db.lanes.insert_due = insert_due  # type: ignore[method-assign]


class Variant(enqueue.EnqueueConcurrent):
    def __init__(self, tasks: int, mode: str) -> None:
        super().__init__(tasks)
        self.mode = mode

    async def open(self) -> None:
        await super().open()
        if self.mode != "shipped":
            assert self.app._db is not None
            _every_insert_notifies(self.app._db, through_pool=self.mode == "pool, notify each")


async def main(url: str | None, total: int, rounds: int, tasks: int) -> None:
    url = await database_url(url)
    sides: dict[str, Any] = {
        "bare INSERT": ceiling.InsertConcurrent(tasks),
        "shipped": Variant(tasks, "shipped"),
        "lanes, notify each": Variant(tasks, "lanes, notify each"),
        "pool, notify each": Variant(tasks, "pool, notify each"),
    }
    spent = dict.fromkeys(sides, 0.0)
    per = total // rounds
    for side in sides.values():
        await side.setup(url)
    try:
        for i in range(rounds):
            names = list(sides) if i % 2 == 0 else list(reversed(sides))
            for name in names:
                spent[name] += await sides[name].round(per)
    finally:
        for side in sides.values():
            await side.teardown()
    bare = timed_rate(per * rounds, spent["bare INSERT"])
    print(f"{tasks} producers, {per * rounds:,} jobs per variant in {rounds} alternating rounds")
    for name, seconds in spent.items():
        rate = timed_rate(per * rounds, seconds)
        print(f"  {name:<20} {rate:>9,.0f} jobs/s   {rate / bare:.2f} x bare")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--database-url")
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--producers", type=int, default=50)
    a = parser.parse_args()
    started = time.monotonic()
    asyncio.run(main(a.database_url, a.jobs, a.rounds, a.producers))
    print(f"({time.monotonic() - started:.0f} s)")
