"""How an app reaches PostgreSQL: its URL, direct sessions, its pool, and the database itself.

Kept apart from ``Soniq`` so the app object is its public surface and connection failures
are turned into one error (``DATABASE_UNAVAILABLE``, naming the fix) in one place.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from threading import get_ident
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import asyncpg

from soniq import embedded, migrate
from soniq.db import Conn, Database, init_connection, skip_reset
from soniq.errors import (
    DATABASE_UNAVAILABLE,
    DB_ERRORS,
    EVENT_LOOP_MISMATCH,
    SETTINGS_INVALID,
    SoniqError,
)
from soniq.outage import quiet_asyncpg_pool
from soniq.settings import Settings

log = logging.getLogger("soniq")


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
    elif isinstance(exc, asyncpg.TooManyConnectionsError):
        message = (
            f"PostgreSQL at {where} has no free connection slot: {exc}. Fix: lower "
            "SONIQ_POOL_MAX_SIZE / SONIQ_POOL_MIN_SIZE or the number of processes (a worker "
            "holds 3 connections of its own plus its pool; see docs/scaling.md), or raise the "
            "server's max_connections (or put PgBouncer in front of enqueuing apps)."
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


def _never() -> bool:
    return False


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
        # the event loop the pool belongs to, and the thread that runs it
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_running: Callable[[], bool] = _never
        self._thread = 0
        self.on_new_loop: list[Callable[[], None]] = []  # told when the pool is left behind

    def current(self) -> Database | None:
        """The open pool's ``Database`` if it belongs to the running event loop, else None.

        Cheap enough for the enqueue hot path: a coroutine runs on the one loop running in
        its thread, so the pool is ours exactly when its loop runs, in this thread.
        """
        db = self.db
        if db is not None and self._thread == get_ident() and self._loop_running():
            return db
        return None

    def leave_other_loop(self) -> None:
        """If the pool belongs to another event loop than the running one: refuse when that
        loop still runs (in another thread), else drop what belonged to it without awaiting
        anything (``asyncio.run`` per call, as a Flask view or a script does)."""
        loop, db = self._loop, self.db
        if loop is None or (loop is asyncio.get_running_loop() and loop.is_running()):
            return
        if loop.is_running():
            raise SoniqError(
                EVENT_LOOP_MISMATCH,
                "this Soniq instance is in use by an event loop running in another thread; "
                "an instance's pool belongs to one loop. Fix: give each thread its own Soniq "
                "instance, or run the call on the loop that owns it "
                "(asyncio.run_coroutine_threadsafe); open it per loop with `async with app:`.",
            )
        self.db, self._loop, self._init_lock, self._loop_running = None, None, None, _never
        if db is not None:
            log.debug("the event loop of soniq's pool is gone; opening a new pool")
            _abandon(db.pool, loop)
        for forget in self.on_new_loop:
            forget()

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
        with migrations applied); a pool left by another (finished) event loop is replaced."""
        db = self.current()
        if db is not None:
            return db
        self.leave_other_loop()
        if self._init_lock is None:
            self._init_lock = asyncio.Lock()
            self._loop, self._thread = asyncio.get_running_loop(), get_ident()
            self._loop_running = self._loop.is_running
        async with self._init_lock:
            if self.db is None:
                url = await self.database_url()
                quiet_asyncpg_pool()
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
        self.leave_other_loop()  # a pool of a finished loop: nothing to await here
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


def _abandon(pool: asyncpg.Pool, loop: asyncio.AbstractEventLoop | None) -> None:
    """End the connections of a pool whose event loop is over, without running that loop:
    each socket is shut down (the server ends its session at once); on a loop that is not
    closed the connection is also terminated (its clean-up runs if that loop runs again),
    and the rest is left to the garbage collector."""
    for holder in getattr(pool, "_holders", ()):
        conn = getattr(holder, "_con", None)
        transport = getattr(conn, "_transport", None)
        if conn is None or transport is None:
            continue
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(Exception):
                conn.terminate()  # its callbacks run if that loop ever runs again


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
