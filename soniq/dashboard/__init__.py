"""The web dashboard (extra ``dashboard``): ``create_app(app)`` returns an ASGI app to run
with ``soniq dashboard`` or to mount in a Starlette/FastAPI service. See docs/dashboard.md."""

from soniq.dashboard.web import create_app

__all__ = ["create_app"]
