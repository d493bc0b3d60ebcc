"""soniq.contrib.django.enqueue in a real Django project on the test PostgreSQL: the job
commits or rolls back with transaction.atomic(), and a `soniq worker` runs what committed."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import pytest

from soniq import JobStatus, Soniq
from tests.conftest import ROOT, SONIQ_BIN

pytest.importorskip("django")
pytest.importorskip("psycopg")


def env_for(pg_url: str, schema: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SONIQ_")}
    env.update(SONIQ_DATABASE_URL=pg_url, SONIQ_SCHEMA=schema, PYTHONPATH=str(ROOT))
    return env


async def test_django_commit_runs_rollback_writes_nothing(
    app: Soniq, pg_url: str, schema_name: str
) -> None:
    env = env_for(pg_url, schema_name)
    proc = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "tests.integrations.django_site"],
        env=env, capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["jobs"] == 1
    assert await app.get_job(out["dropped"]) is None
    kept = await app.get_job(out["kept"])
    assert kept is not None and kept["status"] is JobStatus.QUEUED
    assert kept["job_name"] == "ship" and kept["args"] == {"order_id": 1}

    worker = await asyncio.to_thread(
        subprocess.run,
        [SONIQ_BIN, "worker", "--jobs-modules", "tests.integrations.jobs_app", "--run-once"],
        env=env, capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert worker.returncode == 0, worker.stdout + worker.stderr
    assert await app.get_result(out["kept"]) == "shipped 1"


def test_django_enqueue_same_rules_one_statement(pg_url: str, schema_name: str) -> None:
    script = """
import tests.integrations.django_site  # configures Django
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from soniq import SoniqError, task_ref
from soniq.contrib.django import enqueue
from tests.integrations.jobs_app import app, ship
app.sync.setup()
with CaptureQueriesContext(connection) as queries, transaction.atomic():
    enqueue(ship, order_id=5, queue="rush", priority=3)
print("STATEMENTS", len([q for q in queries if "soniq_jobs" in q["sql"]]))
for bad in ({"order_id": float("nan")}, {"nope": 1}):
    try:
        enqueue(ship, **bad)
    except SoniqError as e:
        print("ERROR", e.error_code)
try:
    enqueue("ghost")
except SoniqError as e:
    print("NOAPP", "SONIQ_APP" in e.message)
try:
    enqueue("ghost", app=app)
except SoniqError as e:
    print("ERROR", e.error_code)
print("REF", len(enqueue(task_ref("ghost"), app=app, args={"a": 1})))
print("DEDUP", enqueue(ship, order_id=9, dedup_key="d") == enqueue(ship, order_id=9, dedup_key="d"))
app.sync.close()
"""
    proc = subprocess.run(
        [sys.executable, "-c", script], env=env_for(pg_url, schema_name),
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert "STATEMENTS 1" in lines
    assert lines.count("ERROR SONIQ_TASK_ARGS_INVALID") == 2
    assert "NOAPP True" in lines and "ERROR SONIQ_UNKNOWN_TASK_NAME" in lines
    assert "REF 36" in lines and "DEDUP True" in lines
