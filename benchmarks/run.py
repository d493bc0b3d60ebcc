"""Run soniq's benchmark suite: ``python -m benchmarks.run [--quick] [--database-url URL]``.

Prints a table (each soniq figure as jobs/s and as a fraction of a bare-SQL ceiling measured
in the same run, PASS/FAIL against DESIGN.md's targets) and writes the figures as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python benchmarks/run.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import asyncpg

from benchmarks import ceiling, dashboard, drain, enqueue, flow, scale, wait, webhooks, workflows
from benchmarks.common import FULL, QUICK, Result
from benchmarks.pairs import paired

ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = ROOT / ".soniq-bench"
RESULTS = ROOT / "benchmarks" / "results"
GROUPS = ("enqueue", "drain", "deep", "latency", "wait")
# long (minutes): only when named with --only
OPTIONAL = ("dashboard", "flow", "scale", "webhooks", "workflows")


async def database_url(given: str | None) -> str:
    if given:
        return given
    from soniq import embedded

    return await embedded.database_url(str(DATA_DIR), "soniq_bench")


async def server_facts(url: str) -> dict[str, Any]:
    conn = await asyncpg.connect(url)
    try:
        facts = {}
        for name in (
            "server_version",
            "fsync",
            "synchronous_commit",
            "wal_sync_method",
            "full_page_writes",
            "shared_buffers",
            "max_connections",
        ):
            facts[name] = await conn.fetchval(f"SHOW {name}")
        return facts
    finally:
        await conn.close()


def judge(row: Result, ceiling_row: Result | None, minimum: float, label: str) -> None:
    row.target = f">= {minimum:.2f} x {label}"
    if ceiling_row is None or row.rate is None or not ceiling_row.rate:
        return
    row.ceiling = ceiling_row.key
    row.ratio = row.rate / ceiling_row.rate
    row.passed = row.ratio >= minimum


async def run(args: argparse.Namespace) -> list[Result]:
    counts = QUICK if args.quick else FULL
    url = await database_url(args.database_url)
    groups = set(args.only.split(",")) if args.only else set(GROUPS)
    rows: list[Result] = []
    rounds = 4 if args.quick else 10

    def show(*new: Result) -> None:
        for r in new:
            rate = f"{r.rate:,.0f}/s" if r.rate is not None else ""
            print(f"  {r.key:<26} {rate:>12}  {r.extra if r.rate is None else ''}", flush=True)
        rows.extend(new)

    if "enqueue" in groups:
        c, s = await paired(
            url,
            counts["enqueue_seq"],
            2 * rounds,  # fsync latency is the noisiest figure here: more, shorter rounds
            ceiling.InsertSequential(),
            enqueue.EnqueueSequential(),
            Result("ceiling.insert_seq", "bare INSERT, one by one"),
            Result("soniq.enqueue_seq", "enqueue, one by one"),
        )
        judge(s, c, 0.90, "bare INSERT")
        show(c, s)
        producers = counts["producers"]
        c, s = await paired(
            url,
            counts["enqueue_concurrent"],
            max(2, rounds // 2),
            ceiling.InsertConcurrent(producers),
            enqueue.EnqueueConcurrent(producers),
            Result("ceiling.insert_concurrent", f"bare INSERT, {producers} tasks"),
            Result("soniq.enqueue_concurrent", f"enqueue, {producers} concurrent producers"),
        )
        judge(s, c, 0.70, f"bare INSERT x{producers}")
        show(c, s)
        batch = counts["enqueue_many_batch"]
        c, s = await paired(
            url,
            counts["enqueue_many"],
            max(2, rounds // 2),
            ceiling.Copy(),
            enqueue.EnqueueMany(batch),
            Result("ceiling.copy", "bare COPY"),
            Result("soniq.enqueue_many", f"enqueue_many, {batch:,} per call"),
        )
        judge(s, c, 0.60, "bare COPY")
        show(c, s)

    if "flow" in groups:
        # each limited drain paired with a plain drain of the same size, run back to back,
        # over a few rounds: median rates, and the median of each pair's ratio (set by
        # drain_rounds; the rate-limited row has no target)
        plain, fleet, lanes, rated = await flow.drain_rounds(
            url, counts["drain"], 1 if args.quick else 3
        )
        for row in (fleet, lanes):
            row.target = ">= 0.50 x the plain drain"
            row.passed = row.ratio is not None and row.ratio >= 0.50
        show(plain, fleet, lanes, rated)
        print(f"  plain drains (one per pair), jobs/s: {plain.extra['round_rates']}", flush=True)
        for r in (fleet, lanes, rated):
            print(f"  pairs, {r.key} / plain: {r.extra['round_ratios']}", flush=True)

    if "drain" in groups:
        # the ceiling before and after the drain, averaged: both see the same weather
        before = await ceiling.claim_complete(url, counts["claim"])
        profile = RESULTS / "drain-profile.txt" if args.profile else None
        d = await drain.drain(url, counts["drain"], profile=profile)
        after = await ceiling.claim_complete(url, counts["claim"])
        c = Result(
            "ceiling.claim",
            before.what,
            before.count + after.count,
            before.seconds + after.seconds,
            (before.count + after.count) / (before.seconds + after.seconds),
            extra={"round_rates": [round(before.rate or 0), round(after.rate or 0)]},
        )
        judge(d, c, 0.40, "bare claim/complete")
        show(c, d)

    if "deep" in groups:
        deep, shallow, memory = await drain.drain_deep(
            url, counts["drain_deep"], counts["drain_shallow"], counts["drain_shallow_rounds"]
        )
        judge(deep, shallow, 0.80, f"rate at {counts['drain_shallow']:,} queued")
        growth = memory.extra["growth"]
        memory.target = "end <= 1.10 x warm"
        memory.passed = growth <= 0.10
        show(shallow, deep, memory)

    if "latency" in groups:
        lat = await drain.latency(url, counts["latency_jobs"])
        lat.target = "p50 <= 3 ms, p99 <= 10 ms"
        lat.passed = lat.extra["p50_ms"] <= 3.0 and lat.extra["p99_ms"] <= 10.0
        show(lat)

    if "wait" in groups:
        w = await wait.wait_latency(url, counts["wait_jobs"])
        w.target = "p50 < 5 ms"
        w.passed = w.extra["p50_ms"] < 5.0
        show(w)

    if "webhooks" in groups:
        off, on = await webhooks.webhooks(url, counts["webhooks"])
        judge(on, off, 0.50, "the same drain without")
        show(off, on)

    if "workflows" in groups:
        fan = await workflows.fan_out_fan_in(url, counts.get("workflow_children", 1000))
        show(fan)
        print(f"  {fan.key}: {fan.extra}", flush=True)

    if "scale" in groups:
        scaled = await scale.scale(url, counts["scale"], (counts["scale_many"], 4))
        show(*scaled)
        print(
            f"  {scaled[-1].key}: active sessions waited on "
            f"{scaled[-1].extra['active_session_samples']}",
            flush=True,
        )

    if "dashboard" in groups:
        for row in await dashboard.run(url, counts["dashboard_rows"]):
            print(
                f"  {row.key:<32} p50 {row.extra['p50_ms']:>6} ms  p95 {row.extra['p95_ms']} ms",
                flush=True,
            )
            rows.append(row)
    return rows


def table(rows: list[Result]) -> str:
    head = ("workload", "jobs", "seconds", "jobs/s", "ratio", "target", "result")
    body = []
    for r in rows:
        if r.key in ("soniq.latency", "soniq.wait"):
            figure = (
                f"p50 {r.extra['p50_ms']} / p95 {r.extra['p95_ms']} / p99 {r.extra['p99_ms']} ms"
            )
            body.append((r.what, f"{r.count:,}", "", figure, "", r.target, _verdict(r)))
            continue
        if r.key.startswith("dashboard."):
            figure = f"p50 {r.extra['p50_ms']} / p95 {r.extra['p95_ms']} ms"
            body.append((r.what, f"{r.count:,}", "", figure, "", r.target, _verdict(r)))
            continue
        if r.key == "soniq.worker_rss":
            e = r.extra
            figure = f"{e['warm_mb']} -> {e['end_mb']} MB (peak {e['peak_mb']})"
            body.append((r.what, "", "", figure, f"{1 + e['growth']:.3f}", r.target, _verdict(r)))
            continue
        body.append(
            (
                r.what,
                f"{r.count:,}",
                f"{r.seconds:.2f}",
                f"{r.rate:,.0f}" if r.rate is not None else "",
                f"{r.ratio:.2f}" if r.ratio is not None else "",
                r.target,
                _verdict(r),
            )
        )
    widths = [max(len(str(x[i])) for x in [head, *body]) for i in range(len(head))]

    def line(cells: Sequence[Any]) -> str:
        return " | ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True))

    out = [line(head), "-+-".join("-" * w for w in widths)]
    out += [line(b) for b in body]
    return "\n".join(out)


def _verdict(r: Result) -> str:
    return "" if r.passed is None else ("PASS" if r.passed else "FAIL")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller counts (under a minute)")
    parser.add_argument(
        "--database-url", help="PostgreSQL to use (default: embedded, data in .soniq-bench/)"
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument(
        "--only",
        help=f"comma-separated groups among {','.join(GROUPS + OPTIONAL)} "
        f"(default: {','.join(GROUPS)}; {','.join(OPTIONAL)} only when named)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="record the drain worker with py-spy (benchmarks/results/)",
    )
    args = parser.parse_args(argv)
    if args.only and not set(args.only.split(",")) <= set(GROUPS + OPTIONAL):
        parser.error(f"--only: choose among {','.join(GROUPS + OPTIONAL)}")
    if args.profile and not Path(sys.executable).with_name("py-spy").exists():
        parser.error("--profile records with py-spy: pip install py-spy")

    started = time.monotonic()
    url_note = "embedded (.soniq-bench/)" if not args.database_url else "--database-url"
    print(f"soniq benchmarks ({'quick' if args.quick else 'full'}), PostgreSQL: {url_note}")

    async def go() -> tuple[list[Result], dict[str, Any]]:
        url = await database_url(args.database_url)
        facts = await server_facts(url)
        print("  server: " + ", ".join(f"{k}={v}" for k, v in facts.items()), flush=True)
        return await run(args), facts

    rows, facts = asyncio.run(go())
    elapsed = time.monotonic() - started
    print()
    print(table(rows))
    print(f"\n{len(rows)} rows in {elapsed:.0f} s on {os.cpu_count()} CPUs")
    report = {
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "mode": "quick" if args.quick else "full",
        "elapsed_seconds": round(elapsed, 1),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "asyncpg": asyncpg.__version__,
            "platform": platform.platform(),
        },
        "server": facts,
        "all_passed": all(r.passed for r in rows if r.passed is not None),
        "rows": [r.as_dict() for r in rows],
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    text = json.dumps(report, indent=2, default=str)
    (RESULTS / "latest.json").write_text(text)
    if args.json:
        args.json.write_text(text)
        print(f"JSON written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
