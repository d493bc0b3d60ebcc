"""Alternate timed rounds of a ceiling loop and its soniq counterpart.

On a shared or noisy machine one long run of each side can land in different weather;
alternating short rounds (and which side goes first) gives both the same conditions, so
their ratio holds even when the absolute rates move.
"""

from __future__ import annotations

from typing import Protocol

from benchmarks.common import Result, timed_rate


class Side(Protocol):
    async def setup(self, url: str) -> None: ...
    async def round(self, n: int) -> float: ...
    async def teardown(self) -> None: ...


async def paired(
    url: str,
    total: int,
    rounds: int,
    ceiling: Side,
    soniq: Side,
    ceiling_row: Result,
    soniq_row: Result,
) -> tuple[Result, Result]:
    """Run ``total`` operations on each side in ``rounds`` alternating rounds."""
    sizes = [total // rounds + (1 if i < total % rounds else 0) for i in range(rounds)]
    await ceiling.setup(url)
    try:
        await soniq.setup(url)
        try:
            spent = {"ceiling": 0.0, "soniq": 0.0}
            rounds_seen: dict[str, list[float]] = {"ceiling": [], "soniq": []}
            for i, n in enumerate(sizes):
                order = [("ceiling", ceiling), ("soniq", soniq)]
                if i % 2:
                    order.reverse()
                for name, side in order:
                    seconds = await side.round(n)
                    spent[name] += seconds
                    rounds_seen[name].append(round(timed_rate(n, seconds)))
        finally:
            await soniq.teardown()
    finally:
        await ceiling.teardown()
    for row, name in ((ceiling_row, "ceiling"), (soniq_row, "soniq")):
        row.count = total
        row.seconds = spent[name]
        row.rate = timed_rate(total, spent[name])
        row.extra["round_rates"] = rounds_seen[name]
    return ceiling_row, soniq_row
