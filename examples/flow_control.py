"""Flow control: a fleet-wide cap, a serial lane per tenant, a rate limit shared by two
tasks, execution windows, and pausing a queue.

python examples/flow_control.py
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from zoneinfo import ZoneInfo

from soniq import RateLimit, Soniq, SoniqError

app = Soniq(poll_interval=0.5)
running = {"payments": 0, "peak": 0}
tenant_log: list[str] = []
geo_starts: list[float] = []  # handler starts of the two tasks sharing the "geo-api" budget

# One budget for one external API: at most 4 calls in any sliding second, whichever of the
# tasks that name it makes them.
GEO_API = RateLimit(4, 1.0, name="geo-api")

# A window that is closed now: the hour 12 hours from now, in Tokyo.
ZONE = "Asia/Tokyo"
CLOSED_HOUR = (datetime.now(ZoneInfo(ZONE)).hour + 12) % 24


@app.job(name="flow.charge", max_concurrency=2)  # the payment API takes 2 calls at once
async def charge(order: int) -> None:
    running["payments"] += 1
    running["peak"] = max(running["peak"], running["payments"])
    await asyncio.sleep(0.05)
    running["payments"] -= 1


@app.job(name="flow.import", max_concurrency_per_key=1)  # one import per tenant at a time
async def import_rows(tenant: str, batch: int) -> None:
    tenant_log.append(f"{tenant}:{batch}:start")
    await asyncio.sleep(0.02)
    tenant_log.append(f"{tenant}:{batch}:end")


@app.job(name="flow.geocode", rate_limit=GEO_API)
async def geocode(address: str) -> None:
    geo_starts.append(time.monotonic())


# Limits combine: this one also runs at most 2 at once, and only inside its execution
# window ("* * * * *": every minute, so always open; e.g. "* 9-17 * * 1-5" for office hours).
@app.job(
    name="flow.reverse_geocode",
    rate_limit=GEO_API,
    max_concurrency=2,
    execution_window="* * * * *",
    timezone="Europe/Berlin",
)
async def reverse_geocode(lat: float, lon: float) -> None:
    geo_starts.append(time.monotonic())


@app.job(name="flow.night_report", execution_window=f"* {CLOSED_HOUR} * * *", timezone=ZONE)
async def night_report() -> None: ...


@app.job(name="flow.mail", queue="emails")
async def mail(to: str) -> None: ...


async def count(status: str, queue: str) -> int:
    rows = {q["queue"]: q for q in await app.list_queues()}
    return int(rows.get(queue, {}).get(status, 0))


def most_in_any_span(starts: list[float], span: float) -> int:
    """The most starts that fall in one span of ``span`` seconds."""
    starts = sorted(starts)
    return max(sum(1 for t in starts[i:] if t - s < span) for i, s in enumerate(starts))


async def main() -> int:
    async with app:
        await app.setup()
        for order in range(10):
            await charge.enqueue(order=order)
        for tenant in ("acme", "globex"):
            for batch in range(3):
                await import_rows.enqueue(tenant=tenant, batch=batch, concurrency_key=tenant)
        try:
            await import_rows.enqueue(tenant="acme", batch=9)  # no key: refused
        except SoniqError as exc:
            print("refused:", exc)

        # pause a queue: its jobs wait (enqueueing still works) until it is resumed
        await app.pause_queue("emails")
        await mail.enqueue(to="ops@example.com")
        await app.run_worker(run_once=True, concurrency=8)  # runs everything but emails
        assert await count("queued", "emails") == 1
        print("emails paused:", [q["paused"] for q in await app.list_queues()
                                 if q["queue"] == "emails"])  # fmt: skip
        await app.resume_queue("emails")
        await app.run_worker(run_once=True, concurrency=8)
        assert await count("done", "emails") == 1

        assert running["peak"] == 2, running
        for tenant in ("acme", "globex"):  # each tenant's batches ran one after another
            mine = [e for e in tenant_log if e.startswith(tenant)]
            assert all(mine[i].endswith("start") == (i % 2 == 0) for i in range(len(mine)))
        print(f"payments peak {running['peak']}, imports serial per tenant")

        # rate limit: 10 calls through one budget of 4 per second take over 2 seconds. A
        # running worker sleeps until the budget has room again (run_once would stop when
        # nothing can start right now).
        ids = [await geocode.enqueue(address=f"street {n}") for n in range(5)]
        ids += [await reverse_geocode.enqueue(lat=52.5, lon=13.4 + n) for n in range(5)]
        report = await night_report.enqueue()  # outside its window: it stays queued
        stop = asyncio.Event()
        worker = asyncio.create_task(app.run_worker(concurrency=8, shutdown_event=stop))
        for job_id in ids:
            assert (await app.wait(job_id, timeout=30))["status"] == "done"
        stop.set()
        await worker
        elapsed = max(geo_starts) - min(geo_starts)
        # a start is the claim's admission; each handler begins a moment after it, so the
        # handler times are checked with a little slack
        assert most_in_any_span(geo_starts, 0.9) <= 4, geo_starts
        assert elapsed > 1.9, elapsed
        print(f"geo-api: 10 calls from two tasks in {elapsed:.1f}s (at most 4 per second)")

        job = await app.get_job(report)
        assert job is not None and job["status"] == "queued", job
        print(f"night report waits for its window (* {CLOSED_HOUR} * * * {ZONE}): queued")
        await app.cancel_job(report)
    print("OK flow control")
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
