"""A real browser (Debian's chromium, driven by Playwright) against `soniq dashboard` and
`soniq worker` processes: log in through the form, open every page, compare the numbers
with the database, replay a dead letter by clicking, watch a job's status change live, and
save a screenshot of each page into docs/images/dashboard/ (the docs show them).

Skipped, with the reason, when chromium or Playwright is not installed (`.ci/run` installs
chromium with apt when it runs as root). Playwright never downloads a browser here.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import sys
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timezone
from typing import Any

import httpx
import pytest

from soniq import Soniq
from tests.conftest import ROOT, wait_for
from tests.dashboard.browser_jobs import RELEASE_TABLE
from tests.dashboard.helpers import XSS, Proc, free_port

SHOTS = ROOT / "docs" / "images" / "dashboard"
TOKEN = "browser-test-token"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def chromium_path() -> str:
    path = shutil.which("chromium") or (
        "/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None
    )
    if path is None:
        reason = (
            "chromium is not installed: `apt-get install -y chromium` "
            "(.ci/run does it when run as root)"
        )
        print(f"SKIPPED browser test: {reason}", file=sys.stderr)
        pytest.skip(reason)
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        reason = "Playwright is not installed: pip install -e '.[dev]'"
        print(f"SKIPPED browser test: {reason}", file=sys.stderr)
        pytest.skip(reason)
    return path


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    started: list[Proc] = []
    yield started
    for p in started:
        p.stop()


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    path = chromium_path()
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            await b.close()


async def count(app: Soniq, where: str, *args: Any) -> int:
    async with app.backend.acquire() as conn:
        return int(
            await conn.fetchval(
                f'SELECT count(*) FROM "{app.schema}".soniq_jobs WHERE {where}', *args
            )
        )


async def status_of(app: Soniq, job_id: str) -> str | None:
    job = await app.get_job(job_id)
    return None if job is None else job["status"].value


async def test_dashboard_in_a_real_browser(
    app: Soniq, cli_env: dict[str, str], procs: list[Proc], browser: Any
) -> None:
    # -- a history with jobs in every state -------------------------------------------------
    @app.job(name="dash.ok")
    async def ok(n: int) -> dict[str, int]:
        return {"double": n * 2}

    @app.job(name="dash.bad", queue="critical", retries=0)
    async def bad(text: str) -> None:
        raise RuntimeError(f"bad {text}")

    @app.job(name="dash.hold")
    async def hold(key: str) -> str:  # runs in the worker process (browser_jobs.py)
        raise AssertionError("not run here")

    for n in range(3):
        await ok.enqueue(n=n)  # type: ignore[attr-defined]
    plain_dead = await bad.enqueue(text="plain input")  # type: ignore[attr-defined]
    xss_dead = await bad.enqueue(text=XSS)  # type: ignore[attr-defined]
    await app.run_worker(run_once=True, concurrency=4)
    for n in range(2):
        await app.enqueue("dash.ok", args={"n": 10 + n}, queue="emails")
    await app.enqueue("dash.ok", args={"n": 99}, scheduled_at=3600)
    cancelled = await app.enqueue("dash.ok", args={"n": 7}, queue="emails")
    assert await app.cancel_job(cancelled)
    async with app.backend.acquire() as conn:
        await conn.execute(RELEASE_TABLE.replace("{schema}", f'"{app.schema}"'))
    held = await app.enqueue("dash.hold", args={"key": "held"})

    env = {
        **cli_env,
        "SONIQ_JOBS_MODULES": "dashboard.browser_jobs",
        "SONIQ_DASHBOARD_TOKEN": TOKEN,
    }
    procs.append(Proc(env, "worker", "--queues", "default", "--concurrency", "2"))
    port = free_port()
    dash = Proc(env, "dashboard", "--port", str(port), "--writable")
    procs.append(dash)
    base = f"http://127.0.0.1:{port}"

    async def up() -> bool:
        assert dash.proc.poll() is None, dash.output()
        try:
            async with httpx.AsyncClient() as c:
                return (await c.get(base + "/static/dashboard.css")).status_code == 200
        except httpx.HTTPError:
            return False

    await wait_for(up, timeout=30, message="soniq dashboard to serve")
    await wait_for(lambda: _is(app, held, "processing"), message="the held job to run")

    SHOTS.mkdir(parents=True, exist_ok=True)
    page = await browser.new_page(viewport={"width": 1280, "height": 860})
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), asyncio.ensure_future(d.dismiss())))

    async def screenshot(name: str) -> None:
        await page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)

    # -- login through the form -------------------------------------------------------------
    response = await page.goto(base + "/")
    assert response.status == 401
    await screenshot("login")
    await page.fill('input[name="token"]', TOKEN)
    await page.click('form.login button[type="submit"]')
    await page.wait_for_selector("h1:text('Overview')")
    cookies = await page.context.cookies()
    session = [c for c in cookies if c["name"] == "soniq_dashboard"]
    assert session and session[0]["httpOnly"] and session[0]["sameSite"] == "Strict"

    # -- overview: queue counts as in the database ---------------------------------------------
    for queue in ("default", "critical", "emails"):
        row = page.locator(f'tr[data-queue="{queue}"]')
        for status in ("queued", "processing", "dead_letter"):
            shown = await row.locator(f'[data-count="{status}"]').inner_text()
            expected = await count(app, "queue = $1 AND status = $2", queue, status)
            assert int(shown) == expected, (queue, status, shown, expected)
    workers = page.locator("section:has(h2:text('Workers')) tbody tr")
    assert await workers.count() == len(await app.list_workers())  # the run_once one stopped
    alive = [w for w in await app.list_workers() if w["alive"]]
    assert len(alive) == 1
    assert await workers.filter(has_text="alive").count() == 1
    assert await page.locator(f'a[data-job-id="{held}"]').count() == 1  # its in-flight job
    done_total = await page.locator("[data-chart-total]").first.inner_text()
    assert int(done_total) == await count(app, "status = 'done'")
    await screenshot("overview")

    # -- jobs: every job, each with its status ------------------------------------------------
    await page.goto(base + "/jobs")
    rows = page.locator("table.jobs tbody tr")
    assert await rows.count() == await count(app, "true")
    for i in range(await rows.count()):
        job_id = await rows.nth(i).get_attribute("data-job-id")
        shown = await rows.nth(i).locator(".status").inner_text()
        assert shown == await status_of(app, job_id), job_id
    await page.select_option('select[name="status"]', "dead_letter")
    await page.click('form.filters button[type="submit"]')
    await page.wait_for_url(re.compile(r"status=dead_letter"))
    assert await rows.count() == await count(app, "status = 'dead_letter'")
    await page.goto(base + "/jobs")
    await screenshot("jobs")

    # -- one job: arguments and error shown as text, never run ---------------------------------
    await page.goto(f"{base}/jobs/{xss_dead}")
    assert json.dumps(XSS) in await page.locator("pre.args").inner_text()  # JSON, as text
    assert f"RuntimeError: bad {XSS}" in await page.locator("pre.error").first.inner_text()
    assert "Attempt 1" in await page.locator(".attempt h3").first.inner_text()
    assert not dialogs
    await screenshot("job")

    # -- dead letters: the count, then replay one by clicking ----------------------------------
    await page.goto(base + "/dead-letters")
    dead_rows = page.locator("table.dead tbody tr")
    assert await dead_rows.count() == await count(app, "status = 'dead_letter'") == 2
    await screenshot("dead-letters")
    await page.click(f'tr[data-job-id="{plain_dead}"] form[data-action="replay"] button')
    await page.wait_for_url(re.compile(r"/jobs/(?!" + plain_dead + r")[0-9a-f-]{36}$"))
    new_id = page.url.rsplit("/", 1)[1]
    assert await page.locator(f'[data-status-of="{new_id}"]').first.inner_text() == "queued"
    assert await status_of(app, new_id) == "queued"
    entry = await app.dead_letter.get_dead_letter_job(plain_dead)
    assert entry is not None and entry.resurrection_count == 1

    # -- schedules, workflows, webhooks ------------------------------------------------------
    await page.goto(base + "/schedules")
    text = await page.locator("main").inner_text()
    assert "dash.report-every-5-min" in text
    nxt = await page.locator("[data-next-run]").first.inner_text()
    at = datetime.strptime(nxt, "%Y-%m-%d %H:%M:%S %Z").replace(tzinfo=timezone.utc)
    assert at.minute % 5 == 0 and at.second == 0 and at > datetime.now(timezone.utc)
    await screenshot("schedules")
    await page.goto(base + "/workflows")
    assert "No workflows" in await page.locator("main").inner_text()
    await screenshot("workflows")
    await page.goto(base + "/webhooks")
    assert "No webhooks configured" in await page.locator("main").inner_text()
    await screenshot("webhooks")

    # -- a job's status changes live while the worker runs it, without a reload ----------------
    live = await app.enqueue("dash.hold", args={"key": "live"}, scheduled_at=3)
    await page.goto(f"{base}/jobs/{live}")
    status = page.locator(f'[data-status-of="{live}"]').first
    assert await status.inner_text() == "queued"
    await page.evaluate("window.__sameDocument = true")
    await page.wait_for_selector(f'[data-status-of="{live}"].s-processing', timeout=30_000)
    async with app.backend.acquire() as conn:
        await conn.execute(
            f'INSERT INTO "{app.schema}".test_release VALUES ($1), ($2)', "live", "held"
        )
    await page.wait_for_selector(f'[data-status-of="{live}"].s-done', timeout=30_000)
    assert await page.evaluate("window.__sameDocument === true")  # no reload happened
    assert await page.locator(f'[data-stale-of="{live}"]').is_visible()  # "reload for more"
    assert not await page.locator('form[data-action="cancel"]').is_visible()  # not for done
    assert await page.locator('form[data-action="delete"]').is_visible()
    assert await page.locator(f'[data-attempts-of="{live}"]').inner_text() == "1"
    assert await status_of(app, live) == "done"
    await screenshot("job-live")
    await page.close()


async def _is(app: Soniq, job_id: str, status: str) -> bool:
    return await status_of(app, job_id) == status
