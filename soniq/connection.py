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
from soniq.errors import DATABASE_UNAVAILABLE, DB_ERRORS, SoniqError
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
    """The error for a failed connection to ``url`` (password redacted), naming the fix
    for what actually failed: authentication, a missing database, or reaching the server."""
    where = redact_url(url)
    if isinstance(
        exc, (asyncpg.InvalidPasswordError, asyncpg.InvalidAuthorizationSpecificationError)
    ):
        message = (
            f"PostgreSQL at {where} refused the login: {exc}. Fix: check the user name and "
            "password in SONIQ_DATABASE_URL (or --database-url), and that pg_hba.conf lets "
            "this user connect to this database."
        )
    elif isinstance(exc, asyncpg.InvalidCatalogNameError):
        message = (
            f"the database at {where} does not exist: {exc}. Fix: run `soniq setup` "
            "(it creates the database, then the schema), or point SONIQ_DATABASE_URL at an "
            "existing database."
        )
    else:
        message = (
            f"cannot reach PostgreSQL at {where}: {exc}. Fix: start the server, or point "
            "SONIQ_DATABASE_URL (or --database-url) at a reachable one (host, port)."
        )
    return SoniqError(DATABASE_UNAVAILABLE, message)


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
        return {"application_name": f"soniq:{self.schema}"[:63]}

    async def connect(self, **server_settings: str) -> Any:
        """A direct (unpooled) connection, for sessions: LISTEN and advisory locks."""
        url = await self.database_url()
        try:
            return await asyncpg.connect(
                url, server_settings={**self.server_settings(), **server_settings}
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
