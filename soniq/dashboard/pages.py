"""The dashboard's pages (GET), each read through public ``Soniq`` methods, and the login."""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from soniq.dashboard.auth import COOKIE
from soniq.errors import ENQUEUE_INVALID, SoniqError
from soniq.states import JobStatus

if TYPE_CHECKING:
    from soniq.dashboard.web import Dashboard

PAGE = 50
CHART_W, CHART_H = 600, 120


def moment(value: Any) -> Any:
    """A datetime from a datetime or an ISO 8601 string (JSON columns hold strings)."""
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return value
    return value


def when(value: Any) -> str:
    """A timestamp as ``YYYY-MM-DD HH:MM:SS UTC`` (empty for None)."""
    if value is None:
        return ""
    value = moment(value)
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S %Z").strip()
    return str(value)


def pretty(value: Any) -> str:
    """JSON, indented (the template escapes it)."""
    return json.dumps(value, indent=2, default=str, ensure_ascii=False)


def compact(value: Any, width: int = 80) -> str:
    """One-line JSON cut to ``width`` characters (the template escapes it)."""
    text = json.dumps(value, default=str, ensure_ascii=False)
    return text if len(text) <= width else text[: width - 1] + "…"


def chart(points: list[dict[str, Any]], key: str) -> dict[str, Any]:
    """Bars of ``points[i][key]`` scaled into a CHART_W x CHART_H SVG box."""
    top = max([p[key] for p in points] + [1])
    width = CHART_W / max(len(points), 1)
    bars = []
    for i, p in enumerate(points):
        h = round(p[key] / top * (CHART_H - 4), 1)
        bars.append(
            {
                "x": round(i * width, 1),
                "y": round(CHART_H - h, 1),
                "w": round(max(width - 1, 1), 1),
                "h": h,
                "label": f"{p['minute']:%H:%M} UTC: {p[key]}",
            }
        )
    return {
        "bars": bars,
        "max": top,
        "total": sum(p[key] for p in points),
        "w": CHART_W,
        "h": CHART_H,
    }


