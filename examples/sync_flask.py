"""Enqueue from code without an event loop: Flask views and scripts use ``app.sync``.

    python examples/sync_flask.py

``app.sync.enqueue`` / ``get_job`` / ``get_result`` / ``run_worker`` ... take the same
arguments as the async methods and may be called from any thread. With ``connection=`` a
psycopg 3 connection, the job is written in that connection's transaction.
"""

from __future__ import annotations

import sys

try:
    import flask
    import psycopg
except ImportError as exc:
    print(f"SKIP {exc.name} is not installed: pip install 'soniq[sync]' flask")
    sys.exit(0)

from soniq import Soniq

app = Soniq()  # SONIQ_DATABASE_URL (or the embedded server)


@app.job(name="shop.send_receipt")
def send_receipt(order_id: int) -> str:
    return f"receipt for order {order_id}"


web = flask.Flask(__name__)


@web.post("/orders/<int:order_id>")
def place_order(order_id: int) -> dict[str, str]:
    return {"job_id": app.sync.enqueue(send_receipt, order_id=order_id)}


@web.get("/jobs/<job_id>")
def show_job(job_id: str) -> dict[str, object]:
    job = app.sync.get_job(job_id)
    if job is None:
        flask.abort(404)
    return {"status": str(job["status"]), "result": app.sync.get_result(job_id)}


def main() -> None:
    app.sync.setup()
    client = web.test_client()
    job_id = client.post("/orders/7").get_json()["job_id"]
    print("enqueued from a Flask view:", client.get(f"/jobs/{job_id}").get_json())

    # a psycopg 3 transaction: the job commits or rolls back with your rows
    url = app.sync.database_url()
    with psycopg.connect(url) as conn:
        with conn.transaction():
            kept = app.sync.enqueue(send_receipt, order_id=8, connection=conn)
        try:
            with conn.transaction():
                dropped = app.sync.enqueue(send_receipt, order_id=9, connection=conn)
                raise RuntimeError("payment declined")
        except RuntimeError:
            pass
    assert app.sync.get_job(dropped) is None, "a rolled-back job must not exist"

    app.sync.run_worker(run_once=True)  # a worker would normally be `soniq worker`
    print("after the worker:", client.get(f"/jobs/{job_id}").get_json())
    assert app.sync.get_result(kept) == "receipt for order 8"
    app.sync.close()
    print("OK sync callers")


if __name__ == "__main__":
    main()
