"""Enqueue from Django on Django's own database connection (extra ``django``).

``enqueue`` writes the job with one SQL statement on ``django.db.connections[using]`` (the
psycopg 3 backend), so the job commits or rolls back with the surrounding
``transaction.atomic()``; no ``INSTALLED_APPS`` entry and no ``on_commit`` are needed.
Workers (``soniq worker``) run it as usual once it is committed. The job is built by the same
rules and inserted by the same named query as ``await app.enqueue`` (``soniq.foreign``).

The Soniq app is the one the handler was decorated on; for a task name or ``task_ref``
pass ``app=`` or set ``SONIQ_APP = "myproject.jobs:app"`` in Django's settings.
"""

from __future__ import annotations

import importlib
from typing import Any

from soniq.app import Soniq
from soniq.errors import ENQUEUE_INVALID, SoniqError
from soniq.foreign import enqueue_dbapi

__all__ = ["enqueue"]


def enqueue(
    target: Any,
    *,
    args: dict[str, Any] | None = None,
    app: Soniq | None = None,
    using: str = "default",
    **options: Any,
) -> str:
    """Enqueue ``target`` in the current Django transaction of database ``using``; returns
    the job id. ``options`` are ``app.enqueue``'s (``queue``, ``priority``,
    ``scheduled_at``, ``dedup_key``) and, for a decorated handler, its arguments."""
    from django.db import connections

    soniq_app = app or getattr(target, "__soniq_app__", None) or _settings_app()
    conn = connections[using]
    vendor = conn.vendor
    if vendor != "postgresql":
        raise SoniqError(
            ENQUEUE_INVALID,
            f"Django database {using!r} is {vendor}; soniq needs PostgreSQL "
            "(django.db.backends.postgresql with psycopg 3)",
        )
    conn.ensure_connection()
    return enqueue_dbapi(soniq_app, conn, target, args, options)


def _settings_app() -> Soniq:
    from django.conf import settings

    path = getattr(settings, "SONIQ_APP", None)
    if not path:
        raise SoniqError(
            ENQUEUE_INVALID,
            "soniq.contrib.django.enqueue does not know the Soniq app for this target: pass "
            "a function decorated with @app.job, or app=..., or set SONIQ_APP = "
            "'myproject.jobs:app' in Django's settings",
        )
    module, _, attr = str(path).partition(":")
    found = getattr(importlib.import_module(module), attr or "app")
    if not isinstance(found, Soniq):
        raise SoniqError(ENQUEUE_INVALID, f"SONIQ_APP={path!r} is not a Soniq instance")
    return found
