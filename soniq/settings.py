"""Every setting and its default, in one place.

Values come from keyword arguments to :class:`soniq.Soniq`, then ``SONIQ_<NAME>``
environment variables, then the defaults below. Values that cannot work raise
``SoniqError(SONIQ_SETTINGS_INVALID)``.
"""

from __future__ import annotations

import difflib
import logging
import os
import re
from typing import Annotated, Any, Literal

from pydantic import ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from soniq.errors import SETTINGS_INVALID, SoniqError

NAME_RE = re.compile(r"^[A-Za-z_][\w.:-]{0,199}$")
QUEUE_RE = re.compile(r"^[A-Za-z0-9_][\w.:-]{0,99}$")
SCHEMA_RE = re.compile(r"^[a-z_][a-z0-9_]{0,47}$")


def _split_csv(value: Any) -> Any:
    if isinstance(value, str):
        parts = [p.strip() for p in value.split(",")]
        return [p for p in parts if p] or None
    return value


class Settings(BaseSettings):
    """soniq settings; see API.md for the meaning of each."""

    model_config = SettingsConfigDict(
        env_prefix="SONIQ_", extra="forbid", validate_default=True, case_sensitive=False
    )

    database_url: str | None = None
    schema_name: str = "public"
    data_dir: str = ".soniq"
    jobs_modules: Annotated[list[str] | None, NoDecode] = None
    concurrency: int = 4
    queues: Annotated[list[str] | None, NoDecode] = None
    max_retries: int = 3
    priority: int = 100
    enqueue_validation: Literal["strict", "warn", "none"] = "strict"
    poll_interval: float = 5.0
    heartbeat_interval: float = 5.0
    heartbeat_timeout: float = 30.0
    cleanup_interval: float = 10.0
    job_timeout: float | None = None
    shutdown_timeout: float = 30.0
    result_ttl: float = 86400.0
    snooze_max_seconds: float = 86400.0
    idempotency_ttl: float = 86400.0
    sync_handler_pool_size: int = 8
    pool_min_size: int = 2
    pool_max_size: int = 20
    log_level: str = "INFO"
    log_format: Literal["text", "json"] = "text"
    pgbouncer: bool = False
    direct_database_url: str | None = None
    # the bearer token `soniq dashboard` / create_app require (unset: no auth, loopback only)
    dashboard_token: str | None = None
    # The worker's own bookkeeping (claims, outcomes) commits without waiting for the WAL
    # flush unless this is on. Enqueues always wait. See docs/concepts.md, "Durability".
    worker_synchronous_commit: bool = False

    @field_validator("jobs_modules", "queues", mode="before")
    @classmethod
    def _csv(cls, value: Any) -> Any:
        return _split_csv(value)

    @field_validator("queues")
    @classmethod
    def _queue_names(cls, value: list[str] | None) -> list[str] | None:
        for q in value or []:
            if not QUEUE_RE.match(q):
                raise ValueError(f"queue name {q!r} must match {QUEUE_RE.pattern}")
        return value

    @field_validator("database_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        scheme = value.split("://", 1)[0].lower() if "://" in value else ""
        if scheme not in ("postgresql", "postgres"):
            shown = f"a {scheme}:// URL" if scheme else "not a URL"
            raise ValueError(
                f"database_url is {shown}; soniq needs PostgreSQL: "
                "postgresql://user:password@host:5432/dbname"
            )
        return value

    @field_validator("schema_name")
    @classmethod
    def _schema(cls, value: str) -> str:
        if not SCHEMA_RE.match(value):
            raise ValueError(
                f"schema {value!r} must be lower-case letters, digits and _ "
                f"(pattern {SCHEMA_RE.pattern})"
            )
        return value

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError("log_level must be DEBUG, INFO, WARNING, ERROR or CRITICAL")
        return level

    @model_validator(mode="after")
    def _coherent(self) -> Settings:
        positive = [
            "concurrency",
            "poll_interval",
            "heartbeat_interval",
            "heartbeat_timeout",
            "cleanup_interval",
            "shutdown_timeout",
            "result_ttl",
            "snooze_max_seconds",
            "idempotency_ttl",
            "sync_handler_pool_size",
            "pool_max_size",
        ]
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be greater than 0")
        if self.job_timeout is not None and self.job_timeout <= 0:
            raise ValueError("job_timeout must be greater than 0 (or unset for no timeout)")
        if self.max_retries < 0:
            raise ValueError("max_retries must be 0 or more")
        if self.heartbeat_timeout <= self.heartbeat_interval:
            raise ValueError(
                "heartbeat_timeout must be greater than heartbeat_interval "
                f"(got {self.heartbeat_timeout} <= {self.heartbeat_interval})"
            )
        if self.pool_min_size < 0:
            raise ValueError("pool_min_size must be 0 or more")
        if self.pool_min_size > self.pool_max_size:
            raise ValueError("pool_min_size must not exceed pool_max_size")
        if self.pool_max_size < 2:
            raise ValueError("pool_max_size must be at least 2")
        if self.pgbouncer and not self.database_url:
            raise ValueError(
                "pgbouncer=True needs database_url (the PgBouncer URL); the embedded "
                "server is never behind PgBouncer"
            )
        return self


_ALIASES = {"schema": "schema_name"}
_ENV_PREFIX = "SONIQ_"
_ENV_IGNORED_PREFIX = "SONIQ_TEST_"  # the test suite's own variables, not settings
# SONIQ_* variables soniq reads that are not Settings fields (add yours here, or the
# start-up warning below calls them unknown)
OTHER_ENV_NAMES = ("SONIQ_DASHBOARD_TOKEN",)
_warned_env: set[str] = set()
log = logging.getLogger("soniq")


def env_names() -> list[str]:
    """Every ``SONIQ_*`` variable soniq reads."""
    names = {_ENV_PREFIX + field.upper() for field in Settings.model_fields}
    names |= {_ENV_PREFIX + alias.upper() for alias in _ALIASES}
    return sorted(names | set(OTHER_ENV_NAMES))


def warn_unknown_env(environ: Any = None) -> list[str]:
    """Log one warning (once per process) for each ``SONIQ_*`` variable that is no setting,
    naming the closest valid one; returns the unknown names found."""
    known = env_names()
    unknown = []
    for name in os.environ if environ is None else environ:
        upper = name.upper()
        if not upper.startswith(_ENV_PREFIX) or upper.startswith(_ENV_IGNORED_PREFIX):
            continue
        if upper in known:
            continue
        unknown.append(name)
        if name in _warned_env:
            continue
        _warned_env.add(name)
        close = difflib.get_close_matches(upper, known, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]}?" if close else f"valid names: {', '.join(known)}"
        log.warning("ignoring unknown environment variable %s: %s", name, hint)
    return unknown


def load_settings(**overrides: Any) -> Settings:
    """Build settings from keyword overrides and the environment, or raise SoniqError."""
    warn_unknown_env()
    kwargs = {_ALIASES.get(k, k): v for k, v in overrides.items() if v is not None}
    if "schema_name" not in kwargs and os.environ.get("SONIQ_SCHEMA"):
        kwargs["schema_name"] = os.environ["SONIQ_SCHEMA"]
    try:
        return Settings(**kwargs)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}"
            for err in exc.errors()
        )
        raise SoniqError(
            SETTINGS_INVALID,
            f"invalid soniq settings: {problems}. Fix the keyword argument or the "
            "matching SONIQ_<NAME> environment variable.",
        ) from None
