"""Database outages in the logs: one warning per component when its connection is lost, one
info line when it is back, and each failure's detail (traceback) at DEBUG only.

Every long-running loop (claim, heartbeat, LISTEN, scheduler, maintenance) retries on its
own; without this each retry would log a warning, most with a full traceback.
"""

from __future__ import annotations

import logging
import time

import asyncpg

from soniq.errors import DATABASE_UNAVAILABLE, DB_ERRORS, SoniqError

ASYNCPG_POOL_NOISE = "Failed to restore the pool connection floor"


# SQLSTATE classes of a server that is gone, going or full: connection exception (08),
# insufficient resources (53), operator intervention (57: shutdown, crash, terminated
# backend), system error (58). Any other server error is a failed statement, not an outage.
OUTAGE_CLASSES = ("08", "53", "57", "58")


def is_outage(exc: BaseException) -> bool:
    """True for a lost or refused database (not for a bug in soniq or user code, nor for a
    statement the server refused: those are logged as failures with their traceback)."""
    if isinstance(exc, SoniqError):
        return exc.error_code == DATABASE_UNAVAILABLE
    if isinstance(exc, asyncpg.PostgresError):
        return str(getattr(exc, "sqlstate", "") or "")[:2] in OUTAGE_CLASSES
    return isinstance(exc, DB_ERRORS)


def _cause(exc: BaseException) -> str:
    """The failure in one short line: for soniq's connection error, what asyncpg said."""
    inner = exc
    while inner.__cause__ is not None:  # soniq's wrappers keep what asyncpg said as cause
        inner = inner.__cause__
    text = str(inner).strip().splitlines()[0] if str(inner).strip() else ""
    return f"{type(inner).__name__}: {text}" if text else type(inner).__name__


class Outage:
    """The connection state of one component, as its log lines tell it."""

    def __init__(self, component: str, log: logging.Logger) -> None:
        self.component = component
        self.log = log
        self.since: float | None = None

    @property
    def down(self) -> bool:
        return self.since is not None

    def failed(self, exc: BaseException, retry_every: float) -> None:
        """Record a failure: a warning if it starts an outage, else a DEBUG line."""
        if self.since is None:
            self.since = time.monotonic()
            self.log.warning(
                "%s: database connection lost (%s); retrying every %s s",
                self.component,
                _cause(exc),
                f"{retry_every:g}",
            )
        self.log.debug("%s: still failing", self.component, exc_info=exc)

    def ok(self) -> None:
        """Record a success: an info line if it ends an outage."""
        if self.since is not None:
            down = time.monotonic() - self.since
            self.since = None
            self.log.info("%s: database reconnected after %.1f s", self.component, down)


class _PoolFloorToDebug(logging.Filter):
    """asyncpg's pool logs a WARNING with a traceback each time it cannot reopen its minimum
    connections during an outage; soniq's own components already say the database is
    down, so those records are kept at DEBUG."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.DEBUG and str(record.msg).startswith(ASYNCPG_POOL_NOISE):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        return True


def quiet_asyncpg_pool() -> None:
    """Install the filter on asyncpg's pool logger (once)."""
    logger = logging.getLogger("asyncpg.pool")
    if not any(isinstance(f, _PoolFloorToDebug) for f in logger.filters):
        logger.addFilter(_PoolFloorToDebug())
