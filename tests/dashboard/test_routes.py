"""The dashboard over the ASGI test client: pages, auth, read-only, CSRF, escaping, headers."""

from __future__ import annotations

import html
import json
import re

import pytest
from markupsafe import escape

from soniq import Soniq, task_ref
from soniq.dashboard.auth import COOKIE
from tests.dashboard.helpers import AUTH, TOKEN, XSS, client, csrf_of, history

PAGES = ["/", "/jobs", "/dead-letters", "/schedules", "/workflows", "/webhooks"]
WRITES = ["cancel", "abort", "retry", "replay", "delete"]


def pages_of(h: object) -> list[str]:
    ids = [getattr(h, k) for k in ("done", "dead", "queued", "cancelled", "xss")]
    return [
        *PAGES,
        *(f"/jobs/{i}" for i in ids),
        "/jobs?status=done",
        "/jobs?queue=critical",
        "/jobs?task=dash.ok",
    ]


async def test_every_page_200_with_token_and_401_without(app: Soniq) -> None:
    h = await history(app)
    async with client(app) as c:
        for path in pages_of(h):
            r = await c.get(path, headers=AUTH)
            assert r.status_code == 200, (path, r.text[:500])
            assert r.headers["content-type"].startswith("text/html")
            assert "<form" not in r.text or "data-action" not in r.text, path  # read-only
            anon = await c.get(path)
            assert anon.status_code == 401, path
            assert 'name="token"' in anon.text  # the login form
            assert h.done not in anon.text and h.xss not in anon.text
            assert anon.headers["www-authenticate"].startswith("Bearer")
            wrong = await c.get(path, headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 401
        r = await c.get("/events", headers={"Accept": "text/event-stream"})
        assert r.status_code == 401


async def test_pages_show_the_jobs(app: Soniq) -> None:
    h = await history(app)
    async with client(app) as c:
        jobs = (await c.get("/jobs", headers=AUTH)).text
        for job_id in (h.done, h.dead, h.queued, h.cancelled, h.xss):
            assert f'href="/jobs/{job_id}"' in jobs
        done = (await c.get("/jobs?status=done", headers=AUTH)).text
        assert h.done in done and h.dead not in done and h.queued not in done
        dead = (await c.get("/dead-letters", headers=AUTH)).text
        assert h.dead in dead and h.xss in dead and h.done not in dead
        page = (await c.get(f"/jobs/{h.done}", headers=AUTH)).text
        assert "&#34;double&#34;: 42" in page  # the result
        page = (await c.get(f"/jobs/{h.dead}", headers=AUTH)).text
        assert "RuntimeError: bad plain" in page and "Attempt 1" in page
        overview = (await c.get("/", headers=AUTH)).text
        assert re.search(r'data-queue="critical".*?data-count="dead_letter">2<', overview, re.S)
        assert "Succeeded per minute" in overview and "<rect" in overview
        assert "No workflows have been started" in (await c.get("/workflows", headers=AUTH)).text
        wf = app.workflow(name="wf-<b>")
        wf.add(task_ref("x.step"))
        await wf.enqueue()
        listed = (await c.get("/workflows", headers=AUTH)).text
        assert wf.id in listed and "wf-&lt;b&gt;" in listed and "queued</a> 1" in listed
        assert "No webhooks configured" in (await c.get("/webhooks", headers=AUTH)).text
        hook = await app.webhooks.add("http://127.0.0.1:9/hook?a=1&b=<x>", events=["job.failed"])
        hooks = (await c.get("/webhooks", headers=AUTH)).text
        assert hook["id"] in hooks and "job.failed" in hooks and "No deliveries yet" in hooks
        assert "b=&lt;x&gt;" in hooks and hook["secret"] not in hooks
        async with app.backend.acquire() as conn:  # one attempt, as the delivery task records it
            await conn.execute(
                f'INSERT INTO "{app.schema}".soniq_webhook_deliveries (webhook_id, message_id, '
                "job_id, event, attempt, status_code, error, duration) "
                "VALUES ($1::uuid, $2::uuid, $2::uuid, 'job.failed', 2, 500, '<b>boom</b>', 0.25)",
                hook["id"],
                h.dead,
            )
        hooks = (await c.get("/webhooks", headers=AUTH)).text
        assert f'href="/jobs/{h.dead}"' in hooks and "&lt;b&gt;boom&lt;/b&gt;" in hooks
        assert "0.250 s" in hooks and ">500<" in hooks
        assert await app.webhooks.remove(hook["id"])
        missing = await c.get("/jobs/00000000-0000-0000-0000-000000000000", headers=AUTH)
        assert missing.status_code == 404
        bad = await c.get("/jobs?status=exploded", headers=AUTH)
        assert bad.status_code == 400 and "unknown status" in bad.text
        vip = await app.enqueue("dash.ok", args={"n": 3}, tags={"tier": "vip"})
        tagged = (await c.get("/jobs?tag=tier%3Dvip", headers=AUTH)).text
        assert f'href="/jobs/{vip}"' in tagged and h.done not in tagged
        bad = await c.get("/jobs?tag=novalue", headers=AUTH)
        assert bad.status_code == 400 and "KEY=VALUE" in bad.text


async def test_token_in_url_is_ignored(app: Soniq) -> None:
    async with client(app) as c:
        for param in ("token", "access_token", "auth"):
            r = await c.get(f"/?{param}={TOKEN}")
            assert r.status_code == 401


async def test_login_form_sets_a_strict_httponly_cookie(app: Soniq) -> None:
    async with client(app) as c:
        bad = await c.post("/login", data={"token": "wrong"})
        assert bad.status_code == 401 and "wrong token" in bad.text
        r = await c.post("/login", data={"token": TOKEN})
        assert r.status_code == 303 and r.headers["location"] == "/"
        cookie = r.headers["set-cookie"]
        assert cookie.startswith(f"{COOKIE}=")
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
        assert "Secure" not in cookie  # plain http here
        assert TOKEN not in cookie  # the cookie holds a signature, not the token
        assert (await c.get("/")).status_code == 200  # the client keeps the cookie
        out = await c.post("/logout", headers={"Accept": "text/html"})
        assert out.status_code == 303
        c.cookies.clear()
        assert (await c.get("/")).status_code == 401
    async with client(app, base_url="https://dash.test") as c:
        r = await c.post("/login", data={"token": TOKEN})
        assert "Secure" in r.headers["set-cookie"]


async def test_security_headers(app: Soniq) -> None:
    h = await history(app)
    async with client(app) as c:
        for path in ("/", f"/jobs/{h.done}", "/login"):
            r = await c.get(path, headers=AUTH)
            csp = r.headers["content-security-policy"]
            assert "script-src 'self'" in csp and "unsafe-inline" not in csp
            assert "frame-ancestors 'none'" in csp
            assert r.headers["x-frame-options"] == "DENY"
            assert r.headers["cache-control"] == "no-store"
            assert "<script>" not in r.text  # no inline script: only <script src=...>
        js = await c.get("/static/dashboard.js")
        assert js.status_code == 200 and "EventSource" in js.text  # no credentials needed


async def test_args_and_errors_are_escaped(app: Soniq) -> None:
    h = await history(app)
    async with client(app, writable=True) as c:
        for path in (f"/jobs/{h.xss}", "/jobs", "/dead-letters"):
            text = (await c.get(path, headers=AUTH)).text
            assert XSS not in text, path
            assert "<script>alert" not in text, path
            # shown, as escaped text (raw, or inside the JSON of the arguments)
            assert str(escape(XSS)) in text or str(escape(json.dumps(XSS))) in text, path
        page = (await c.get(f"/jobs/{h.xss}", headers=AUTH)).text
        assert "RuntimeError: bad " + str(escape(XSS)) in page


@pytest.mark.parametrize("action", WRITES)
async def test_writes_are_refused_when_read_only(app: Soniq, action: str) -> None:
    h = await history(app)
    async with client(app, writable=False) as c:
        page = (await c.get(f"/jobs/{h.dead}", headers=AUTH)).text
        assert "data-action" not in page and '<button type="submit">Retry' not in page
        for job_id in (h.dead, h.queued):
            r = await c.post(
                f"/jobs/{job_id}/{action}",
                data={"csrf": csrf_of(page) or "x"},
                headers={**AUTH, "Accept": "application/json"},
            )
            assert r.status_code == 403, r.text
        r = await c.post("/queues/default/pause", headers=AUTH)
        assert r.status_code == 403
    job = await app.get_job(h.dead)
    assert job is not None and job["status"] == "dead_letter"
    assert (await app.get_job(h.queued))["status"] == "queued"  # type: ignore[index]


async def test_writes_need_the_csrf_token_and_answer_the_new_state(app: Soniq) -> None:
    h = await history(app)
    async with client(app, writable=True) as c:
        page = (await c.get(f"/jobs/{h.queued}", headers=AUTH)).text
        csrf = csrf_of(page)
        assert 'data-action="cancel"' in page
        json_hdr = {**AUTH, "Accept": "application/json"}
        for form in ({}, {"csrf": "0" * 64}, {"csrf": ""}):
            r = await c.post(f"/jobs/{h.queued}/cancel", data=form, headers=json_hdr)
            assert r.status_code == 403 and "CSRF" in r.text
        assert (await app.get_job(h.queued))["status"] == "queued"  # type: ignore[index]
        r = await c.post(f"/jobs/{h.queued}/cancel", data={"csrf": csrf}, headers=json_hdr)
        assert r.status_code == 200 and r.json() == {
            "ok": True,
            "id": h.queued,
            "status": "cancelled",
        }
        r = await c.post(f"/jobs/{h.dead}/retry", headers={**json_hdr, "X-CSRF-Token": csrf})
        assert r.json()["status"] == "queued"
        r = await c.post(f"/jobs/{h.xss}/replay", data={"csrf": csrf}, headers=json_hdr)
        body = r.json()
        assert body["ok"] and body["status"] == "queued" and body["replayed_from"] == h.xss
        # a plain form post is redirected to the page that shows the new state
        r = await c.post(f"/jobs/{h.done}/delete", data={"csrf": csrf}, headers=AUTH)
        assert r.status_code == 303 and r.headers["location"] == "/jobs"
        assert await app.get_job(h.done) is None
        # abort, pause and resume wait for job control / flow control: refused, not faked
        abort = await c.post(f"/jobs/{body['id']}/abort", data={"csrf": csrf}, headers=json_hdr)
        pause = await c.post("/queues/default/pause", data={"csrf": csrf}, headers=json_hdr)
        for r, name in ((abort, "cancel_job"), (pause, "pause_queue")):
            import inspect

            available = (
                "abort" in inspect.signature(app.cancel_job).parameters
                if name == "cancel_job"
                else hasattr(app, name)
            )
            assert r.status_code == (200 if available else 501), r.text


async def test_keyset_pages_walk_every_job_once(app: Soniq) -> None:
    @app.job(name="dash.many")
    async def many(n: int) -> None: ...

    ids = await app.enqueue_many(many, [{"n": i} for i in range(120)])
    seen: list[str] = []
    async with client(app) as c:
        url = "/jobs?task=dash.many"
        while url:
            text = (await c.get(url, headers=AUTH)).text
            seen += re.findall(r'<tr data-job-id="([0-9a-f-]+)"', text)
            nxt = re.search(r'rel="next" href="([^"]+)"', text)
            url = html.unescape(nxt.group(1)) if nxt else ""
    assert seen == list(reversed(ids))


async def test_no_token_means_open_and_mountable(app: Soniq) -> None:
    from starlette.applications import Starlette
    from starlette.routing import Mount

    from soniq.dashboard import create_app

    outer = Starlette(routes=[Mount("/ops/soniq", app=create_app(app, token=None))])
    import httpx

    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=outer), base_url="http://x"
    ) as c:
        r = await c.get("/ops/soniq/")
        assert r.status_code == 200
        assert 'href="/ops/soniq/static/dashboard.css"' in r.text
        assert (await c.get("/ops/soniq/static/dashboard.js")).status_code == 200
    guarded = Starlette(routes=[Mount("/ops/soniq", app=create_app(app, token=TOKEN))])
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=guarded), base_url="http://x"
    ) as c:
        assert (await c.get("/ops/soniq/")).status_code == 401
        assert (await c.get("/ops/soniq/jobs")).status_code == 401
        assert (await c.get("/ops/soniq/static/dashboard.css")).status_code == 200
        login = await c.post("/ops/soniq/login", data={"token": TOKEN})
        assert login.headers["location"] == "/ops/soniq/"
        assert "Path=/ops/soniq/" in login.headers["set-cookie"]
        assert (await c.get("/ops/soniq/jobs")).status_code == 200


