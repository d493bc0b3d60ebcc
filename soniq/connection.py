"""How an app reaches PostgreSQL: its URL, direct sessions, its pool, and the database itself.

Kept apart from ``Soniq`` so the app object is its public surface and connection failures
are turned into one error (``DATABASE_UNAVAILABLE``, naming the fix) in one place.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import asyncpg

from soniq import embedded, migrate
from soniq.db import Conn, Database, init_connection, skip_reset
from soniq.errors import DATABASE_UNAVAILABLE, DB_ERRORS, SETTINGS_INVALID, SoniqError
from soniq.settings import Settings


def redact_url(url: str) -> str:
    """``url`` with its password replaced by ``***``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if not parts.password:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


def unavailable(url: str, exc: BaseException) -> SoniqError:
    """The error for a server that cannot be reached at ``url`` (password redacted)."""
    return SoniqError(
        DATABASE_UNAVAILABLE,
        f"cannot reach PostgreSQL at {redact_url(url)}: {exc}. Fix: start the server or "
        "point SONIQ_DATABASE_URL (or --database-url) at a reachable database; "
        "`soniq setup` creates the database if it is missing.",
    )


SESSION_TIMEOUT_MIN = 5.0


def application_name(schema: str, role: str | None = None) -> str:
    """``soniq:<schema>`` for the pool, ``soniq:<schema>:<role>`` for a process's own
    sessions (claim, heartbeat, listen, scheduler), as pg_stat_activity shows them."""
    return (f"soniq:{schema}:{role}" if role else f"soniq:{schema}")[:63]


