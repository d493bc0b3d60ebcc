"""Schema versions: numbered ``sql/migrations/NNN_name.sql`` files applied once, under an
advisory lock."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from typing import Any

from soniq import db

_FILE_RE = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


@dataclass(frozen=True)
class MigrationState:
    version: int
    name: str
    applied_at: datetime | None  # None: pending


def available() -> list[Migration]:
    """Every migration shipped with this soniq, in order."""
    found = []
    for entry in resources.files("soniq").joinpath("sql/migrations").iterdir():
        m = _FILE_RE.match(entry.name)
        if m:
            found.append(Migration(int(m.group(1)), m.group(2), entry.read_text(encoding="utf-8")))
    return sorted(found, key=lambda mig: mig.version)


async def apply(conn: Any, schema: str) -> int:
    """Apply pending migrations in one transaction; returns how many were applied.

    Safe when several processes race: they serialise on a transaction-level advisory lock,
    and the ones that come second find nothing pending.
    """
    async with conn.transaction():
        await db.migration_lock(conn, schema)
        await db.migration_table_ensure(conn, schema)
        done = await db.migration_list(conn, schema)
        applied = 0
        for mig in available():
            if mig.version in done:
                continue
            await db.migration_apply(conn, schema, mig.version, mig.name, mig.sql)
            applied += 1
        return applied


async def status(conn: Any, schema: str) -> list[MigrationState]:
    """Applied and pending migrations, oldest first."""
    applied: dict[int, datetime] = {}
    if await db.migration_table_exists(conn, schema):
        applied = await db.migration_list(conn, schema)
    return [MigrationState(m.version, m.name, applied.get(m.version)) for m in available()]
