"""`soniq workflows list|show` and `soniq enqueue --after`."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from soniq import Soniq
from tests.cli.cli_helpers import run_soniq

pytestmark = pytest.mark.asyncio


@pytest.fixture
async def app(make_app: Any) -> Soniq:
    return await make_app(enqueue_validation="none")


async def test_workflows_list_and_show(app: Soniq, cli_env: dict[str, str]) -> None:
    wf = app.workflow(name="order-42")
    charge = wf.add("charge")
    mails = [wf.add("mail", name=f"mail-{i}", after=[charge]) for i in range(3)]
    wf.add("report", after=mails)
    ids = await wf.enqueue()

    listed = await asyncio.to_thread(run_soniq, cli_env, "workflows", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert [(r["id"], r["name"], r["status"], r["steps"]) for r in rows] == [
        (wf.id, "order-42", "running", 5)
    ]
    done = await asyncio.to_thread(run_soniq, cli_env, "workflows", "list", "--status", "done")
    assert done.returncode == 0 and "(none)" in done.stdout

    shown = await asyncio.to_thread(run_soniq, cli_env, "workflows", "show", wf.id)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert "order-42" in lines[0] and "running" in lines[0]
    charge_line = next(i for i, x in enumerate(lines) if "charge queued" in x)
    report_line = next(i for i, x in enumerate(lines) if "report waiting" in x)
    assert charge_line < report_line and "also after mail-1, mail-2" in lines[report_line]
    as_json = await asyncio.to_thread(run_soniq, cli_env, "workflows", "show", wf.id, "--json")
    steps = {s["step"]: s for s in json.loads(as_json.stdout)["steps"]}
    assert steps["report"]["id"] == ids["report"] and steps["mail-0"]["after"] == [charge.id]

    missing = await asyncio.to_thread(run_soniq, cli_env, "workflows", "show", "nope")
    assert missing.returncode == 1 and "no workflow" in missing.stderr
