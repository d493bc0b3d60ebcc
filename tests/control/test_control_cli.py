"""The job control CLI: jobs list --tag, jobs cancel --abort, inspect --job, dead-letter
reasons."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from soniq import JobContext, JobStatus, Soniq
from tests.cli.cli_helpers import as_json, invoke
from tests.conftest import wait_for


@pytest.fixture
def env(pg_url: str, schema_name: str) -> dict[str, str]:
    return {"SONIQ_DATABASE_URL": pg_url, "SONIQ_SCHEMA": schema_name}


async def test_jobs_list_by_tag_and_inspect_shows_tags(app: Soniq, env: dict[str, str]) -> None:
    @app.job(name="report")
    async def report() -> None: ...

    a = await app.enqueue(report, tags={"tenant": "acme", "kind": "pdf"})
    b = await app.enqueue(report, tags={"tenant": "acme", "kind": "csv"})
    await app.enqueue(report, tags={"tenant": "globex"})
    rows = as_json(await invoke(env, "jobs", "list", "--tag", "tenant=acme", "--json"))
    assert {r["id"] for r in rows} == {a, b}
    rows = as_json(
        await invoke(env, "jobs", "list", "--tag", "tenant=acme", "--tag", "kind=pdf", "--json")
    )
    assert [r["id"] for r in rows] == [a]
    table = await invoke(env, "jobs", "list", "--tag", "tenant=acme")
    assert table.exit_code == 0 and "2 job(s)" in table.output
    bad = await invoke(env, "jobs", "list", "--tag", "tenant")
    assert bad.exit_code == 2 and "KEY=VALUE" in bad.output
    shown = await invoke(env, "inspect", "--job", a)
    assert shown.exit_code == 0, shown.output
    assert "kind=pdf, tenant=acme" in shown.output
    assert as_json(await invoke(env, "inspect", "--job", a, "--json"))["tags"] == {
        "tenant": "acme",
        "kind": "pdf",
    }


async def test_jobs_cancel_abort_stops_a_running_job(app: Soniq, env: dict[str, str]) -> None:
    started = asyncio.Event()

    @app.job(name="forever")
    async def forever(ctx: JobContext) -> None:
        await ctx.set_progress(0.25, "a quarter")
        started.set()
        await asyncio.sleep(60)

    job_id = await forever.enqueue()
    stop = asyncio.Event()
    worker = asyncio.create_task(app.run_worker(shutdown_event=stop))
    try:
        await asyncio.wait_for(started.wait(), 10)

        async def progress_shown() -> bool:
            out = await invoke(env, "inspect", "--job", job_id)
            return "25% (a quarter)" in out.output

        await wait_for(progress_shown, timeout=10)
        refused = await invoke(env, "jobs", "cancel", job_id)
        assert refused.exit_code == 1 and "--abort" in refused.output
        result = await invoke(env, "jobs", "cancel", job_id, "--abort")
        assert result.exit_code == 0, result.output
        assert "Abort requested" in result.output
        job = await app.wait(job_id, timeout=10)
        assert job["status"] == JobStatus.CANCELLED
        shown = await invoke(env, "inspect", "--job", job_id)
        assert "aborted" in shown.output
    finally:
        stop.set()
        await asyncio.wait_for(worker, 15)


async def test_dead_letter_cli_shows_not_retryable(app: Soniq, env: dict[str, str]) -> None:
    @app.job(name="strict", retries=5, no_retry_on=(ValueError,))
    async def strict() -> None:
        raise ValueError("bad input")

    await strict.enqueue()
    await app.run_worker(run_once=True)
    out: Any = await invoke(env, "dead-letter", "list")
    assert out.exit_code == 0 and "not_retryable" in out.output
    data = as_json(await invoke(env, "dead-letter", "list", "--json"))
    assert data["by_reason"] == {"not_retryable": 1}
