"""Schema versions: numbered ``sql/NNN_name.sql`` files applied once, under an advisory lock."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from typing import Any

from soniq.db import advisory_key, quote_ident

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
    for entry in resources.files("soniq").joinpath("sql").iterdir():
        m = _FILE_RE.match(entry.name)
        if m:
            found.append(Migration(int(m.group(1)), m.group(2), entry.read_text(encoding="utf-8")))
    return sorted(found, key=lambda mig: mig.version)


def _versions_table(schema: str) -> str:
    return f"{quote_ident(schema)}.soniq_migrations"


async def _ensure_versions_table(conn: Any, schema: str) -> None:
    await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(schema)}")
    await conn.execute(
        f"CREATE TABLE IF NOT EXISTS {_versions_table(schema)} ("
        " version integer PRIMARY KEY, name text NOT NULL,"
        " applied_at timestamptz NOT NULL DEFAULT now())"
    )


async def apply(conn: Any, schema: str) -> int:
    """Apply pending migrations in one transaction; returns how many were applied.

    Safe when several processes race: they serialise on a transaction-level advisory lock,
    and the ones that come second find nothing pending.
    """
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", advisory_key(schema, "migrate"))
        await _ensure_versions_table(conn, schema)
        rows = await conn.fetch(f"SELECT version FROM {_versions_table(schema)}")
        done = {r["version"] for r in rows}
        applied = 0
        for mig in available():
            if mig.version in done:
                continue
            await conn.execute(mig.sql.replace("{schema}", quote_ident(schema)))
            await conn.execute(
                f"INSERT INTO {_versions_table(schema)} (version, name) VALUES ($1, $2)",
                mig.version,
                mig.name,
            )
            applied += 1
        return applied


async def status(conn: Any, schema: str) -> list[MigrationState]:
    """Applied and pending migrations, oldest first."""
    exists = await conn.fetchval("SELECT to_regclass($1)", _versions_table(schema))
    applied: dict[int, datetime] = {}
    if exists:
        rows = await conn.fetch(f"SELECT version, applied_at FROM {_versions_table(schema)}")
        applied = {r["version"]: r["applied_at"] for r in rows}
    return [MigrationState(m.version, m.name, applied.get(m.version)) for m in available()]
