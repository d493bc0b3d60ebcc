"""OpenTelemetry across real processes: a producer and a `soniq worker`, each exporting its
spans to a file; the worker's CONSUMER spans continue the producer's trace."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from soniq import Soniq
from tests.conftest import ROOT, SONIQ_BIN

pytest.importorskip("opentelemetry.sdk")

PRODUCER = """
import asyncio, json
from opentelemetry import trace
from tests.integrations.otel_jobs import app, ship, flaky

async def main():
    tracer = trace.get_tracer("web")
    with tracer.start_as_current_span("POST /orders"):
        one = await ship.enqueue(order_id=1)
        bad = await flaky.enqueue()
        many = await app.enqueue_many(ship, [{"order_id": 2}, {"order_id": 3}])
    plain = await ship.enqueue(order_id=4)  # no current span: a trace of its own
    await app.close()
    return {"one": one, "bad": bad, "many": many, "plain": plain}

ids = asyncio.run(main())

# sync callers: the caller thread's span is the parent; psycopg's path stores the context too
import os, psycopg
with trace.get_tracer("web").start_as_current_span("GET /sync"):
    ids["sync"] = app.sync.enqueue(ship, order_id=5)
    with psycopg.connect(os.environ["SONIQ_DATABASE_URL"]) as conn, conn.transaction():
        ids["psycopg"] = app.sync.enqueue(ship, order_id=6, connection=conn)
app.sync.close()
print(json.dumps(ids))
"""


def spans(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


async def test_worker_span_continues_the_producer_trace(
    app: Soniq, pg_url: str, schema_name: str, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SONIQ_")}
    env.update(SONIQ_DATABASE_URL=pg_url, SONIQ_SCHEMA=schema_name, PYTHONPATH=str(ROOT))
    produced, consumed = tmp_path / "producer.jsonl", tmp_path / "worker.jsonl"
    proc = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", PRODUCER], env={**env, "SONIQ_TEST_SPANS": str(produced)},
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ids = json.loads(proc.stdout.strip().splitlines()[-1])
    job = await app.get_job(ids["one"])
    assert job is not None
    worker = await asyncio.to_thread(
        subprocess.run,
        [SONIQ_BIN, "worker", "--jobs-modules", "tests.integrations.otel_jobs", "--run-once"],
        env={**env, "SONIQ_TEST_SPANS": str(consumed)},
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert worker.returncode == 0, worker.stdout + worker.stderr

    p = spans(produced)
    request = next(s for s in p if s["name"] == "POST /orders")
    sends = [s for s in p if s["kind"] == "PRODUCER"]
    assert [s["name"] for s in sends] == ["send default"] * 6
    send_one, send_bad, send_many, send_plain = sends[:4]
    for s in (send_one, send_bad, send_many):
        assert s["trace_id"] == request["trace_id"] and s["parent"] == request["span_id"]
    assert send_one["attributes"] == {
        "messaging.system": "soniq",
        "messaging.destination.name": "default",
        "messaging.operation.type": "send",
        "soniq.task": "ship",
        "messaging.message.id": ids["one"],
    }
    assert send_many["attributes"]["messaging.batch.message_count"] == 2
    assert send_plain["trace_id"] != request["trace_id"] and send_plain["parent"] is None

    c = spans(consumed)
    assert all(s["kind"] == "CONSUMER" for s in c)
    by_id: dict[str, list[dict[str, Any]]] = {}
    for s in c:
        by_id.setdefault(s["attributes"]["messaging.message.id"], []).append(s)

    (one,) = by_id[ids["one"]]
    assert one["name"] == "process ship"
    assert one["trace_id"] == request["trace_id"] and one["parent"] == send_one["span_id"]
    assert one["status"] == "UNSET"
    assert one["attributes"]["soniq.attempt"] == 1
    assert one["attributes"]["messaging.destination.name"] == "default"
    assert one["attributes"]["soniq.task"] == "ship"

    # a retried job: one span per attempt, in the same trace, each with its error recorded
    bad = sorted(by_id[ids["bad"]], key=lambda s: s["attributes"]["soniq.attempt"])
    assert [s["attributes"]["soniq.attempt"] for s in bad] == [1, 2]
    assert len({s["span_id"] for s in bad}) == 2
    for s in bad:
        assert s["trace_id"] == request["trace_id"] and s["parent"] == send_bad["span_id"]
        assert s["status"] == "ERROR" and s["events"] == ["exception"]

    for job_id in ids["many"]:
        (s,) = by_id[job_id]
        assert s["parent"] == send_many["span_id"] and s["trace_id"] == request["trace_id"]
    sync_request = next(s for s in p if s["name"] == "GET /sync")
    for key in ("sync", "psycopg"):
        (send,) = [s for s in sends if s["attributes"].get("messaging.message.id") == ids[key]]
        assert send["parent"] == sync_request["span_id"]
        (s,) = by_id[ids[key]]
        assert s["trace_id"] == sync_request["trace_id"] and s["parent"] == send["span_id"]
    (plain,) = by_id[ids["plain"]]
    assert plain["trace_id"] == send_plain["trace_id"] and plain["parent"] == send_plain["span_id"]


def test_no_provider_no_tracing_no_import(pg_url: str, schema_name: str) -> None:
    script = f"""
import asyncio, sys
from soniq import Soniq, otel
app = Soniq({pg_url!r}, schema={schema_name!r})
print("IMPORTED", "opentelemetry" in sys.modules)

@app.job(name="j")
async def j() -> None:
    pass

async def main():
    await app.setup()
    import opentelemetry.trace  # the API present, no provider configured
    print("ACTIVE", otel.active())
    job_id = await j.enqueue()
    async with app.backend.acquire() as conn:
        stored = await conn.fetchval(
            'SELECT trace_context FROM "{schema_name}".soniq_jobs WHERE id = $1::uuid', job_id)
    print("STORED", stored)
    await app.run_worker(run_once=True)
    print("RESULT", (await app.get_job(job_id))["status"])
    await app.close()

asyncio.run(main())
"""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines == ["IMPORTED False", "ACTIVE False", "STORED None", "RESULT done"], lines