async def test_workflow_page_draws_the_dag_in_stages(app: Soniq) -> None:
    @app.job(name="dash.step")
    async def step(n: int) -> int:
        return n

    wf = app.workflow(name="order-<42>")
    fetch = wf.add(step, name="fetch", n=1)
    charge = wf.add(step, name="charge", after=[fetch], n=2)
    mails = [wf.add(step, name=f"mail-{i}", after=[charge], n=3 + i) for i in range(3)]
    wf.add(step, name="report", after=mails, n=9)
    ids = await wf.enqueue()
    async with client(app) as c:
        listing = (await c.get("/workflows", headers=AUTH)).text
        assert f'href="/workflows/{wf.id}"' in listing
        page = await c.get(f"/workflows/{wf.id}", headers=AUTH)
        assert page.status_code == 200
        html = page.text
        assert "order-&lt;42&gt;" in html and "<42>" not in html
        stages = re.findall(r"<h2>Stage (\d+)</h2>(.*?)</section>", html, re.S)
        names = [re.findall(r">(fetch|charge|mail-\d|report)</a>", body) for _, body in stages]
        assert names == [["fetch"], ["charge"], ["mail-0", "mail-1", "mail-2"], ["report"]]
        assert "after mail-0, mail-1, mail-2" in html
        for job_id in ids.values():
            assert f'href="/jobs/{job_id}"' in html
        missing = await c.get("/workflows/00000000-0000-0000-0000-000000000000", headers=AUTH)
        assert missing.status_code == 404
