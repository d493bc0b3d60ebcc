"""The dashboard's writes: each a POST carrying the CSRF token, served only when the
dashboard is writable (else 403), answered with the new state: JSON to ``fetch`` callers
(``Accept: application/json``), a redirect to the page showing it to plain form posts."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from soniq.errors import SoniqError

if TYPE_CHECKING:
    from soniq.dashboard.web import Dashboard

JOB_ACTIONS = ("cancel", "abort", "retry", "replay", "delete")
QUEUE_ACTIONS = ("pause", "resume")


def routes(dash: Dashboard) -> list[Route]:
    app = dash.app

    async def gate(request: Request, action: str) -> Response | None:
        """A refusal, or None when the write may go ahead."""
        if not dash.writable:
            return PlainTextResponse("403: this dashboard is read-only (start it --writable)", 403)
        form = await request.form()
        token = request.headers.get("x-csrf-token") or form.get("csrf")
        if not dash.guard.csrf_ok(str(token) if token is not None else None):
            return PlainTextResponse("403: missing or wrong CSRF token; reload the page", 403)
        if not dash.can(action):
            return PlainTextResponse(f"501: {action} is not available in this soniq version", 501)
        return None

    def answer(request: Request, ok: bool, state: dict[str, Any], url: str) -> Response:
        if "application/json" in request.headers.get("accept", ""):
            return JSONResponse({"ok": ok, **state}, status_code=200 if ok else 409)
        base = request.scope.get("root_path", "").rstrip("/")
        return RedirectResponse(base + url, 303)

    async def job_state(job_id: str) -> dict[str, Any]:
        job = await app.get_job(job_id)
        return {"id": job_id, "status": None if job is None else job["status"].value}

    async def job_action(request: Request) -> Response:
        job_id = request.path_params["job_id"]
        action = request.path_params["action"]
        if action not in JOB_ACTIONS:
            return PlainTextResponse(f"404: no action {action!r}", 404)
        refusal = await gate(request, action)
        if refusal is not None:
            return refusal
        if action == "replay":
            try:
                new_id = await app.dead_letter.replay(job_id)
            except SoniqError as exc:
                return answer(
                    request, False, {"id": job_id, "error": exc.message}, f"/jobs/{job_id}"
                )
            state = await job_state(new_id)
            return answer(request, True, {**state, "replayed_from": job_id}, f"/jobs/{new_id}")
        calls: dict[str, Callable[[], Awaitable[bool]]] = {
            "cancel": lambda: app.cancel_job(job_id),
            "abort": lambda: app.cancel_job(job_id, abort=True),
            "retry": lambda: app.retry_job(job_id),
            "delete": lambda: app.delete_job(job_id),
        }
        ok = bool(await calls[action]())
        url = "/jobs" if action == "delete" and ok else f"/jobs/{job_id}"
        return answer(request, ok, await job_state(job_id), url)

    async def queue_action(request: Request) -> Response:
        name = request.path_params["name"]
        action = request.path_params["action"]
        if action not in QUEUE_ACTIONS:
            return PlainTextResponse(f"404: no action {action!r}", 404)
        refusal = await gate(request, action)
        if refusal is not None:
            return refusal
        await getattr(app, f"{action}_queue")(name)
        return answer(request, True, {"queue": name, "paused": action == "pause"}, "/")

    return [
        Route("/jobs/{job_id}/{action}", job_action, methods=["POST"]),
        Route("/queues/{name}/{action}", queue_action, methods=["POST"]),
    ]
