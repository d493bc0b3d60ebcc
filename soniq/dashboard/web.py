"""``create_app``: the dashboard's Starlette app, its auth gate and security headers."""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from soniq.errors import EXTRA_MISSING, SoniqError

try:
    from jinja2 import Environment, FileSystemLoader, select_autoescape
    from starlette.applications import Starlette
    from starlette.datastructures import MutableHeaders
    from starlette.middleware import Middleware
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, PlainTextResponse, Response
    from starlette.routing import Mount
    from starlette.staticfiles import StaticFiles
    from starlette.types import ASGIApp, Message, Receive, Scope, Send
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise SoniqError(
        EXTRA_MISSING,
        f"the dashboard needs the 'dashboard' extra ({exc.name} is missing): "
        "pip install 'soniq[dashboard]'",
    ) from None

from soniq.dashboard import actions, pages
from soniq.dashboard.auth import Guard
from soniq.dashboard.live import LiveHub

if TYPE_CHECKING:
    from soniq.app import Soniq

HERE = Path(__file__).resolve().parent
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
OPEN_PATHS = ("/login", "/static/")


class Dashboard:
    """What every handler needs: the soniq app, its permissions, templates and live hub."""

    def __init__(self, app: Soniq, writable: bool, token: str | None) -> None:
        self.app = app
        self.writable = writable
        self.guard = Guard(token)
        self.hub = LiveHub(app)
        self.templates = Environment(
            loader=FileSystemLoader(str(HERE / "templates")),
            autoescape=select_autoescape(default=True, default_for_string=True),
        )
        self.templates.filters["when"] = pages.when
        self.templates.filters["pretty"] = pages.pretty
        self.templates.filters["compact"] = pages.compact

    def can(self, action: str) -> bool:
        """Whether the write ``action`` is offered: writable, and the app has the method."""
        if not self.writable:
            return False
        if action == "abort":
            try:
                return "abort" in inspect.signature(self.app.cancel_job).parameters
            except (TypeError, ValueError):  # pragma: no cover
                return False
        if action in ("pause", "resume"):
            return callable(getattr(self.app, f"{action}_queue", None))
        return True

    def render(self, request: Request, name: str, status: int = 200, **context: Any) -> Response:
        base = request.scope.get("root_path", "").rstrip("/")
        html = self.templates.get_template(name).render(
            base=base,
            writable=self.writable,
            can=self.can,
            csrf=self.guard.csrf_token,
            auth=self.guard.token is not None,
            path=request.url.path,
            **context,
        )
        return HTMLResponse(html, status_code=status)


class Gate:
    """ASGI middleware: credentials on every request but the login form and static files;
    security headers on every answer (streams included)."""

    def __init__(self, asgi: ASGIApp, dashboard: Dashboard) -> None:
        self.asgi = asgi
        self.dashboard = dashboard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.asgi(scope, receive, send)
            return
        request = Request(scope)
        path = scope["path"][len(scope.get("root_path", "")) :] or "/"
        static = path.startswith("/static/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["Content-Security-Policy"] = CSP
                headers["X-Frame-Options"] = "DENY"
                headers["X-Content-Type-Options"] = "nosniff"
                headers["Referrer-Policy"] = "no-referrer"
                if not static:
                    headers["Cache-Control"] = "no-store"
            await send(message)

        if not path.startswith(OPEN_PATHS) and not self.dashboard.guard.allowed(request):
            response: Response
            if request.method == "GET" and "text/event-stream" not in request.headers.get(
                "accept", ""
            ):
                response = self.dashboard.render(request, "login.html", status=401, error=None)
            else:
                response = PlainTextResponse("401: log in or send a bearer token", 401)
            response.headers["WWW-Authenticate"] = 'Bearer realm="soniq"'
            await response(scope, receive, send_with_headers)
            return
        await self.asgi(scope, receive, send_with_headers)


def _lifespan(dash: Dashboard) -> Any:
    @contextlib.asynccontextmanager
    async def lifespan(_web: Starlette) -> AsyncIterator[None]:
        yield
        await dash.hub.close()

    return lifespan


def create_app(app: Soniq, *, writable: bool = False, token: str | None = None) -> Starlette:
    """The dashboard of ``app`` as an ASGI app. ``token`` (else ``dashboard_token``, i.e.
    ``SONIQ_DASHBOARD_TOKEN``) is required from every request when set; writes (cancel,
    abort, retry, replay, delete, pause, resume) are served only when ``writable``."""
    dash = Dashboard(app, writable, token if token is not None else app.settings.dashboard_token)
    routes = [
        *pages.routes(dash),
        *actions.routes(dash),
        Mount("/static", app=StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    web = Starlette(
        routes=routes,
        middleware=[Middleware(Gate, dashboard=dash)],
        lifespan=_lifespan(dash),
    )
    web.state.dashboard = dash
    return web


__all__ = ["create_app"]
