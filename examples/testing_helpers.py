"""Testing handlers with soniq.testing: no workers to start, and no database for the
inline and manual modes.

    python examples/testing_helpers.py          (or, in a test suite: pytest -p soniq.testing)

- ``Soniq(testing="inline")`` runs each job before ``enqueue`` returns, with retries and
  dead letters as a worker would; ``get_job``/``get_result`` see what ran.
- ``Soniq(testing="manual")`` only records jobs: assert on them, then ``drain``.
- The same ``assert_enqueued``/``drain`` work on a real, database-backed app.
"""

from __future__ import annotations

import asyncio

from soniq import JobStatus, Soniq
from soniq.testing import assert_enqueued, drain, perform_job, refute_enqueued


def shop(app: Soniq) -> tuple:  # the project's handlers, registered on the app under test
    sent: list[str] = []

    @app.job(name="shop.send_receipt", retries=2)
    async def send_receipt(order_id: int, email: str) -> str:
        if "@" not in email:
            raise ValueError(f"bad address {email!r}")
        sent.append(email)
        return f"receipt {order_id} -> {email}"

    @app.job(name="shop.checkout")
    async def checkout(order_id: int, email: str) -> None:
        await send_receipt.enqueue(order_id=order_id, email=email)

    return checkout, send_receipt, sent


async def inline() -> None:
    app = Soniq(testing="inline")
    checkout, send_receipt, sent = shop(app)
    await checkout.enqueue(order_id=1, email="ann@example.com")  # runs both jobs now
    assert sent == ["ann@example.com"]
    await assert_enqueued(app, send_receipt, args={"order_id": 1})
    bad = await send_receipt.enqueue(order_id=2, email="nobody")  # never raises
    job = await app.get_job(bad)
    assert job is not None and job["status"] is JobStatus.DEAD_LETTER and job["attempts"] == 3
    print("inline: receipt job ran; the bad address was dead-lettered after 3 attempts")


async def manual() -> None:
    app = Soniq(testing="manual")
    checkout, send_receipt, sent = shop(app)
    await checkout.enqueue(order_id=3, email="bob@example.com")
    await assert_enqueued(app, checkout, args={"order_id": 3}, count=1)
    await refute_enqueued(app, send_receipt)  # not yet: checkout has not run
    assert await drain(app) == {"done": 2, "dead_letter": 0, "cancelled": 0}
    assert sent == ["bob@example.com"]
    assert await perform_job(send_receipt, order_id=4, email="c@example.com") == (
        "receipt 4 -> c@example.com"
    )
    print("manual: asserted, drained, performed")


async def database() -> None:
    async with Soniq() as app:  # SONIQ_DATABASE_URL, or the embedded server
        await app.setup()
        checkout, _, sent = shop(app)
        await checkout.enqueue(order_id=5, email="dee@example.com")
        await assert_enqueued(app, checkout, args={"email": "dee@example.com"})
        counts = await drain(app)  # a worker in this process until nothing is runnable
        assert counts["done"] == 2 and sent == ["dee@example.com"], counts
        print("database: drained", counts)


async def main() -> None:
    await inline()
    await manual()
    await database()
    print("OK testing helpers")


if __name__ == "__main__":
    asyncio.run(main())
