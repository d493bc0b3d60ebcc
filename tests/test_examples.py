"""Every file in ``examples/`` runs to completion against the test database.

Each example runs in its own process, on its own schema (``SONIQ_SCHEMA``), with
``SONIQ_DATABASE_URL`` pointing at the test server, under a timeout. It must exit 0 and
print a line starting with ``OK`` (the convention for new examples, too). An integration
example whose extra is missing prints ``SKIP <reason>`` and exits 0 instead.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from tests.conftest import ROOT

EXAMPLES = sorted((ROOT / "examples").glob("*.py"))
TIMEOUT = 90


def test_examples_exist() -> None:
    names = {p.name for p in EXAMPLES}
    assert {"quickstart.py", "transactional_enqueue.py", "retries.py"} <= names


@pytest.fixture
def example_schema(pg_url: str) -> Iterator[str]:
    import asyncio

    name = f"ex_{uuid.uuid4().hex[:12]}"
    yield name

    async def drop() -> None:
        conn = await asyncpg.connect(pg_url)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
        finally:
            await conn.close()

    asyncio.run(drop())


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_runs(path: Path, pg_url: str, example_schema: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SONIQ_")}
    env.update(
        SONIQ_DATABASE_URL=pg_url,
        SONIQ_SCHEMA=example_schema,
        PYTHONUNBUFFERED="1",
        PYTHONPATH=os.pathsep.join(p for p in [str(ROOT), env.get("PYTHONPATH", "")] if p),
    )
    proc = subprocess.run(
        [sys.executable, str(path)],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=TIMEOUT,
    )  # fmt: skip
    output = f"--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
    assert proc.returncode == 0, output
    skipped = [line for line in proc.stdout.splitlines() if line.startswith("SKIP")]
    if skipped:  # an integration example whose extra is not installed says so
        pytest.skip(f"{path.name}: {skipped[0]}")
    assert any(line.startswith("OK") for line in proc.stdout.splitlines()), (
        f"{path.name} must print a line starting with 'OK' when it worked\n{output}"
    )
