"""The app(s) a command works on: a plain instance from flags, or the jobs modules' apps."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from uuid import UUID

from soniq.app import Soniq
from soniq.cli.base import Config, current_config, fail
from soniq.errors import JOBS_MODULE_IMPORT, JOBS_MODULES_MISSING, SoniqError
from soniq.settings import load_settings

T = TypeVar("T")


def _quiet_logging(cfg: Config) -> None:
    from soniq.logs import configure_logging

    fmt = os.environ.get("SONIQ_LOG_FORMAT", "text").lower()
    configure_logging(
        "DEBUG" if cfg.debug else "WARNING", fmt if fmt in ("text", "json") else "text"
    )


def _overrides(cfg: Config) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if cfg.database_url:
        out["database_url"] = cfg.database_url
    if cfg.schema:
        out["schema"] = cfg.schema
    return out


def _plain_app(cfg: Config, **settings: Any) -> Soniq:
    """An instance configured from flags and SONIQ_* (operator commands need no handlers)."""
    return Soniq(**{**settings, **_overrides(cfg)})


def _module_names(cfg: Config) -> list[str]:
    raw = cfg.jobs_modules or os.environ.get("SONIQ_JOBS_MODULES") or ""
    return [m.strip() for m in raw.split(",") if m.strip()]


def load_apps(cfg: Config) -> list[Soniq]:
    """Import the jobs modules and return the distinct Soniq instances they define, with the
    command-line ``--database-url`` / ``--schema`` applied."""
    names = _module_names(cfg)
    if not names:
        raise SoniqError(
            JOBS_MODULES_MISSING,
            "no jobs modules given: set SONIQ_JOBS_MODULES=myproject.jobs (comma-separated) "
            "or pass --jobs-modules, naming the module(s) that define your Soniq app and "
            "its @app.job handlers",
        )
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    apps: list[Soniq] = []
    for name in names:
        try:
            module = importlib.import_module(name)
        except Exception as exc:
            if cfg.debug:
                raise
            if isinstance(exc, SoniqError):
                raise SoniqError(
                    exc.error_code, f"while importing jobs module {name!r}: {exc.message}"
                ) from None
            raise SoniqError(
                JOBS_MODULE_IMPORT,
                f"cannot import jobs module {name!r}: {type(exc).__name__}: {exc}. Fix the "
                "module or SONIQ_JOBS_MODULES (run from the directory that contains it, or "
                "set PYTHONPATH); --debug shows the traceback.",
            ) from None
        for value in vars(module).values():
            if isinstance(value, Soniq) and all(value is not a for a in apps):
                apps.append(value)
    if not apps:
        raise SoniqError(
            JOBS_MODULES_MISSING,
            f"the jobs modules {', '.join(names)} define no Soniq instance at module level. "
            "Fix: define `app = Soniq(...)` in (or import it into) one of them.",
        )
    overrides = _overrides(cfg)
    if overrides:
        for app in apps:
            # before first use, so the new URL / schema is what the instance connects to
            app.settings = load_settings(**{**app.settings.model_dump(), **overrides})
    return apps


def run(coro_fn: Callable[[], Awaitable[T]]) -> T:
    """Run one coroutine function to completion in a fresh event loop."""
    return asyncio.run(_call(coro_fn))


async def _call(coro_fn: Callable[[], Awaitable[T]]) -> T:
    return await coro_fn()


@contextlib.asynccontextmanager
async def _opened(app: Soniq) -> Any:
    try:
        yield app
    finally:
        await app.close()


def with_app(fn: Callable[[Soniq], Awaitable[T]], **settings: Any) -> T:
    cfg = current_config()
    _quiet_logging(cfg)
    app = _plain_app(cfg, **settings)

    async def go() -> T:
        async with _opened(app):
            return await fn(app)

    return run(go)


async def require_job(app: Soniq, job_id: str) -> dict[str, Any]:
    job = await app.get_job(job_id)
    if job is None:
        try:
            UUID(job_id)
        except ValueError:
            fail(f"{job_id!r} is not a job id (job ids look like 0192f1e4-7c3a-7d4e-9b1a-...)")
        fail(
            f"no job with id {job_id} in schema {app.schema!r} (finished jobs are pruned "
            "after result_ttl)"
        )
    return job
