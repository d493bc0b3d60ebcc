"""A workflow: validate an order, charge it, send three emails, then write a report once
every email is sent. Each step reads its parents' results; a failed charge would cancel
everything after it. Then a continuation with continue_with.

    python examples/workflows.py
"""

from __future__ import annotations

import asyncio

from soniq import JobContext, Soniq

app = Soniq(poll_interval=0.5)


@app.job(name="shop.validate")
async def validate(order_id: int) -> dict[str, int]:
    return {"order_id": order_id, "amount": 4200}


@app.job(name="shop.charge")
async def charge(ctx: JobContext) -> str:
    order = ctx.parent_results["validate"]  # keyed by the parent's step name
    return f"ch_{order['order_id']}_{order['amount']}"


@app.job(name="shop.email")
async def email(ctx: JobContext, to: str) -> str:
    return f"receipt for {ctx.parent_results['charge']} sent to {to}"


@app.job(name="shop.report")
async def report(ctx: JobContext) -> int:
    for step, line in sorted(ctx.parent_results.items()):
        print(f"  {step}: {line}")
    return len(ctx.parent_results)


@app.job(name="shop.archive")
async def archive(ctx: JobContext) -> str:
    (emails_sent,) = ctx.parent_results.values()  # keyed by the parent's job id here
    return f"archived after {emails_sent} emails"


async def main() -> int:
    async with app:
        await app.setup()
        stop = asyncio.Event()
        worker = asyncio.create_task(app.run_worker(concurrency=4, shutdown_event=stop))
        try:
            wf = app.workflow(name="order-42")
            v = wf.add(validate, name="validate", order_id=42)
            c = wf.add(charge, name="charge", after=[v])
            to = ["buyer@example.com", "seller@example.com", "accounts@example.com"]
            mails = [wf.add(email, name=f"email-{i}", after=[c], to=t) for i, t in enumerate(to)]
            r = wf.add(report, name="report", after=mails)
            ids = await wf.enqueue()  # every step in one transaction
            print(f"workflow {wf.id}: {len(ids)} steps")

            done = await app.wait(ids["report"], timeout=30)
            assert done["status"] == "done" and await app.get_result(ids["report"]) == 3, done
            # a continuation of an existing job: runs once the report is done
            later = await app.continue_with(r.id, archive)
            archived = await app.wait(later, timeout=30)
            assert archived["status"] == "done", archived
            print(await app.get_result(later))

            got = await app.get_workflow(wf.id)
            assert got is not None and got["status"] == "done", got
            print(f"workflow status: {got['status']}, steps: {len(got['steps'])}")
        finally:
            stop.set()
            await worker
    print("OK workflows")
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
