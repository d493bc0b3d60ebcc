"""Every failed attempt keeps its error and traceback (issue 18, item 6)."""

from __future__ import annotations

from typing import Any

from soniq import JobStatus, Soniq
from soniq.outcomes import TRACEBACK_CHARS
from tests.cli.cli_helpers import as_json, invoke


def _deep() -> None:
    exc = KeyError("deep")
    exc.add_note("y" * 100_000)  # in the traceback text, not in the error line
    raise exc


async def test_each_failed_attempt_keeps_its_traceback(app: Soniq) -> None:
    calls: list[int] = []

    @app.job(name="e.flaky", retries=2)
    async def flaky(n: int) -> int:
        calls.append(n)
        if len(calls) < 3:
            raise ValueError(f"attempt {len(calls)} failed")
        return n

    job_id = await flaky.enqueue(n=1)  # type: ignore[attr-defined]
    await app.run_worker(run_once=True)
    job: dict[str, Any] = await app.get_job(job_id) or {}
    assert job["status"] is JobStatus.DONE
    errors = job["errors"]
    assert [e["attempt"] for e in errors] == [1, 2]
    assert [e["error"] for e in errors] == [f"ValueError: attempt {i} failed" for i in (1, 2)]
    for e in errors:
        assert set(e) >= {"attempt", "at", "error", "traceback"}
        assert e["traceback"].startswith("Traceback (most recent call last)")
        assert "in flaky" in e["traceback"]


async def test_a_huge_traceback_is_cut_to_its_end_and_dead_letters_keep_them(app: Soniq) -> None:
    @app.job(name="e.deep", retries=1)
    def deep() -> None:  # a plain def: runs in the thread pool
        _deep()

    job_id = await deep.enqueue()  # type: ignore[attr-defined]
    await app.run_worker(run_once=True)
    job: dict[str, Any] = await app.get_job(job_id) or {}
    assert job["status"] is JobStatus.DEAD_LETTER
    assert len(job["errors"]) == 2
    for e in job["errors"]:
        text = e["traceback"]
        assert TRACEBACK_CHARS < len(text) <= TRACEBACK_CHARS + 100
        assert text.startswith("[... earlier lines cut ...]")
        assert text.rstrip().endswith("y" * 100)  # the end is kept
    entry = await app.dead_letter.get_dead_letter_job(job_id)
    assert entry is not None and entry.errors is not None
    assert [e["attempt"] for e in entry.errors] == [1, 2]


async def test_jobs_list_shows_an_error_only_when_it_made_the_state(
    app: Soniq, pg_url: str, schema_name: str
) -> None:
    failed_once: list[bool] = []

    @app.job(name="e.once", retries=3)
    async def once() -> None:
        if not failed_once:
            failed_once.append(True)
            raise RuntimeError("first attempt broke")

    @app.job(name="e.later", retries=3, retry_delay=3600)
    async def later() -> None:
        raise RuntimeError("waits an hour now")

    done_id = await once.enqueue()  # type: ignore[attr-defined]
    retry_id = await later.enqueue()  # type: ignore[attr-defined]
    await app.run_worker(run_once=True)
    assert (await app.get_job(done_id) or {})["status"] is JobStatus.DONE
    env = {"SONIQ_DATABASE_URL": pg_url, "SONIQ_SCHEMA": schema_name}
    result = await invoke(env, "jobs", "list")
    assert result.exit_code == 0, result.output
    lines = {ln.split("│")[1].strip(): ln for ln in result.stdout.splitlines() if "│" in ln}
    assert "first attempt broke" not in lines[done_id]
    assert "waits an hour now" in lines[retry_id]
    assert as_json(await invoke(env, "jobs", "list", "--json"))  # the raw field stays in JSON
