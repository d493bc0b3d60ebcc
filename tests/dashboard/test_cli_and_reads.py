"""`soniq dashboard` as a process, and the read methods the dashboard uses."""

from __future__ import annotations

import asyncio
import itertools
from datetime import datetime, timezone

import httpx
import pytest

from soniq import Soniq, SoniqError
from soniq.cli.dashboard import is_loopback
from tests.cli.cli_helpers import run_soniq
from tests.conftest import wait_for
from tests.dashboard.helpers import Proc, free_port, history


def test_loopback_names() -> None:
    for host in ("127.0.0.1", "127.0.0.5", "::1", "[::1]", "localhost"):
        assert is_loopback(host), host
    for host in ("0.0.0.0", "::", "10.0.0.1", "example.com", "192.168.1.2"):
        assert not is_loopback(host), host


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3"])
def test_non_loopback_host_without_token_is_refused(cli_env: dict[str, str], host: str) -> None:
    result = run_soniq(cli_env, "dashboard", "--host", host, "--port", "0", timeout=30)
    assert result.returncode == 2, result
    assert "SONIQ_DASHBOARD_TOKEN" in result.stderr and host in result.stderr


async def test_dashboard_process_serves_with_token(cli_env: dict[str, str], app: Soniq) -> None:
    port = free_port()
    env = {**cli_env, "SONIQ_DASHBOARD_TOKEN": "proc-token"}
    dash = Proc(env, "dashboard", "--host", "0.0.0.0", "--port", str(port))
    proc = dash.proc
    try:
        url = f"http://127.0.0.1:{port}"

        async def up() -> bool:
            assert proc.poll() is None, dash.output()
            try:
                async with httpx.AsyncClient() as c:
                    return (await c.get(url + "/login")).status_code == 200
            except httpx.HTTPError:
                return False

        await wait_for(up, timeout=30, message="the dashboard process")
        async with httpx.AsyncClient(base_url=url) as c:
            assert (await c.get("/")).status_code == 401
            ok = await c.get("/", headers={"Authorization": "Bearer proc-token"})
            assert ok.status_code == 200 and "Overview" in ok.text
            write = await c.post("/jobs/x/cancel", headers={"Authorization": "Bearer proc-token"})
            assert write.status_code == 403  # not --writable
    finally:
        proc.terminate()
        await asyncio.to_thread(proc.wait, 10)
        dash.stop()
    assert proc.returncode == 0


async def test_keyset_page_api(app: Soniq) -> None:
    h = await history(app)
    jobs, after = await app.list_jobs_page(limit=2)
    assert [j["id"] for j in jobs] == [h.cancelled, h.queued] and after == h.queued
    rest, end = await app.list_jobs_page(before=after, limit=10)
    assert [j["id"] for j in rest] == [h.xss, h.dead, h.done] and end is None
    dead, _ = await app.list_jobs_page(status="dead_letter")
    assert {j["id"] for j in dead} == {h.dead, h.xss}
    assert (await app.list_jobs_page(queue="critical", job_name="dash.ok"))[0] == []
    letters, cursor = await app.list_dead_letters_page(limit=1)
    assert [j["id"] for j in letters] == [h.xss] and cursor == h.xss
    letters, cursor = await app.list_dead_letters_page(before=cursor)
    assert [j["id"] for j in letters] == [h.dead] and cursor is None
    for bad in ({"before": "nope"}, {"limit": 0}, {"limit": 501}, {"status": "exploded"}):
        with pytest.raises(SoniqError) as err:
            await app.list_jobs_page(**bad)  # type: ignore[arg-type]
        assert err.value.error_code == "SONIQ_ENQUEUE_INVALID"


async def test_counts_per_minute_and_running(app: Soniq) -> None:
    await history(app)
    minutes = await app.job_counts_per_minute(60)
    assert len(minutes) == 60
    assert (
        minutes[-1]["minute"] == datetime.now(timezone.utc).replace(second=0, microsecond=0)
        or minutes[-2]["finished"] + minutes[-1]["finished"] == 1
    )
    assert sum(m["finished"] for m in minutes) == 1  # the one done job (cancelled do not count)
    assert sum(m["failed"] for m in minutes) == 2
    assert all(a["minute"] < b["minute"] for a, b in itertools.pairwise(minutes))
    assert await app.list_running_jobs() == []
    with pytest.raises(SoniqError):
        await app.job_counts_per_minute(0)
    statuses = await app.get_job_statuses([(await app.list_jobs_page())[0][0]["id"], "bad-id"])
    assert [s["status"].value for s in statuses.values()] == ["cancelled"]
