"""``app.webhooks``: subscriptions (add, list, remove, rotate_secret) and their deliveries."""

from __future__ import annotations

import builtins
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from soniq.db import parse_uuid
from soniq.errors import NOT_FOUND, WEBHOOK_INVALID, SoniqError
from soniq.ids import new_id
from soniq.webhooks import store
from soniq.webhooks.delivery import RETRIES, Deliverer
from soniq.webhooks.signing import generate_secret

if TYPE_CHECKING:
    from soniq.app import Soniq

JOB_EVENTS = ("job.succeeded", "job.failed", "job.dead_lettered", "job.cancelled")
WORKFLOW_EVENTS = ("workflow.succeeded", "workflow.failed")
EVENTS = JOB_EVENTS + WORKFLOW_EVENTS


def _names(value: str | Sequence[str] | None, what: str) -> list[str] | None:
    if value is None:
        return None
    items = [value] if isinstance(value, str) else list(value)
    if not items or not all(isinstance(v, str) and v for v in items):
        raise SoniqError(WEBHOOK_INVALID, f"{what} must be None (all) or a non-empty list of names")
    return list(dict.fromkeys(items))


def check_url(url: object) -> str:
    parts = urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise SoniqError(
            WEBHOOK_INVALID,
            f"webhook URL {url!r} is invalid: give an absolute http:// or https:// URL",
        )
    return str(url)


def check_events(events: str | Sequence[str] | None) -> list[str]:
    names = _names(events, "events")
    if names is None:
        return list(EVENTS)
    unknown = [e for e in names if e not in EVENTS]
    if unknown:
        raise SoniqError(
            WEBHOOK_INVALID,
            f"unknown webhook event(s) {', '.join(map(repr, unknown))}; "
            f"use any of: {', '.join(EVENTS)}",
        )
    return names


def check_grace(grace: object) -> float:
    if isinstance(grace, bool) or not isinstance(grace, (int, float)) or not grace >= 0:
        raise SoniqError(
            WEBHOOK_INVALID,
            f"grace={grace!r} is invalid: give the seconds (>= 0) during which the old "
            "secret still signs",
        )
    return float(grace)


def _id(webhook_id: object) -> uuid.UUID | None:
    return parse_uuid(webhook_id)


class Webhooks:
    """Lifecycle events over signed HTTP POSTs (docs/webhooks.md). Reached as ``app.webhooks``."""

    def __init__(self, app: Soniq) -> None:
        self.app = app
        self.deliverer = Deliverer(app)
        # every app can deliver: a worker taking queue soniq.webhooks runs this task
        app.registry.add_task(self.deliverer.task())

    async def add(
        self,
        url: str,
        *,
        events: Sequence[str] | None = None,
        tasks: Sequence[str] | None = None,
        queues: Sequence[str] | None = None,
    ) -> dict[str, Any]:
        """Subscribe ``url``; returns ``id``, ``url``, ``events``, ``tasks``, ``queues`` and
        ``secret`` (``whsec_…``, shown this once)."""
        url = check_url(url)
        names = check_events(events)
        task_names, queue_names = _names(tasks, "tasks"), _names(queues, "queues")
        hook_id, secret = new_id(), generate_secret()
        db = await self.app.database()
        async with db.acquire() as conn:
            row = (uuid.UUID(hook_id), url, names, task_names, queue_names, secret, RETRIES + 1)
            await store.add(conn, self.app.schema, row)
        return {"id": hook_id, "url": url, "events": names, "tasks": task_names,
                "queues": queue_names, "secret": secret}  # fmt: skip

    async def list(self) -> list[dict[str, Any]]:
        """Every subscription, oldest first; secrets are never returned."""
        db = await self.app.database()
        async with db.acquire() as conn:
            rows = await store.list_all(conn, self.app.schema)
        return [{**dict(r), "id": str(r["id"]), "rotating": bool(r["rotating"])} for r in rows]

    async def remove(self, webhook_id: str) -> bool:
        """Delete a subscription (pending deliveries to it are dropped); False if unknown."""
        uid = _id(webhook_id)
        if uid is None:
            return False
        db = await self.app.database()
        async with db.acquire() as conn:
            return await store.remove(conn, self.app.schema, uid)

    async def rotate_secret(self, webhook_id: str, *, grace: float = 86400) -> str:
        """A new secret (returned this once); for ``grace`` seconds deliveries are signed with
        both the old and the new one."""
        seconds = check_grace(grace)
        uid = _id(webhook_id)
        secret = generate_secret()
        db = await self.app.database()
        async with db.acquire() as conn:
            found = uid is not None and await store.rotate(
                conn, self.app.schema, uid, secret, seconds
            )
        if not found:
            raise SoniqError(
                NOT_FOUND, f"no webhook {webhook_id!r}; see `soniq webhooks list` for the ids"
            )
        return secret

    async def deliveries(
        self, *, webhook_id: str | None = None, limit: int = 100
    ) -> builtins.list[dict[str, Any]]:  # (``list`` is the method above, in this class)
        """Delivery attempts, newest first: ``webhook_id``, ``message_id`` (the
        ``webhook-id`` header), ``job_id``, ``event``, ``attempt``, ``status_code``,
        ``error``, ``duration`` (seconds), ``time``."""
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise SoniqError(WEBHOOK_INVALID, f"limit={limit!r} must be an integer >= 1")
        uid = None
        if webhook_id is not None:
            uid = _id(webhook_id)
            if uid is None:
                return []
        db = await self.app.database()
        async with db.acquire() as conn:
            rows = await store.deliveries(conn, self.app.schema, uid, limit)
        out = []
        for r in rows:
            d = dict(r)
            d["time"] = d.pop("at")
            for key in ("webhook_id", "message_id", "job_id"):
                d[key] = None if d[key] is None else str(d[key])
            out.append(d)
        return out

    async def close(self) -> None:
        await self.deliverer.close()
