"""The SQL of webhooks (the named queries of ``sql/webhooks.sql``), as ``soniq.db`` runs the
rest: one function per query, every value a bound parameter."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from soniq.queries import advisory_key, query

Conn = Any
TRIGGER_LOCK = "webhooks"


async def add(
    conn: Conn,
    schema: str,
    row: tuple[uuid.UUID, str, list[str], list[str] | None, list[str] | None, str, int],
) -> None:
    """Insert a subscription and make sure the trigger exists, in one transaction, under the
    lock that ``remove`` takes too (so the trigger exists exactly while a subscription does)."""
    async with conn.transaction():
        await conn.execute(query("webhook_lock", schema), advisory_key(schema, TRIGGER_LOCK))
        await conn.execute(query("webhook_insert", schema), *row)
        if not await conn.fetchval(query("webhook_trigger_exists", schema)):
            await conn.execute(query("webhook_trigger_create", schema))


async def remove(conn: Conn, schema: str, webhook_id: uuid.UUID) -> bool:
    """Delete a subscription (and its delivery history); drop the trigger with the last one."""
    async with conn.transaction():
        await conn.execute(query("webhook_lock", schema), advisory_key(schema, TRIGGER_LOCK))
        gone = await conn.fetchval(query("webhook_delete", schema), webhook_id)
        if gone is not None and not await conn.fetchval(query("webhook_count", schema)):
            await conn.execute(query("webhook_trigger_drop", schema))
        return gone is not None


async def list_all(conn: Conn, schema: str) -> list[Any]:
    return list(await conn.fetch(query("webhook_list", schema)))


async def rotate(conn: Conn, schema: str, webhook_id: uuid.UUID, secret: str, grace: float) -> bool:
    return (
        await conn.fetchval(query("webhook_rotate", schema), webhook_id, secret, grace) is not None
    )


async def for_delivery(conn: Conn, schema: str, webhook_id: uuid.UUID) -> Any:
    """``url``, ``secret`` and ``prev_secret`` (None outside a grace window), or None."""
    return await conn.fetchrow(query("webhook_get_for_delivery", schema), webhook_id)


async def record_attempt(conn: Conn, schema: str, values: Sequence[Any]) -> None:
    """One delivery attempt: webhook id, message id, job id, event, attempt, status code,
    error, duration (seconds). Nothing is written for a subscription removed meanwhile."""
    await conn.execute(query("webhook_delivery_insert", schema), *values)


async def deliveries(
    conn: Conn, schema: str, webhook_id: uuid.UUID | None, limit: int
) -> list[Any]:
    return list(await conn.fetch(query("webhook_delivery_list", schema), webhook_id, limit))