def routes(dash: Dashboard) -> list[Route]:
    app = dash.app

    async def overview(request: Request) -> Response:
        depths = {q["queue"]: dict(q) for q in await app.queue_depths()}
        hour = await app.queue_throughput(3600)
        paused: dict[str, bool] = {}
        if callable(getattr(app, "pause_queue", None)):  # flow control: list_queues has it
            paused = {q["queue"]: bool(q.get("paused")) for q in await app.list_queues()}
        names = sorted(set(depths) | set(hour) | set(paused))
        queues = []
        for name in names:
            d = depths.get(name, {})
            queues.append(
                {
                    "queue": name,
                    "queued": d.get("queued", 0),
                    "processing": d.get("processing", 0),
                    "dead_letter": d.get("dead_letter", 0),
                    "oldest": d.get("oldest_queued_age"),
                    "hour": hour.get(name, {}),
                    "paused": paused.get(name),
                }
            )
        minutes = await app.job_counts_per_minute(60)
        running = await app.list_running_jobs()
        workers = await app.list_workers()
        for w in workers:
            w["jobs"] = [j for j in running if j["worker_id"] == w["id"]]
        return dash.render(
            request,
            "overview.html",
            queues=queues,
            finished=chart(minutes, "finished"),
            failed=chart(minutes, "failed"),
            workers=workers,
            running=running,
            leader=await app.scheduler_leader(),
            page="overview",
        )

    async def jobs(request: Request) -> Response:
        q = request.query_params
        filters = {k: q.get(k) or None for k in ("status", "queue", "task", "tag")}
        error = None
        try:
            rows, after = await app.list_jobs_page(
                before=q.get("before") or None,
                status=filters["status"],
                queue=filters["queue"],
                job_name=filters["task"],
                tags=_tag_filter(filters["tag"]),
                limit=PAGE,
            )
        except SoniqError as exc:
            rows, after, error = [], None, exc.message
        return dash.render(
            request,
            "jobs.html",
            jobs=rows,
            after=after,
            filters=filters,
            statuses=[s.value for s in JobStatus],
            error=error,
            page="jobs",
            status=400 if error else 200,
        )

    async def job(request: Request) -> Response:
        job_id = request.path_params["job_id"]
        row = await app.get_job(job_id)
        if row is None:
            return dash.render(request, "missing.html", status=404, what=f"job {job_id}")
        result = await app.get_result(job_id) if row["status"] == JobStatus.DONE else None
        timeline = [
            (label, row.get(key))
            for label, key in (
                ("created", "created_at"),
                ("scheduled", "scheduled_at"),
                ("started", "started_at"),
                ("finished", "finished_at"),
                ("dead-lettered", "dead_lettered_at"),
            )
            if row.get(key) is not None
        ]
        for err in row.get("errors") or []:
            if isinstance(err, dict) and err.get("at"):
                timeline.append((f"attempt {err.get('attempt', '?')} failed", moment(err["at"])))
        timeline.sort(key=lambda t: t[1].timestamp() if isinstance(t[1], datetime) else 0.0)
        return dash.render(
            request, "job.html", job=row, result=result, timeline=timeline, page="jobs"
        )

    async def dead_letters(request: Request) -> Response:
        q = request.query_params
        task = q.get("task") or None
        try:
            rows, after = await app.list_dead_letters_page(
                before=q.get("before") or None, job_name=task, limit=PAGE
            )
            error = None
        except SoniqError as exc:
            rows, after, error = [], None, exc.message
        return dash.render(
            request,
            "dead_letters.html",
            jobs=rows,
            after=after,
            task=task,
            error=error,
            page="dead",
            status=400 if error else 200,
        )

    async def schedules(request: Request) -> Response:
        return dash.render(
            request, "schedules.html", schedules=await app.list_schedules(), page="schedules"
        )

    async def workflows(request: Request) -> Response:
        lister = getattr(app, "list_workflows", None)
        items = await lister() if callable(lister) else None
        return dash.render(request, "workflows.html", workflows=items, page="workflows")

    async def workflow(request: Request) -> Response:
        wf_id = request.path_params["workflow_id"]
        wf = await app.get_workflow(wf_id)
        if wf is None:
            return dash.render(request, "missing.html", status=404, what=f"workflow {wf_id}")
        return dash.render(
            request, "workflow.html", wf=wf, stages=_stages(wf["steps"]), page="workflows"
        )

    async def webhooks(request: Request) -> Response:
        items = await app.webhooks.list()
        recent = await app.webhooks.deliveries(limit=PAGE) if items else []
        return dash.render(
            request, "webhooks.html", webhooks=items, deliveries=recent, page="webhooks"
        )

    async def login(request: Request) -> Response:
        base = request.scope.get("root_path", "").rstrip("/")
        if request.method == "GET":
            if dash.guard.allowed(request):
                return RedirectResponse(base + "/", 303)
            return dash.render(request, "login.html", error=None, status=200)
        form = await request.form()
        token = str(form.get("token") or "")
        if dash.guard.token is None or not dash.guard.check_token(token):
            return dash.render(request, "login.html", error="wrong token", status=401)
        response = RedirectResponse(base + "/", 303)
        response.set_cookie(
            COOKIE,
            dash.guard.session_value,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
            path=base + "/",
        )
        return response

    async def logout(request: Request) -> Response:
        base = request.scope.get("root_path", "").rstrip("/")
        response = RedirectResponse(base + "/login", 303)
        response.delete_cookie(COOKIE, path=base + "/")
        return response

    async def events(request: Request) -> Response:
        ids = [i for i in request.query_params.get("ids", "").split(",") if i]
        client = await dash.hub.connect(ids)
        return StreamingResponse(
            dash.hub.stream(client),
            media_type="text/event-stream",
            headers={"X-Accel-Buffering": "no"},
        )

    return [
        Route("/", overview),
        Route("/jobs", jobs),
        Route("/jobs/{job_id}", job),
        Route("/dead-letters", dead_letters),
        Route("/schedules", schedules),
        Route("/workflows", workflows),
        Route("/workflows/{workflow_id}", workflow),
        Route("/webhooks", webhooks),
        Route("/login", login, methods=["GET", "POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/events", events),
    ]


def _tag_filter(value: str | None) -> dict[str, str] | None:
    """The jobs page's ``tag=KEY=VALUE`` as a tags filter (or a clear error)."""
    if not value:
        return None
    key, sep, tag = value.partition("=")
    if not sep or not key:
        raise SoniqError(ENQUEUE_INVALID, f"tag filter {value!r}: write it KEY=VALUE")
    return {key: tag}


def _stages(steps: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """A workflow's steps in stages: a step is one stage after its latest parent (the DAG
    drawn as columns; steps may only depend on earlier steps, so one pass in order does)."""
    by_id = {s["id"]: s for s in steps}
    level: dict[str, int] = {}
    for s in steps:
        parents = [p for p in s.get("after") or [] if p in by_id]
        level[s["id"]] = 1 + max((level.get(p, 0) for p in parents), default=-1)
    stages: list[list[dict[str, Any]]] = [[] for _ in range(max(level.values(), default=-1) + 1)]
    for s in steps:
        parents = [by_id[p].get("step") or p for p in s.get("after") or [] if p in by_id]
        outside = [p for p in s.get("after") or [] if p not in by_id]
        stages[level[s["id"]]].append({**s, "parent_steps": parents, "outside": outside})
    return stages
