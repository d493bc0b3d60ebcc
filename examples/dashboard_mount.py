"""Mount the soniq dashboard inside your own Starlette/FastAPI service, behind its own auth.

    pip install 'soniq[dashboard]'
    python examples/dashboard_mount.py            # checks itself through an ASGI client
    python examples/dashboard_mount.py --serve    # http://127.0.0.1:8000/admin/jobs/

The service's middleware decides who may see ``/admin/jobs``: here a toy header check
(``X-Staff: yes``); in a real app, your session or SSO. The dashboard itself then runs
without a token (``token=None``) and read-only; pass ``writable=True`` for staff who may
cancel, retry and replay. FastAPI is the same: ``api.mount("/admin/jobs", dashboard)``
plus a middleware (FastAPI's dependencies do not apply to mounted apps).
"""

from __future__ import annotations

import asyncio
import sys

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Mount, Route

from soniq import Soniq
from soniq.dashboard import create_app

app = Soniq()  # SONIQ_DATABASE_URL / SONIQ_SCHEMA, else the embedded server


@app.job(name="example.resize")
async def resize(image: str) -> str:
    return f"{image} resized"


class StaffOnly(BaseHTTPMiddleware):
    """Your app's own auth, in front of everything under /admin."""

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        if request.url.path.startswith("/admin") and request.headers.get("x-staff") != "yes":
            return PlainTextResponse("staff only", status_code=403)
        return await call_next(request)


async def home(request: Request) -> Response:
    return PlainTextResponse("my service")


service = Starlette(
    routes=[Route("/", home), Mount("/admin/jobs", app=create_app(app, writable=False))],
    middleware=[Middleware(StaffOnly)],
)


async def check() -> int:
    import httpx  # the check's client (a dev dependency); serving does not need it

    async with app:
        await app.setup()
        job_id = await resize.enqueue(image="cat.png")  # type: ignore[attr-defined]
        transport = httpx.ASGITransport(app=service)
        async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
            outsider = await client.get("/admin/jobs/")
            assert outsider.status_code == 403, outsider.status_code
            staff = {"X-Staff": "yes"}
            jobs = await client.get("/admin/jobs/jobs", headers=staff)
            assert jobs.status_code == 200 and job_id in jobs.text
            page = await client.get(f"/admin/jobs/jobs/{job_id}", headers=staff)
            assert "cat.png" in page.text and 'href="/admin/jobs/static/dashboard.css"' in page.text
            refused = await client.post(f"/admin/jobs/jobs/{job_id}/cancel", headers=staff)
            assert refused.status_code == 403  # read-only
    print(f"OK: dashboard mounted at /admin/jobs behind the service's auth, job {job_id} shown")
    return 0


if __name__ == "__main__":
    if "--serve" in sys.argv:
        import uvicorn

        uvicorn.run(service, host="127.0.0.1", port=8000)
    else:
        sys.exit(asyncio.run(check()))
