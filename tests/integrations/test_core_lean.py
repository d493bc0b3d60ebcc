"""The core stays lean: `import soniq` (and building an app) imports no framework, and the
trace_context migration upgrades a database of the previous version in place."""

from __future__ import annotations

import os
import subprocess
import sys

from soniq import Soniq
from tests.conftest import ROOT

FRAMEWORKS = ("django", "sqlalchemy", "psycopg", "fastapi", "starlette", "flask",
              "opentelemetry", "uvicorn", "greenlet")  # fmt: skip


def test_import_soniq_imports_no_framework() -> None:
    script = (
        "import sys, soniq\n"
        "app = soniq.Soniq('postgresql://x@127.0.0.1:1/x')\n"
        "app.sync\n"
        "@app.job()\n"
        "async def f() -> None: ...\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {FRAMEWORKS!r}))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=env, timeout=60)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


async def test_trace_context_migration_upgrades_in_place(app: Soniq) -> None:
    @app.job(name="keep")
    async def keep(n: int) -> None:
        pass

    schema = f'"{app.schema}"'
    async with app.backend.acquire() as conn:
        # back to the schema before 004, with rows in it
        await conn.execute(f"ALTER TABLE {schema}.soniq_jobs DROP COLUMN trace_context")
        await conn.execute(f"DELETE FROM {schema}.soniq_migrations WHERE version = 4")
    ids = [await keep.enqueue(n=i) for i in range(3)]  # the untraced insert needs no column
    assert await app.setup() == 1
    async with app.backend.acquire() as conn:
        n = await conn.fetchval(
            f"SELECT count(*) FROM {schema}.soniq_jobs WHERE trace_context IS NULL"
        )
    assert n == 3
    await app.run_worker(run_once=True)
    jobs = [await app.get_job(i) for i in ids]
    assert [j["status"] if j else None for j in jobs] == ["done"] * 3
