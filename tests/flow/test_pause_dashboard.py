"""The dashboard's pause/resume buttons drive app.pause_queue/resume_queue, and the
overview shows the state."""

from __future__ import annotations

from soniq import Soniq
from tests.dashboard.helpers import AUTH, client, csrf_of


async def test_dashboard_pauses_and_resumes_a_queue(app: Soniq) -> None:
    @app.job(name="dash.flow", queue="mail")
    async def job() -> None: ...

    await app.enqueue("dash.flow")
    async with client(app, writable=True) as c:
        page = (await c.get("/", headers=AUTH)).text
        assert 'action="/queues/mail/pause"' in page
        hdr = {**AUTH, "Accept": "application/json"}
        r = await c.post("/queues/mail/pause", data={"csrf": csrf_of(page)}, headers=hdr)
        assert r.status_code == 200 and r.json()["paused"] is True
        assert [q["paused"] for q in await app.list_queues()] == [True]
        page = (await c.get("/", headers=AUTH)).text
        assert '<span class="paused">paused</span>' in page
        assert 'action="/queues/mail/resume"' in page
        r = await c.post("/queues/mail/resume", data={"csrf": csrf_of(page)}, headers=hdr)
        assert r.status_code == 200 and r.json()["paused"] is False
    assert [q["paused"] for q in await app.list_queues()] == [False]
