"""The ``soniq.webhooks.deliver`` task: one signed POST per attempt, each attempt recorded.

Delivery jobs are written by the database trigger (sql/migrations/006_webhooks.sql) in the
transaction of the state change; any worker taking the queue ``soniq.webhooks`` runs them.
A non-2xx answer or a transport error fails the attempt, and the job's retry policy (about
24 hours of exponential backoff with jitter, then the dead letter queue) takes over.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
import uuid
from typing import TYPE_CHECKING, Any

from soniq.errors import EXTRA_MISSING, SoniqError
from soniq.jobs import JobContext, Task
from soniq.webhooks import store
from soniq.webhooks.signing import sign

if TYPE_CHECKING:
    from soniq.app import Soniq

log = logging.getLogger("soniq.webhooks")

TASK_NAME = "soniq.webhooks.deliver"
QUEUE = "soniq.webhooks"
TIMEOUT_SECONDS = 10.0
MAX_DELAY = 3600.0
RETRY_WINDOW = 86400.0
# The first retry's base delay; with equal jitter it waits 2.5-5 s. Tests shorten it with the
# environment variable SONIQ_WEBHOOK_RETRY_DELAY (seconds), read when the app is created.
BASE_DELAY = 5.0


def retries_for(base: float = BASE_DELAY) -> int:
    """How many retries make the expected backoff (doubling from ``base``, capped at an hour,
    equal jitter keeping 75% on average) span 24 hours."""
    total, n = 0.0, 0
    while total < RETRY_WINDOW:
        n += 1
        total += 0.75 * min(base * 2 ** (n - 1), MAX_DELAY)
    return n


RETRIES = retries_for()  # 41: 2.5-5 s, 5-10 s, ... then 30-60 min until a day has passed


class DeliveryFailed(Exception):
    """An attempt the receiver did not accept (non-2xx) or could not be reached."""


class Deliverer:
    """Per app: the delivery handler and its one shared HTTP client."""

    def __init__(self, app: Soniq) -> None:
        self.app = app
        self._client: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def task(self) -> Task[Any, Any]:
        base = float(os.environ.get("SONIQ_WEBHOOK_RETRY_DELAY", BASE_DELAY))
        return Task.create(
            self.handler(),
            name=TASK_NAME,
            queue=QUEUE,
            priority=None,
            retries=RETRIES,
            retry_delay=base,
            retry_backoff=True,
            retry_max_delay=MAX_DELAY,
            retry_jitter=True,
            timeout=None,
            unique=False,
            validate=None,
        )

    def handler(self) -> Any:
        deliverer = self

        async def deliver(
            ctx: JobContext, webhook: str, event: str, at: str, job: dict[str, Any]
        ) -> dict[str, Any]:
            """POST one event to one subscription (Standard Webhooks headers)."""
            return await deliverer.deliver(ctx, webhook, event, at, job)

        return deliver

    def client(self) -> Any:
        """The httpx client of the running event loop (one per worker process)."""
        try:
            import httpx
        except ImportError:
            raise SoniqError(
                EXTRA_MISSING,
                "delivering webhooks needs httpx: pip install 'soniq[webhooks]'",
            ) from None
        loop = asyncio.get_running_loop()
        httpx_log = logging.getLogger("httpx")
        if httpx_log.level == logging.NOTSET:  # one INFO line per request: soniq logs failures
            httpx_log.setLevel(logging.WARNING)
        if self._client is None or self._loop is not loop:
            self._client = httpx.AsyncClient(
                timeout=TIMEOUT_SECONDS, follow_redirects=False, trust_env=False
            )
            self._loop = loop
        return self._client

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None and self._loop is asyncio.get_running_loop():
            await client.aclose()

    async def deliver(
        self, ctx: JobContext, webhook: str, event: str, at: str, job: dict[str, Any]
    ) -> dict[str, Any]:
        client = self.client()
        app, schema = self.app, self.app.schema
        hook_id = uuid.UUID(webhook)
        db = await app.database()
        async with db.acquire() as conn:
            sub = await store.for_delivery(conn, schema, hook_id)
        if sub is None:
            log.info("webhook %s was removed; event %s of job %s dropped", webhook, event,
                     job.get("id"))  # fmt: skip
            return {"skipped": "subscription removed"}
        body = json.dumps(
            {"type": event, "timestamp": at, "data": job}, separators=(",", ":")
        ).encode()
        secrets = [sub["secret"]] + ([sub["prev_secret"]] if sub["prev_secret"] else [])
        timestamp = int(time.time())
        headers = {
            "content-type": "application/json",
            "user-agent": "soniq-webhooks",
            "webhook-id": ctx.job_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(secrets, ctx.job_id, timestamp, body),
        }
        started = time.monotonic()
        status: int | None = None
        error: str | None = None
        try:
            response = await client.post(sub["url"], content=body, headers=headers)
            status = response.status_code
            if not 200 <= status < 300:
                error = f"receiver answered HTTP {status}"
        except Exception as exc:  # httpx.HTTPError and friends: the attempt failed
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        duration = time.monotonic() - started
        job_id = job.get("id")
        async with db.acquire() as conn:
            await store.record_attempt(
                conn,
                schema,
                (hook_id, uuid.UUID(ctx.job_id), uuid.UUID(job_id) if job_id else None, event,
                 ctx.attempt, status, error, duration),
            )  # fmt: skip
        if error is not None:
            raise DeliveryFailed(f"webhook {event} to {sub['url']}: {error}")
        return {"status_code": status}
