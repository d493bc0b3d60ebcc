"""Flow control: a fleet-wide cap, a serial lane per tenant, and pausing a queue.

python examples/flow_control.py
"""

from __future__ import annotations

import asyncio

from soniq import Soniq, SoniqError

app = Soniq(poll_interval=0.5)
running = {"payments": 0, "peak": 0}
tenant_log: list[str] = []


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


@app.job(name="flow.mail", queue="emails")
async def mail(to: str) -> None: ...


async def count(status: str, queue: str) -> int:
    rows = {q["queue"]: q for q in await app.list_queues()}
    return int(rows.get(queue, {}).get(status, 0))


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
    print("OK flow control")
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