class Connector:
    """One app's URL (the configured one or the embedded server's), its direct sessions and
    its pool, opened on first use."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.embedded = False
        self.db: Database | None = None
        self._url: str | None = None
        self._init_lock: asyncio.Lock | None = None

    @property
    def schema(self) -> str:
        return self.settings.schema_name

    async def database_url(self) -> str:
        """The URL in use: the configured one, or the embedded server's (started if needed)."""
        if self._url is None:
            if self.settings.database_url:
                self._url = self.settings.database_url
            else:
                self._url = await embedded.database_url(self.settings.data_dir)
                self.embedded = True
        return self._url

    def server_settings(self) -> dict[str, str]:
        """Session settings: an application_name operators can find in pg_stat_activity."""
        return {"application_name": application_name(self.schema)}

    async def session_url(self) -> str:
        """The URL for session features (LISTEN, session advisory locks, the worker's claim):
        ``direct_database_url`` when set, else the main URL. Behind a transaction-pooling
        PgBouncer a session's state would land on whichever server connection runs the next
        transaction, so ``pgbouncer=True`` requires the direct URL."""
        if self.settings.direct_database_url:
            return self.settings.direct_database_url
        if self.settings.pgbouncer:
            raise SoniqError(
                SETTINGS_INVALID,
                "pgbouncer=True: LISTEN, advisory locks and the worker's claim need a session "
                "on PostgreSQL itself, which a transaction-pooling PgBouncer cannot give. Fix: "
                "set SONIQ_DIRECT_DATABASE_URL (or direct_database_url=) to a URL that reaches "
                "PostgreSQL directly.",
            )
        return await self.database_url()

    def session_timeout(self) -> float:
        """How long a session connection may take to connect, or to answer one of soniq's own
        statements, before it is treated as lost. A network that silently drops packets never
        fails a TCP connection by itself (retransmissions back off for many minutes); this
        bound lets the worker notice, reconnect and go on. Never below the heartbeat timeout,
        past which the worker's jobs are rescued anyway."""
        return max(SESSION_TIMEOUT_MIN, self.settings.heartbeat_timeout)

    async def connect(self, bounded: bool = True, /, **server_settings: str) -> Any:
        """A direct (unpooled) session connection: LISTEN, advisory locks, the claim loop.
        ``bounded``: every statement without its own timeout gets :meth:`session_timeout`
        (off for long maintenance such as VACUUM)."""
        url = await self.session_url()
        limit = self.session_timeout()
        try:
            return await asyncpg.connect(
                url,
                timeout=limit,
                command_timeout=limit if bounded else None,
                server_settings={**self.server_settings(), **server_settings},
            )
        except DB_ERRORS as exc:
            raise unavailable(url, exc) from exc

    async def database(self) -> Database:
        """The pool's ``Database``, created on first use (and, on the embedded default,
        with migrations applied)."""
        if self.db is not None:
            return self.db
        if self._init_lock is None:
            self._init_lock = asyncio.Lock()
        async with self._init_lock:
            if self.db is None:
                url = await self.database_url()
                try:
                    pool = await asyncpg.create_pool(
                        url,
                        min_size=self.settings.pool_min_size,
                        max_size=self.settings.pool_max_size,
                        init=init_connection,
                        reset=skip_reset,
                        server_settings=self.server_settings(),
                        # behind PgBouncer (transaction pooling) a named prepared statement
                        # would be looked up on another server connection: unnamed only
                        **({"statement_cache_size": 0} if self.settings.pgbouncer else {}),
                    )
                except DB_ERRORS as exc:
                    raise unavailable(url, exc) from exc
                self.db = Database(pool, self.schema)
                if self.embedded:
                    async with pool.acquire() as conn:
                        await migrate.apply(conn, self.schema)
        return self.db

    async def close(self) -> None:
        """Close the pool; the next ``database()`` opens a new one."""
        db, self.db = self.db, None
        if db is not None:
            await db.pool.close()

    async def create_database(self) -> bool:
        """Create the database the URL names if it does not exist (through the server's
        ``postgres`` database); True when created. The embedded default makes its own."""
        if not self.settings.database_url:
            await self.database_url()
            return False
        url = self.settings.database_url
        conn = await _connect_if_exists(url)
        if conn is not None:
            await conn.close()
            return False
        parts = urlsplit(url)
        name = unquote(parts.path.lstrip("/")) or unquote(parts.username or "")
        for admin_db in ("postgres", "template1"):
            conn = await _connect_if_exists(urlunsplit(parts._replace(path=f"/{admin_db}")))
            if conn is None:
                continue
            try:
                return await Database.database_create(conn, name)
            except asyncpg.PostgresError as exc:
                raise SoniqError(
                    DATABASE_UNAVAILABLE,
                    f"database {name!r} does not exist and could not be created: {exc}. "
                    "Fix: create it as a role allowed to (CREATEDB), or point "
                    "SONIQ_DATABASE_URL at an existing database.",
                ) from exc
            finally:
                await conn.close()
        raise SoniqError(
            DATABASE_UNAVAILABLE,
            f"database {name!r} does not exist and the server has no 'postgres' database to "
            "create it from. Fix: create it yourself, then run `soniq setup` again.",
        )


async def _connect_if_exists(url: str) -> Any:
    """A connection to ``url``, or None when its database does not exist."""
    try:
        return await asyncpg.connect(url)
    except asyncpg.InvalidCatalogNameError:
        return None
    except DB_ERRORS as exc:
        raise unavailable(url, exc) from exc


class Backend:
    """``app.backend``: the instance's connection pool."""

    def __init__(self, connector: Connector) -> None:
        self._connector = connector

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[Conn]:
        db = await self._connector.database()
        async with db.pool.acquire() as conn:
            try:
                yield conn
            finally:
                # user code may leave session state (SET, LISTEN, advisory locks); the pool's
                # own release skips this reset to save a round trip on soniq's queries.
                # A connection the server closed is already back in the pool (and dropped);
                # a failing reset must not hide the error the caller's code raised.
                try:
                    if not conn.is_closed():
                        await conn.reset()
                except DB_ERRORS:
                    with contextlib.suppress(asyncpg.InterfaceError):
                        conn.terminate()
